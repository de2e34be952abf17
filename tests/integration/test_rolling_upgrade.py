"""A rolling upgrade: a group on old code is moved onto this code one replica at a time,
under live traffic (docs/store-promises.md, "Formats and upgrades").

The old code is :data:`OLD_REVISION`, checked out into a temporary git worktree as
bench.ab does.  Its replicas wait longer before standing for election, so when
the old leader is restarted the upgraded follower wins, and for a while a leader
on this code has a follower on the old one: the leader must write the old Raft
format then, and the old follower must keep applying.  Throughout, recorded
clients run (tests/faults.py); at the end the history must check linearizable,
every acknowledged write must be there, and the term must have moved only when
the old leader was restarted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ab import ABError, git, origins, side_env, worktree_of
from raftkv import formats
from raftkv.client import INLINE_LIMIT
from raftkv.errors import OverLimit, RaftKVError
from raftkv.interface import Cell, StaleCell, Unchanged
from raftkv.prevote import HELLO_GRACE

from .._procs import Proc, wait_for
from ..cluster import KVCluster, running
from ..faults import Workload
from ..terms import TermWatch, caught_up, settled, statuses

pytestmark = pytest.mark.cluster

# The last commit of the oldest Raft format this code speaks (formats.RAFT.oldest):
# the code before entries carried their time.  Move it whenever the oldest format moves.
OLD_REVISION = "89319e8"
# The old replicas' election timeouts: long enough that when the old leader is
# restarted, it (its log holds every entry) or the upgraded follower is elected on
# this code's timeouts (0.4-1.4 s) before the replica still on old code stands.
OLD_ELECTION_TIMEOUT = (8.0, 9.0)
LEDGER_WRITES = 1500  # the acknowledged-writes check: at most this many, one after another
LEDGER_ROW = "ledger"


@pytest.fixture(scope="module")
def old_tree() -> Iterator[Path]:
    try:
        git("rev-parse", "--verify", "--quiet", f"{OLD_REVISION}^{{commit}}")
    except (ABError, OSError) as exc:
        pytest.skip(f"git cannot resolve {OLD_REVISION} here (a shallow clone?): {exc}")
    with worktree_of(OLD_REVISION) as tree:
        found = origins(tree, ("raftkv", "shards"))
        assert all(Path(p).resolve().is_relative_to(tree.resolve()) for p in found.values()), found
        yield tree


def _on_old_code(cluster: KVCluster, tree: Path,
                 election_timeout: tuple[float, float] = OLD_ELECTION_TIMEOUT) -> dict[str, Proc]:
    """Point every replica at ``tree``'s code and a cluster file with the given election
    timeouts (by default the old ones); the procs that run this code instead, by name."""
    old_file = cluster.path.with_name("cluster-old.toml")
    low, high = election_timeout
    old_file.write_text(cluster.path.read_text()
                        + f"\n[raft]\nelection_timeout_min = {low}\nelection_timeout_max = {high}\n")
    new: dict[str, Proc] = {}
    for name, proc in list(cluster.procs.items()):
        new[name] = proc
        argv = [str(old_file) if arg == str(cluster.path) else arg for arg in proc.argv]
        cluster.procs[name] = Proc(name, argv, cluster.root, env=side_env(tree), cwd=tree)
    return new


class Ledger:
    """One writer of distinct cells, one after another; what was acknowledged is kept."""

    def __init__(self, cluster: KVCluster, seconds: float) -> None:
        self._cluster = cluster
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.acknowledged: list[str] = []

    def __enter__(self) -> Ledger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._seconds + 30)
        assert not self._thread.is_alive(), "the ledger writer did not stop"

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        with self._cluster.client(timeout=4.0) as client:
            for i in range(LEDGER_WRITES):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    client.put(LEDGER_ROW, f"w{i:04d}", str(i).encode())
                except RaftKVError:
                    continue  # outcome unknown: it may or may not be there
                self.acknowledged.append(f"w{i:04d}")
                self._stop.wait(0.05)


def _restart_on_new_code(cluster: KVCluster, new: dict[str, Proc], name: str) -> None:
    data_format = cluster.root / name / "raft" / formats.DATA_FORMAT_FILE
    assert not data_format.exists(), "the old code wrote a data format file"
    cluster.procs[name].stop()
    cluster.procs[name] = new[name]
    cluster.start(name)
    # The directory the old code wrote is taken as format 1 and recorded on first start.
    assert data_format.read_text() == f"{formats.DATA.newest}\n"


def _leader_status(cluster: KVCluster, leader: str) -> dict:
    return statuses(cluster)[leader]


def test_a_group_upgraded_one_replica_at_a_time_under_traffic(tmp_path: Path, old_tree: Path) -> None:
    cluster = KVCluster(tmp_path / "kv")
    new = _on_old_code(cluster, old_tree)
    workload = Workload(lambda: cluster.client(timeout=4.0), clients=4, readers=1, keys=8,
                        ops=1500, seconds=90.0, seed=15, pause=0.05)
    with running(cluster):
        leader, term = settled(cluster)
        first, last = sorted(n for n in cluster.procs if n != leader)
        workload.start()
        try:
            with Ledger(cluster, seconds=90.0) as ledger:
                # 1. A follower onto this code: the old leader keeps its term.
                with TermWatch(cluster) as watch:
                    _restart_on_new_code(cluster, new, first)
                    caught_up(cluster, first, leader)
                    # Long enough for the upgraded replica to count the silent old one as
                    # a PreVote yes (raftkv/prevote.py), so that it can stand next.
                    time.sleep(HELLO_GRACE + 1.0)
                watch.assert_steady(term, leader)

                # 2. The leader onto this code: it (back with every entry) or the upgraded
                # follower is elected (the only term change), and writes the old format
                # while `last` runs old code.
                _restart_on_new_code(cluster, new, leader)
                successor, new_term = settled(cluster)
                assert successor != last, "the replica still on old code was elected"
                assert new_term > term
                with TermWatch(cluster) as watch:
                    wait_for(lambda: _leader_status(cluster, successor)["entry_format"] == 1,
                             10, "the new leader to write Raft format 1")
                    time.sleep(2.0)
                    caught_up(cluster, last, successor)  # the old replica applies what it wrote
                    with cluster.client() as client:
                        with pytest.raises(OverLimit, match="writes Raft format 1"):
                            client.put("ttl", "c", b"x", ttl=60.0)
                    for upgraded in {first, leader} - {successor}:
                        caught_up(cluster, upgraded, successor)

                    # 3. The last replica onto this code: now every voter speaks this
                    # code's formats, timed entries (2) and pulled snapshots (3) among them.
                    _restart_on_new_code(cluster, new, last)
                    caught_up(cluster, last, successor)
                    wait_for(lambda: _leader_status(cluster, successor)["entry_format"]
                             == formats.RAFT.newest, 10, "the leader to write the newest format")
                    with cluster.client() as client:
                        client.put("ttl", "c", b"x", ttl=60.0)
                    time.sleep(2.0)
                watch.assert_steady(new_term, successor, restarted=leader)
        finally:
            workload.stop()
        workload.check(tmp_path)
        assert len(ledger.acknowledged) > 20, f"only {len(ledger.acknowledged)} ledger writes"
        with cluster.client() as client:
            present = client.get_row(LEDGER_ROW)
        lost = [col for col in ledger.acknowledged if col not in present]
        assert not lost, f"acknowledged writes lost in the upgrade: {lost}"
        applied = {name: s.get("applied_index") for name, s in statuses(cluster).items()}
        print(f"upgraded {OLD_REVISION} -> this tree: {workload.completed} recorded operations, "
              f"{len(ledger.acknowledged)} ledger writes; terms {term} -> {new_term}; applied {applied}")


def test_a_new_client_reads_cells_and_pages_of_a_group_on_old_code(tmp_path: Path,
                                                                   old_tree: Path) -> None:
    """The old replicas know no get_cells and ignore get_row's reverse: the client reads
    cell by cell, and turns forward pages around, with the same answers."""
    cluster = KVCluster(tmp_path / "kv")
    _on_old_code(cluster, old_tree, election_timeout=(0.4, 1.4))
    with running(cluster), cluster.client() as client:
        versions = [client.put("{u}/r", f"m{i}", b"%d" % i) for i in range(5)]
        big = os.urandom(3 * INLINE_LIMIT)
        blob = client.put("{u}/b", "blob", big)
        wanted = [("{u}/r", "m0"), ("{u}/r", "m1"), ("{u}/b", "blob"), ("{u}/r", "none")]
        assert client.get_cells(wanted, known=[versions[0], 0, 0, 0]) == [
            Unchanged(versions[0]), Cell(b"1", versions[1]), Cell(big, blob), None]
        # A stale read may reach a replica a moment behind: it sees the writes soon.
        expected = [StaleCell(b"0", versions[0]), Unchanged(versions[1], stale=True)]
        wait_for(lambda: client.get_cells(wanted[:2], known=[0, versions[1]],
                                          consistency="stale") == expected,
                 10, "a stale read to see the writes")
        assert list(client.get_row("{u}/r", reverse=True, limit=2)) == ["m4", "m3"]
        assert list(client.get_row("{u}/r", after="m3", reverse=True)) == ["m2", "m1", "m0"]
        assert list(client.get_row("{u}/r", after="m1", limit=2)) == ["m2", "m3"]
        status = client.status()
    assert all("raft_formats" not in s for s in status), "not the old code"


def test_a_new_group_with_a_replica_never_started_writes_the_new_format_at_once(tmp_path: Path) -> None:
    """A group this code creates holds no entry of the old format, so it writes the
    newest from its first entry, though one voter has never said hello: a ttl is
    accepted at once.  The replica started later applies what was written."""
    cluster = KVCluster(tmp_path / "kv")
    *started, absent = sorted(cluster.procs)
    try:
        for name in started:
            cluster.start(name)
        leader = cluster.leader(timeout=10.0)
        with cluster.client(timeout=5.0) as client:
            client.put("ttl", "c", b"x", ttl=60.0)   # OverLimit under "a silent voter: format 1"
        # Timed entries (format 2), though the silent voter keeps it from writing 3,
        # which changed Raft's messages, not its entries.
        assert statuses(cluster)[leader]["entry_format"] == formats.TIMED_ENTRIES
        cluster.start(absent)
        caught_up(cluster, absent, leader)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_a_replica_refuses_a_data_directory_of_a_newer_format(tmp_path: Path) -> None:
    """The process exits at once with status 1, names what it found and knows, and
    leaves the directory alone."""
    cluster = KVCluster(tmp_path / "kv")
    name = next(iter(cluster.procs))
    raft_dir = cluster.root / name / "raft"
    raft_dir.mkdir(parents=True)
    newer = f"{formats.DATA.newest + 1}\n"
    (raft_dir / formats.DATA_FORMAT_FILE).write_text(newer)
    proc = cluster.procs[name].start()
    assert proc.popen is not None
    try:
        assert proc.popen.wait(20) == 1
    finally:
        proc.kill()  # a replica that started anyway
    assert (f"holds data format {formats.DATA.newest + 1}; this code knows formats "
            f"{formats.DATA.oldest} to {formats.DATA.newest}") in proc.log()
    assert sorted(p.name for p in raft_dir.iterdir()) == [formats.DATA_FORMAT_FILE]
    assert (raft_dir / formats.DATA_FORMAT_FILE).read_text() == newer

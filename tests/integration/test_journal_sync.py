"""A write commits only once a majority's journals hold it on disk, while the journals
are synced off the tick thread (docs/engine-fixes.md, "The journal"): real replica
processes, whose journal's fsyncs a test holds (tests/_held_journal.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._procs import python_cmd, wait_for
from ..cluster import KVCluster, running

pytestmark = pytest.mark.cluster

HELD = 1.0  # seconds a write is watched while journals are held: under the leader's
            # 2 s fallback, which a leader without answers would reach


class HeldCluster:
    """A group of three whose replicas' journal fsyncs can be held one by one."""

    def __init__(self, cluster: KVCluster, root: Path) -> None:
        self.cluster = cluster
        self.holds = {name: root / f"hold-{name}" for name in cluster.procs}
        for name, proc in cluster.procs.items():
            module_and_args = proc.argv[proc.argv.index("-m") + 1:]
            proc.argv = python_cmd("tests._held_journal", str(self.holds[name]), *module_and_args)

    def hold(self, *names: str) -> None:
        for name in names:
            self.holds[name].touch()

    def release(self) -> None:
        for path in self.holds.values():
            path.unlink(missing_ok=True)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldCluster]:
    cluster = KVCluster(tmp_path / "kv")
    group = HeldCluster(cluster, tmp_path)
    try:
        with running(cluster):
            yield group
    finally:
        group.release()


def _put_while_held(group: HeldCluster, held: list[str], key: str) -> tuple[bool, bool]:
    """Put ``key`` while the journals of ``held`` are held: (whether it was acknowledged
    while they were, whether it was once they were released)."""
    done = threading.Event()
    failed: list[BaseException] = []
    with group.cluster.client(timeout=20) as client:
        client.put("warm-up", "c", b"0")  # the leader has committed an entry of its term

        def put() -> None:
            try:
                client.put(key, "c", b"1")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failed.append(exc)
            done.set()

        group.hold(*held)
        writer = threading.Thread(target=put, daemon=True)
        writer.start()
        acknowledged_while_held = done.wait(HELD)
        group.release()
        writer.join(20)
        assert not failed, failed
        return acknowledged_while_held, done.is_set()


def test_a_follower_acknowledges_only_what_its_journal_synced(held) -> None:
    leader = held.cluster.leader()
    followers = [name for name in held.cluster.procs if name != leader]
    # Only the leader's disk takes the entry: one of three.
    while_held, after = _put_while_held(held, followers, "{a}/k")
    assert not while_held, "the followers acknowledged an entry their disks did not hold"
    assert after
    assert held.cluster.leader() == leader


def test_the_leader_counts_itself_only_for_what_its_journal_synced(held) -> None:
    leader = held.cluster.leader()
    slow_follower = next(name for name in held.cluster.procs if name != leader)
    # One follower's disk takes the entry, the leader's and the other's do not.
    while_held, after = _put_while_held(held, [leader, slow_follower], "{b}/k")
    assert not while_held, "the leader counted itself for an entry its disk did not hold"
    assert after
    # And with only the slow follower held, the leader and the other make a majority.
    while_held, _ = _put_while_held(held, [slow_follower], "{c}/k")
    assert while_held
    wait_for(lambda: held.cluster.leader() == leader, 5, "the leader to stay")

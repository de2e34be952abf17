"""Steady leadership: a replica that rejoins its group leaves the term and the leader alone.

docs/engine-fixes.md, "A rejoining replica deposes the leader": without PreVote
a replica that was cut off, or restarted behind, bumps its term and deposes a
healthy leader when it comes back.  Each test polls every replica's term and
role throughout (:class:`TermWatch`) and checks what it saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .._procs import wait_for
from ..cluster import KVCluster, running

pytestmark = pytest.mark.cluster


class TermWatch:
    """Every replica's term and role, polled every ``interval`` until stopped (at most ``limit`` s)."""

    def __init__(self, cluster: KVCluster, interval: float = 0.1, limit: float = 120.0) -> None:
        self._cluster = cluster
        self._interval = interval
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.terms: dict[str, set[int]] = {}
        self.leaders: set[tuple[str, int]] = set()
        self.polls = 0

    def __enter__(self) -> TermWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the watch did not stop"

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        with self._cluster.client(timeout=2.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for status in client.status():
                    if status.get("alive") and "term" in status:
                        self.terms.setdefault(status["name"], set()).add(status["term"])
                        if status.get("role") == "leader":
                            self.leaders.add((status["name"], status["term"]))
                self.polls += 1
                self._stop.wait(self._interval)

    def assert_steady(self, term: int, leader: str, restarted: str | None = None) -> None:
        """Every replica was always in ``term`` under ``leader``; ``restarted`` may first
        show the older term it had on disk."""
        assert self.polls > 10, f"only {self.polls} polls"
        changed = {name: sorted(seen) for name, seen in self.terms.items()
                   if seen != {term} and not (name == restarted and max(seen) == term)}
        assert not changed, f"terms moved from {term}: {changed}"
        assert self.leaders == {(leader, term)}, f"leaders seen: {sorted(self.leaders)}"


def _statuses(cluster: KVCluster) -> dict[str, dict]:
    with cluster.client() as client:
        return {s["name"]: s for s in client.status()}


def _settled(cluster: KVCluster) -> tuple[str, int]:
    """The leader and term, once every replica follows it (a replica that has not heard
    from the leader yet still shows the term before the election)."""
    def agreed() -> tuple[str, int] | None:
        statuses = _statuses(cluster).values()
        leaders = [s["name"] for s in statuses if s.get("role") == "leader"]
        terms = {s.get("term") for s in statuses}
        if len(leaders) != 1 or len(terms) != 1:
            return None
        return leaders[0], terms.pop()
    return wait_for(agreed, 20, "every replica to follow one leader", interval=0.1)


def _caught_up(cluster: KVCluster, follower: str, leader: str) -> None:
    """Wait until ``follower`` follows ``leader`` and has applied what the leader had."""
    target = _statuses(cluster)[leader]["applied_index"]

    def done() -> bool:
        mine = _statuses(cluster)[follower]
        return mine.get("role") == "follower" and mine.get("applied_index", 0) >= target
    wait_for(done, 30, f"{follower} to catch up", interval=0.2)


def test_a_follower_cut_off_for_10_s_rejoins_without_a_term_change(lab_cluster) -> None:
    cluster = lab_cluster
    lab = cluster.lab
    assert lab is not None
    leader, term = _settled(cluster)
    follower = next(n for n in cluster.procs if n != leader)
    with cluster.client() as client:
        client.put("steady", "c", b"before")
    with TermWatch(cluster) as watch:
        # No writes while it is away: its log stays as good as the others', so only
        # "they still hear their leader" keeps it from standing.
        lab.isolate(cluster.host_of[follower])
        time.sleep(10.0)
        lab.heal()
        with cluster.client() as client:
            client.put("steady", "c", b"after")
        _caught_up(cluster, follower, leader)
        time.sleep(2.0)
    watch.assert_steady(term, leader)
    with cluster.client() as client:
        assert client.get("steady", "c", consistency="stale").value == b"after"


@pytest.fixture
def compacting_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A snapshot every 20 entries: a follower that misses a few MB needs one."""
    with running(KVCluster(tmp_path / "kv", extra="\n[raft]\nsnapshot_entries = 20\n")) as cluster:
        yield cluster


def test_a_follower_restarted_behind_a_snapshot_rejoins_without_a_term_change(
        compacting_cluster) -> None:
    cluster = compacting_cluster
    leader, term = _settled(cluster)
    follower, other = (n for n in cluster.procs if n != leader)
    value = b"v" * (8 * 1024)   # inline cells (below the blob threshold): in the log
    with TermWatch(cluster) as watch:
        cluster.kill(follower)
        with cluster.client() as client, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: client.put(f"{{s}}{i}", "c", value), range(512)))  # 4 MiB
        before = _statuses(cluster)[leader]
        assert before["log_entries"] < 100, "the leader's journal was not trimmed"
        started = time.monotonic()
        cluster.start(follower)
        _caught_up(cluster, follower, leader)
        took = time.monotonic() - started
        time.sleep(2.0)   # a few election timeouts after it rejoined
    watch.assert_steady(term, leader)
    after = _statuses(cluster)
    assert after[follower]["snapshot_bytes"] > 0, "the follower caught up without a snapshot"
    # The measure of the leader's stalls during the catch-up, as the other follower saw them.
    print(f"caught up in {took:.1f} s; longest leader gap seen by {other}: "
          f"{after[other]['longest_leader_gap']} s, by {follower}: "
          f"{after[follower]['longest_leader_gap']} s")


def test_a_killed_leader_is_replaced_promptly_and_rejoins_quietly(fresh_cluster) -> None:
    cluster = fresh_cluster
    old, old_term = _settled(cluster)
    cluster.kill(old)
    killed_at = time.monotonic()
    new = cluster.leader(timeout=10.0)
    elected_after = time.monotonic() - killed_at
    term = _statuses(cluster)[new]["term"]  # the survivor voted in it: it is there too
    assert new != old and term > old_term
    # Elections take the death to be noticed and one or two timeouts (0.4-1.4 s).
    assert elected_after < 5.0, f"a new leader only after {elected_after:.1f} s"
    print(f"new leader after {elected_after:.2f} s (term {old_term} -> {term})")
    with TermWatch(cluster) as watch:
        cluster.start(old)   # behind by the new term's entries: it must follow, not stand
        with cluster.client() as client:
            client.put("quiet", "c", b"x")
        _caught_up(cluster, old, new)
        time.sleep(2.0)      # a few election timeouts after it rejoined
    watch.assert_steady(term, new, restarted=old)

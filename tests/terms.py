"""Every replica's term and role over time, and waits on the group's Raft state: for tests
that check a group keeps its leader (docs/engine-fixes.md, "A rejoining replica deposes the leader")."""

from __future__ import annotations

import threading
import time

from ._procs import wait_for
from .cluster import KVCluster


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


def statuses(cluster: KVCluster) -> dict[str, dict]:
    with cluster.client() as client:
        return {s["name"]: s for s in client.status()}


def settled(cluster: KVCluster) -> tuple[str, int]:
    """The leader and term, once every replica follows it (a replica that has not heard
    from the leader yet still shows the term before the election)."""
    def agreed() -> tuple[str, int] | None:
        seen = statuses(cluster).values()
        leaders = [s["name"] for s in seen if s.get("role") == "leader"]
        terms = {s.get("term") for s in seen}
        if len(leaders) != 1 or len(terms) != 1:
            return None
        return leaders[0], terms.pop()
    return wait_for(agreed, 20, "every replica to follow one leader", interval=0.1)


def caught_up(cluster: KVCluster, follower: str, leader: str) -> None:
    """Wait until ``follower`` follows ``leader`` and has applied what the leader had."""
    target = statuses(cluster)[leader]["applied_index"]

    seen: dict[str, dict] = {}

    def done() -> bool:
        seen.update(statuses(cluster))
        mine = seen[follower]
        return mine.get("role") == "follower" and mine.get("applied_index", 0) >= target
    try:
        wait_for(done, 30, f"{follower} to catch up", interval=0.2)
    except TimeoutError as exc:
        shown = ("role", "term", "leader", "commit_index", "applied_index", "log_entries")
        raise TimeoutError(f"{exc} to {leader}'s index {target}; last seen: " + "; ".join(
            f"{name} {({k: s.get(k) for k in shown})}" for name, s in sorted(seen.items()))) from None

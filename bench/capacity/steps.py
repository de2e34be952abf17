"""The measurements taken at each stored size: a forced snapshot, a follower's restart,
and a wiped follower's catch-up.  Each waits with a deadline; past it the snapshot and
the restart raise :class:`~.group.BenchError`, and a catch-up reports how far it got."""

from __future__ import annotations

import signal
import time
from typing import Any

from raftkv.node.tickwatch import STALL_AIM, STALL_BOUNDS

from .group import POLL, BenchError, Group

# The snapshot is forced by writing entries (no-ops through the log) until the replicas
# pass [raft] snapshot_entries; this many entries short of it the bench starts looking
# at every replica after each write, to see when each passes it.
LOOK_AHEAD = 50
SNAPSHOT_POLL = 0.02


def snapshot(group: Group, timeout: float) -> dict[str, Any]:
    """Force a snapshot on every replica and time it.

    A replica compacts its log once it holds more than ``snapshot_entries`` entries
    (more, in proportion, once the store is large: status ``snapshot_due``): it
    writes the snapshot, then drops the entries it covers.  Status shows both
    (``log_entries``, ``snapshot_bytes``).  The bench writes one entry at a time
    and looks at every replica after each.  A replica's snapshot starts once the write
    that takes its log past the threshold is appended -- on the leader that is before
    the write commits, so its answer may come after the snapshot is done -- and ends
    when its log is seen shrunk.  So a time runs from the sending of the write after
    which the log was first seen past the threshold (or shrunk, for another trigger)
    to the first look that shows it shrunk: up to a write's round trip and one look
    (a few ms) long.
    """
    deadline = time.monotonic() + timeout
    seen = group.statuses()
    if set(seen) != set(group.names):
        raise BenchError(f"only {sorted(seen)} answered before the snapshot")
    # Past a quarter of the store, a replica's bound grows with its store (status
    # ``snapshot_due``): each replica has its own, and it moves as the store does.
    written = 0
    for _ in range(max(0, min(_due(s) - s["log_entries"] for s in seen.values()) - LOOK_AHEAD)):
        group.client.noop()
        written += 1
        if time.monotonic() > deadline:
            raise BenchError(f"{written} entries took past {timeout:g} s")
    previous = {n: s["log_entries"] for n, s in group.statuses().items()}
    started: dict[str, float] = {}
    done: dict[str, float] = {}
    began = time.perf_counter()
    most = max(_due(s) for s in seen.values())
    for _ in range(most + 2 * LOOK_AHEAD):  # at most the largest bound's worth of entries
        if len(started) == len(group.names) or time.monotonic() > deadline:
            break
        sent = time.perf_counter()
        group.client.noop()
        written += 1
        _look(group, previous, started, done, sent)
    while len(done) < len(started) and time.monotonic() < deadline:
        time.sleep(SNAPSHOT_POLL)
        _look(group, previous, started, done, None)
    if len(done) < len(group.names):
        raise BenchError(f"snapshots seen on {sorted(done)} only, after {written} entries")
    final = group.settle(timeout)
    leader = next(n for n, s in final.items() if s.get("role") == "leader")
    return {"entries_written": written, "seconds": time.perf_counter() - began,
            "leader": leader,
            # "seconds": what the replica's snapshot thread measured writing its last
            # snapshot; "observed_s": from the write that crossed the threshold to the
            # look that saw the log shrunk (short if a snapshot by bytes ran before).
            "per_replica": {n: {"seconds": final[n]["snapshot_seconds"],
                                "observed_s": done[n] - started[n],
                                "snapshot_bytes": final[n]["snapshot_bytes"],
                                "log_entries_after": final[n]["log_entries"]}
                            for n in group.names}}


def _due(status: dict[str, Any]) -> int:
    """The log length past which this replica takes a snapshot."""
    due: int = status["snapshot_due"]["entries"]
    return due


def _look(group: Group, previous: dict[str, int], started: dict[str, float],
          done: dict[str, float], sent: float | None) -> None:
    """One look at every replica's log length after the write sent at ``sent``."""
    seen = group.statuses()
    now = time.perf_counter()
    for name, status in seen.items():
        length = status["log_entries"]
        shrunk = name in previous and length < previous[name]
        if name not in started and sent is not None and (length > _due(status) or shrunk):
            started[name] = sent
        if shrunk and name in started and name not in done:
            done[name] = now
        previous[name] = length


def restart(group: Group, name: str, how: signal.Signals, timeout: float) -> dict[str, Any]:
    """Stop follower ``name`` with ``how``, start it again, and time until it answers
    status (its client port is open: the store is loaded) and until it has applied
    what the leader had committed when it stopped.  A follower answers no
    linearizable read itself (it points to the leader), so applying is the measure."""
    leader, seen = group.leader(timeout)
    if name == leader:
        raise BenchError(f"{name} leads; the bench restarts a follower")
    target = seen[leader]["commit_index"]
    stopped = group.stop(name, how)
    began = time.perf_counter()
    group.start(name)
    deadline = time.monotonic() + timeout
    up = None
    while up is None:
        if name in group.statuses():
            up = time.perf_counter() - began
        elif time.monotonic() > deadline:
            raise BenchError(f"{name} did not answer within {timeout:g} s of its start")
        else:
            time.sleep(POLL)
    group.wait_applied([name], target, timeout)
    return {"signal": how.name, "replica": name, "dials_leader": group.dials(name, leader),
            **stopped, "up_s": up,
            "caught_up_s": time.perf_counter() - began, "target_index": target,
            "memory": group.memory(name)}


def catch_up(group: Group, wiped: str, watcher: str, timeout: float) -> dict[str, Any]:
    """Kill follower ``wiped``, remove its data directory, start it, and time until it
    has applied what the leader had committed; the leader has compacted its log, so it
    must send its snapshot.  Meanwhile every replica's term and role are watched, and
    the other follower, ``watcher``, tells the longest time between two messages of
    its leader (status ``longest_leader_gap``, a maximum since the watcher started:
    read before and after, it shows the catch-up's gap only if that one is longer).
    The snapshot counts as installed at the first look that shows it on disk and the
    replica's state moved (applied index past 1).  A catch-up that runs past
    ``timeout`` is a result too: ``caught_up_s`` is None and ``error`` says so."""
    leader, seen = group.leader(timeout)
    if leader in (wiped, watcher):
        raise BenchError(f"{leader} leads; the catch-up needs two followers")
    term, gap_before = seen[leader]["term"], seen[watcher]["longest_leader_gap"]
    group.stop(wiped, signal.SIGKILL)
    group.wipe(wiped)
    target = group.statuses()[leader]["commit_index"]
    began = time.perf_counter()
    group.start(wiped)
    deadline = time.monotonic() + timeout
    terms, leaders = {term}, {leader}
    up = installed = caught = None
    mine: dict[str, Any] = {}
    gap_after = None
    while caught is None and time.monotonic() < deadline:
        time.sleep(POLL)
        seen = group.statuses()
        at = time.perf_counter() - began
        terms.update(s["term"] for n, s in seen.items() if n != wiped or s["term"])
        leaders.update(n for n, s in seen.items() if s.get("role") == "leader")
        gap_after = seen[watcher]["longest_leader_gap"] if watcher in seen else gap_after
        mine = seen.get(wiped, mine)
        if wiped in seen:
            up = at if up is None else up
            if installed is None and mine["snapshot_bytes"] > 0 and mine["applied_index"] > 1:
                installed = at
            if mine["applied_index"] >= target:
                caught = at
    return {"replica": wiped, "watcher": watcher, "leader": leader, "target_index": target,
            "dials_leader": group.dials(wiped, leader),
            "up_s": up, "snapshot_installed_s": installed, "caught_up_s": caught,
            "applied_index": mine.get("applied_index"), "snapshot_bytes": mine.get("snapshot_bytes"),
            "term_before": term, "terms_seen": sorted(terms), "leaders_seen": sorted(leaders),
            "term_changed": max(terms) != term, "leader_changed": len(leaders) > 1,
            "watcher_gap_before_s": gap_before, "watcher_gap_after_s": gap_after,
            "memory": group.memory(wiped),
            **({} if caught is not None else
               {"error": f"{wiped} did not catch up within {timeout:g} s"})}


def ticks_of(status: dict[str, Any]) -> dict[str, Any]:
    """One replica's stall reading: status ``tick_stalls`` with ``tick_stall_sites``."""
    return {**status["tick_stalls"], "sites": status.get("tick_stall_sites", {})}


def _grown(before: dict[str, Any] | None, after: dict[str, Any], field: str) -> float:
    return round(after.get(field, 0.0) - (before or {}).get(field, 0.0), 3)


def stalls(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The tick thread's stalls (status ``tick_stalls``) between two readings of one
    replica (``before`` None: since it started).  The histogram's buckets subtract;
    its maximum does not, so the longest is exact only if it was set in between, and
    otherwise bounded by the highest bucket that grew."""
    counts = dict(after["buckets"])
    if before is not None:
        counts = {b: n - before["buckets"].get(b, 0) for b, n in counts.items()}
    grew = [b for b, n in counts.items() if n > 0]
    if before is None or after["longest"] > before["longest"]:
        longest: float | str = after["longest"]
    else:
        longest = (0.0 if not grew else f"> {STALL_BOUNDS[-1]}" if grew[-1] == "inf"
                   else f"≤ {grew[-1]}")
    over = sum(n for b, n in counts.items() if b == "inf" or float(b) > STALL_AIM)
    # The stacks are the most seen since the replica started: what grew of those.
    sites_before, sites_after = (before or {}).get("sites", {}), after.get("sites", {})
    stacks = {k: n - sites_before.get("stacks", {}).get(k, 0)
              for k, n in sites_after.get("stacks", {}).items()}
    return {"longest_s": longest, "over_aim": over, "ticks": sum(counts.values()),
            "over_aim_s": _grown(before, after, "over_aim_seconds"),
            "over_aim_cpu_s": _grown(before, after, "over_aim_cpu_seconds"),
            "over_aim_switches": {k: n - (before or {}).get("over_aim_switches", {}).get(k, 0)
                                  for k, n in after.get("over_aim_switches", {}).items()},
            "sampled": {f: _grown(sites_before, sites_after, f)
                        for f in ("seconds", "cpu_seconds", "runqueue_seconds")},
            "sites": {k: n for k, n in stacks.items() if n > 0}}

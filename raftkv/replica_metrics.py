"""A storage replica's metrics (``raftkv-node``), served by :mod:`raftkv.metrics`.

Two kinds, so that the request path pays next to nothing:

- **read at scrape time** from the replica's status (:class:`ReplicaCollector`):
  the Raft role, term, commit and applied index, the journal and snapshot sizes,
  tick-thread stalls, the blob keeper's repair and GC counters, and the shard
  configuration the replica serves (how far a reconfiguration has come: its
  ``config_num`` and the shards still incoming or frozen);
- **tallied where they happen**: fsync latency (the journal's syncer), apply
  latency (one log entry into the store, on the tick thread), commands per Raft
  entry (the server's group commit), each operation's latency and outcome, blob
  bytes stored and served (the server's event loop).  Each is written by one
  thread only, so a :class:`Tally` is a list of counts and a sum, without a lock:
  an observation is a ``bisect`` and two additions (about 0.25 us, where
  prometheus_client's labelled histogram and counter take 4 us per request, which
  bench.ab saw as 10% fewer puts per second at 64 clients).  The collector copies
  them at scrape time.

Labels are fixed words: an operation's registered name (``raftkv/operations.py``),
an error's class name, a Raft role.  Never a row, a column or a chunk name.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .metrics import LATENCY_BUCKETS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Tally:
    """A histogram that one thread observes and a scrape reads (a copy of the counts)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive, as bisect_left
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as a Prometheus histogram has them."""
        counts, cumulative, found = list(self.counts), 0.0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            cumulative += count
            found.append((bound, cumulative))
        return found


class Requests:
    """Each client-port request's latency by operation, and its outcome; tallied on the
    server's event loop only."""

    def __init__(self) -> None:
        self.latency: dict[str, Tally] = {}
        self.outcomes: dict[tuple[str, str], int] = {}

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        tally = self.latency.get(op)
        if tally is None:
            tally = self.latency[op] = Tally(LATENCY_BUCKETS)
        tally.observe(seconds)
        key = (op, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


class Total:
    """A counter one thread adds to."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


FSYNC_SECONDS = Tally(LATENCY_BUCKETS)   # the journal's syncer thread
APPLY_SECONDS = Tally(LATENCY_BUCKETS)   # the tick thread
BATCH_COMMANDS = Tally(BATCH_BUCKETS)    # the server's event loop, like the rest
REQUESTS = Requests()
BLOB_BYTES_STORED = Total()
BLOB_BYTES_SERVED = Total()

# (name, help, tally) of the tallied histograms
TALLIES = (
    ("raftkv_fsync_seconds", "One sync round of the journal: the fsync of every segment "
     "written before it began (raftkv/node/journal_syncer.py).", FSYNC_SECONDS),
    ("raftkv_apply_seconds", "Applying one Raft log entry (all its commands) to the store, "
     "decoding included.", APPLY_SECONDS),
    ("raftkv_batch_commands", "Commands carried by one Raft entry (the server's group "
     "commit).", BATCH_COMMANDS),
)

ROLES = ("follower", "candidate", "leader")

# The blob keeper's counts (raftkv/repair.py): which only grow (counters) and which
# are the current state (gauges).
KEEPER_COUNTERS = ("chunks_repaired", "chunks_corrupt", "chunks_scrubbed", "repair_failures",
                   "repair_passes", "gc_rounds", "gc_chunks_deleted", "gc_bytes_freed",
                   "intents_expired")
KEEPER_GAUGES = ("chunks_referenced", "chunks_missing", "chunks_repairing", "gc_candidates",
                 "blob_chunks", "blob_bytes")
# Status numbers shown as gauges, with their help.
STATUS_GAUGES = {
    "term": "The replica's Raft term.",
    "commit_index": "The highest log index known committed.",
    "applied_index": "The highest log index applied to the store.",
    "log_entries": "Entries in the Raft log (since the last snapshot).",
    "journal_bytes": "Bytes of the journal on disk.",
    "snapshot_bytes": "Bytes of the last snapshot on disk.",
    "pending_requests": "Commands waiting for the next Raft entry (group commit).",
    "state_bytes": "Bytes of the store's LMDB file.",
    "cells": "Cells in the store.",
    "config_num": "The shard configuration this replica's group serves (0: none yet).",
    "shards_served": "Shards the group owns and serves.",
    "shards_incoming": "Shards the group is receiving (a reconfiguration in progress).",
    "shards_frozen": "Shards the group handed off and keeps frozen until they are taken.",
}


class ReplicaCollector(Collector):
    """Turns one replica's status (``raftkv.server.NodeServer.status``) into series at
    every scrape: nothing is counted on the request path."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        group = str(status.get("group", ""))
        role = GaugeMetricFamily("raftkv_raft_role", "1 for the replica's current Raft role.",
                                 labels=["group", "role"])
        for name in ROLES:
            role.add_metric([group, name], 1.0 if status.get("role") == name else 0.0)
        yield role
        quorum = GaugeMetricFamily("raftkv_has_quorum", "1 while the replica hears a quorum.",
                                   labels=["group"])
        quorum.add_metric([group], 1.0 if status.get("has_quorum") else 0.0)
        yield quorum
        for key, text in STATUS_GAUGES.items():
            value = status.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge = GaugeMetricFamily(f"raftkv_{key}", text, labels=["group"])
                gauge.add_metric([group], float(value))
                yield gauge
        for key in KEEPER_COUNTERS:
            if key in status:
                counter = CounterMetricFamily(f"raftkv_blob_{key}", f"The blob keeper's {key}.",
                                              labels=["group"])
                counter.add_metric([group], float(status[key]))
                yield counter
        for key in KEEPER_GAUGES:
            if key in status:
                gauge = GaugeMetricFamily(f"raftkv_blob_keeper_{key}",
                                          f"The blob keeper's {key}.", labels=["group"])
                gauge.add_metric([group], float(status[key]))
                yield gauge
        stalls = status.get("tick_stalls")
        if isinstance(stalls, Mapping):
            yield _stall_histogram(group, stalls)
        yield from _tallied()


def _tallied() -> Iterator[Metric]:
    """What the replica's threads tallied (module docstring), copied now."""
    for name, text, tally in TALLIES:
        family = HistogramMetricFamily(name, text)
        family.add_metric([], tally.buckets(), tally.total)
        yield family
    latency = HistogramMetricFamily(
        "raftkv_request_seconds", "Requests on the client port, from read to answer, by "
        "operation.", labels=["op"])
    for op, tally in list(REQUESTS.latency.items()):
        latency.add_metric([op], tally.buckets(), tally.total)
    yield latency
    outcomes = CounterMetricFamily(
        "raftkv_requests", "Requests answered on the client port, by operation and outcome "
        "(ok, or the error's class name).", labels=["op", "outcome"])
    for (op, outcome), count in list(REQUESTS.outcomes.items()):
        outcomes.add_metric([op, outcome], float(count))
    yield outcomes
    for name, text, total in (
            ("raftkv_blob_stored_bytes", "Chunk bytes written by blob_put.", BLOB_BYTES_STORED),
            ("raftkv_blob_served_bytes", "Chunk bytes answered to blob_get.", BLOB_BYTES_SERVED)):
        yield CounterMetricFamily(name, text, value=float(total.value))


def _stall_histogram(group: str, stalls: Mapping[str, Any]) -> Metric:
    """The tick watch's gaps (raftkv/node/tickwatch.py: counts per bucket, not cumulative)
    as a Prometheus histogram."""
    family = HistogramMetricFamily(
        "raftkv_tick_gap_seconds", "Gaps between the Raft tick thread's polls "
        "(docs/engine-fixes.md, \"How the engine runs\"); the high buckets are stalls.",
        labels=["group"])
    cumulative, buckets = 0.0, []
    for bound, count in stalls.get("buckets", {}).items():
        cumulative += count
        buckets.append(("+Inf" if bound == "inf" else bound, cumulative))
    family.add_metric([group], buckets, float(stalls.get("seconds", 0.0)))
    return family

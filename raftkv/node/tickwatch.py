"""How long the tick thread goes without looking at its sockets (docs/engine-fixes.md,
"How the engine runs").

Everything the engine does runs on one thread: it waits in ``poll()`` for its
sockets, handles what arrived (inside the poller's callbacks), then does a
tick's work (commit, apply, send, compact) and waits again.  While it is away
from ``poll()`` no heartbeat leaves and no message is read, so the time from
one ``poll()`` returning to the next being called is the stall a peer sees.
:class:`TickWatch` stands in for the poller's ``select.poll`` object and keeps
those gaps in a small histogram and a maximum, and for the gaps over
:data:`STALL_AIM` the tick thread's CPU time and context switches in them
(raftkv/node/stallsites.py says where they were spent).
"""

from __future__ import annotations

import bisect
import resource
import select
import threading
import time
from typing import Any

# Upper bounds of the histogram's buckets, in seconds; the last bucket is "longer".
STALL_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STALL_AIM = 0.02  # what a tick may take at most (issue 15): heartbeats go every 0.1 s


class TickWatch:
    """A ``select.poll`` object that times the gaps between its waits."""

    def __init__(self, inner: Any | None = None) -> None:
        self._inner = inner if inner is not None else select.poll()
        self._lock = threading.Lock()  # the tick thread writes, status readers copy
        self._returned: float | None = None  # when the last wait ended
        self._returned_usage = _usage()      # the tick thread's (CPU, switches) then
        self._waiting = False                # inside the inner poll() (read by StallSites)
        self.thread: threading.Thread | None = None  # the one that polls: the tick thread
        self.counts = [0] * (len(STALL_BOUNDS) + 1)
        self.longest = 0.0
        self.total = 0.0  # seconds spent away from poll(), summed
        # The gaps over STALL_AIM: their wall time, the CPU time the tick thread used in
        # them (the rest it waited: for a disk, a lock, the GIL, a CPU), and how often it
        # gave up its CPU itself (waited) or was made to (another thread's turn).
        self.over_aim_seconds = 0.0
        self.over_aim_cpu = 0.0
        self.over_aim_switches = [0, 0]  # voluntary, involuntary

    # The poller's own calls, passed through.
    def register(self, fd: Any, mask: int) -> None:
        self._inner.register(fd, mask)

    def modify(self, fd: Any, mask: int) -> None:
        self._inner.modify(fd, mask)

    def unregister(self, fd: Any) -> None:
        self._inner.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        now = time.monotonic()
        if self._returned is not None:
            self._record(now - self._returned)
        else:
            self.thread = threading.current_thread()
        self._waiting = True
        try:
            return self._inner.poll(timeout)
        finally:
            self._waiting = False
            self._returned = time.monotonic()
            self._returned_usage = _usage()

    def away_since(self) -> float | None:
        """When the tick thread last left ``poll()``; None while it waits in it (or before
        its first wait).  Read from another thread: a value a moment old is fine."""
        return None if self._waiting else self._returned

    def _record(self, gap: float) -> None:
        usage = _usage() if gap > STALL_AIM else self._returned_usage
        with self._lock:
            self.counts[bisect.bisect_left(STALL_BOUNDS, gap)] += 1
            self.total += gap
            if gap > self.longest:
                self.longest = gap
            if gap > STALL_AIM:
                self.over_aim_seconds += gap
                cpu, waited, preempted = usage
                before = self._returned_usage
                self.over_aim_cpu += cpu - before[0]
                self.over_aim_switches[0] += waited - before[1]
                self.over_aim_switches[1] += preempted - before[2]

    def snapshot(self) -> dict[str, Any]:
        """What was measured since the replica started: for status and benchmarks (which
        subtract two snapshots to see one phase)."""
        with self._lock:
            return {"longest": round(self.longest, 4), "seconds": round(self.total, 3),
                    "over_aim_seconds": round(self.over_aim_seconds, 3),
                    "over_aim_cpu_seconds": round(self.over_aim_cpu, 3),
                    "over_aim_switches": dict(zip(("waited", "preempted"),
                                                  self.over_aim_switches, strict=True)),
                    "buckets": dict(zip([*map(str, STALL_BOUNDS), "inf"], self.counts,
                                        strict=True))}


def _usage() -> tuple[float, int, int]:
    """The calling thread's CPU seconds and its voluntary and involuntary context switches."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw


def watch_poller(poller: Any) -> TickWatch:
    """Put a :class:`TickWatch` under pysyncobj's PollPoller (the engine's choice on Linux,
    set explicitly in the engine's settings)."""
    name = "_PollPoller__poll"
    if not hasattr(poller, name):
        raise ImportError("pysyncobj's poller is not the PollPoller raftkv.node watches")
    watch = TickWatch(getattr(poller, name))
    setattr(poller, name, watch)
    return watch

"""What the tick thread was doing while it stalled (docs/engine-fixes.md, "How the engine
runs"): for operators, and for whoever wants the stalls gone.

:class:`~raftkv.node.tickwatch.TickWatch` says how long the tick thread stays away
from ``poll()``; :class:`StallSites` says where.  A thread of its own looks at the
tick thread only once it has been away for :data:`~raftkv.node.tickwatch.STALL_AIM`
and then every :data:`SAMPLE_EVERY` until it is back: it takes the tick thread's
innermost :data:`DEPTH` Python frames (``sys._current_frames``) and counts them.  A
line calling into C (``os.pwrite``, an LMDB commit, a ``send``) is the innermost
frame, so a disk wait and a CPU loop name themselves; the thread's scheduler state
(``/proc``: R running or waiting for a CPU, S asleep -- a lock, the GIL --, D in the
disk) comes first, since on a busy machine a thread that could run may not get a CPU.
Between two samples of one stall it also reads the thread's CPU time and its time
waiting for a CPU (``/proc``'s schedstat): what remains of the time between the two
was spent asleep.  While nothing stalls it wakes every ``STALL_AIM`` and reads two
attributes.  At most :data:`KEPT` stacks are kept, the least seen making room.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import PurePath
from types import FrameType
from typing import Any

from ..background import UNTIL_WOKEN, BackgroundLoop
from .tickwatch import STALL_AIM, TickWatch

SAMPLE_EVERY = 0.002  # while a stall lasts
DEPTH = 4             # innermost frames that name a stack
KEPT = 64             # stacks counted at most
SHOWN = 8             # the most seen, in status


class StallSites(BackgroundLoop):
    """Counts the stacks the tick thread was seen in, ``STALL_AIM`` or more into a stall."""

    def __init__(self, watch: TickWatch) -> None:
        super().__init__("raftkv-stall-sites", STALL_AIM)
        self._watch = watch
        self._lock = threading.Lock()
        self._samples: dict[str, int] = {}
        # Summed over the spans between two samples of one stall: their length, the tick
        # thread's CPU time and its wait for a CPU in them (the rest it slept).
        self._spans = [0.0, 0.0, 0.0]
        self._last: tuple[float, float, float, float] | None = None  # gap, at, cpu, runqueue

    def step(self) -> float | None:
        tick = self._watch.thread
        since = self._watch.away_since()
        if tick is None or tick.ident is None or since is None:
            return None  # not yet polling, or waiting in poll(): look again in STALL_AIM
        if not tick.is_alive():
            self.stop(timeout=0)
            return UNTIL_WOKEN
        away = time.monotonic() - since
        if away < STALL_AIM:
            return STALL_AIM - away
        frame = sys._current_frames().get(tick.ident)
        if frame is not None and self._watch.away_since() == since:  # still the same gap
            self._count(f"[{_state(tick.native_id)}] {_stack(frame)}")
            self._span(since, tick.native_id)
        return SAMPLE_EVERY

    def _span(self, gap: float, native_id: int | None) -> None:
        at = time.monotonic()
        cpu, runqueue = _schedstat(native_id)
        last, self._last = self._last, (gap, at, cpu, runqueue)
        if last is None or last[0] != gap or cpu < 0:
            return
        with self._lock:
            for n, grown in enumerate((at - last[1], cpu - last[2], runqueue - last[3])):
                self._spans[n] += grown

    def _count(self, stack: str) -> None:
        with self._lock:
            samples = self._samples
            if stack not in samples and len(samples) >= KEPT:
                del samples[min(samples, key=samples.__getitem__)]
            samples[stack] = samples.get(stack, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Since the replica started: the stacks seen most often in stalls (innermost frame
        first) and how often (a sample is about SAMPLE_EVERY of stall); the seconds
        between two samples of one stall, and of those the CPU's and the wait for one."""
        with self._lock:
            seen = sorted(self._samples.items(), key=lambda kv: -kv[1])
            spans = [round(x, 3) for x in self._spans]
        return {"stacks": dict(seen[:SHOWN]),
                **dict(zip(("seconds", "cpu_seconds", "runqueue_seconds"), spans, strict=True))}


def _state(native_id: int | None) -> str:
    """The thread's state letter in ``/proc`` (Linux), or ``?``."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return "?"


def _schedstat(native_id: int | None) -> tuple[float, float]:
    """The thread's CPU time and time waiting for a CPU, in seconds (-1 if unknown)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as stat:
            cpu, runqueue = stat.read().split()[:2]
        return int(cpu) / 1e9, int(runqueue) / 1e9
    except (OSError, ValueError):
        return -1.0, -1.0


def _stack(frame: FrameType) -> str:
    where: list[str] = []
    current: FrameType | None = frame
    while current is not None and len(where) < DEPTH:
        code = current.f_code
        path = PurePath(code.co_filename)
        where.append(f"{path.parent.name}/{path.name}:{current.f_lineno} {code.co_name}")
        current = current.f_back
    return " < ".join(where)

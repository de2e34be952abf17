"""What the tick thread was doing while it stalled (docs/engine-fixes.md, "How the engine
runs"): for operators, and for whoever wants the stalls gone.

:class:`~raftkv.node.tickwatch.TickWatch` says how long the tick thread stays away
from ``poll()``; :class:`StallSites` says where.  A thread of its own looks at the
tick thread only once it has been away for :data:`~raftkv.node.tickwatch.STALL_AIM`
and then every :data:`SAMPLE_EVERY` until it is back: it takes the tick thread's
innermost :data:`DEPTH` Python frames (``sys._current_frames``) and counts them.  A
line calling into C (``os.pwrite``, an LMDB commit, a ``send``) is the innermost
frame, so a disk wait and a CPU loop name themselves.  Nothing stalls: it wakes
every ``STALL_AIM`` and reads two attributes.  At most :data:`KEPT` stacks are
kept, the least seen making room.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import PurePath
from types import FrameType

from .tickwatch import STALL_AIM, TickWatch

SAMPLE_EVERY = 0.005  # while a stall lasts
DEPTH = 4             # innermost frames that name a stack
KEPT = 64             # stacks counted at most
SHOWN = 8             # the most seen, in status


class StallSites:
    """Counts the stacks the tick thread was seen in, ``STALL_AIM`` or more into a stall."""

    def __init__(self, watch: TickWatch) -> None:
        self._watch = watch
        self._lock = threading.Lock()
        self._samples: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raftkv-stall-sites", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = STALL_AIM
        while not self._stop.wait(delay):
            delay = STALL_AIM
            tick = self._watch.thread
            since = self._watch.away_since()
            if tick is None or tick.ident is None or since is None:
                continue
            if not tick.is_alive():
                return
            away = time.monotonic() - since
            if away < STALL_AIM:
                delay = STALL_AIM - away
                continue
            frame = sys._current_frames().get(tick.ident)
            if frame is not None and self._watch.away_since() == since:  # still the same gap
                self._count(_stack(frame))
            delay = SAMPLE_EVERY

    def _count(self, stack: str) -> None:
        with self._lock:
            samples = self._samples
            if stack not in samples and len(samples) >= KEPT:
                del samples[min(samples, key=samples.__getitem__)]
            samples[stack] = samples.get(stack, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """The stacks seen most often in stalls (innermost frame first) and how often,
        since the replica started; one sample is about SAMPLE_EVERY of stall."""
        with self._lock:
            seen = sorted(self._samples.items(), key=lambda kv: -kv[1])
        return dict(seen[:SHOWN])


def _stack(frame: FrameType) -> str:
    where: list[str] = []
    current: FrameType | None = frame
    while current is not None and len(where) < DEPTH:
        code = current.f_code
        path = PurePath(code.co_filename)
        where.append(f"{path.parent.name}/{path.name}:{current.f_lineno} {code.co_name}")
        current = current.f_back
    return " < ".join(where)

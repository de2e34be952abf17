"""How results travel from the Raft engine's tick thread to the event loop.

A put's answer used to cost two wake-ups of the event loop per Raft entry (the
batch's expiry cancelled, then the batch settled, each a ``call_soon_threadsafe``
and a byte through the loop's self-pipe), and a read one per read.  Here
everything one tick settles reaches the loop with at most one wake-up
(:class:`Handover`); docs/engine-fixes.md, "Hand-offs", has the measurements.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Handover:
    """Calls made from the tick thread, run on the event loop: the first of a burst
    wakes the loop, the rest ride along (a tick settles many entries and reads at
    once).  Calls run in the order they were handed over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def call(self, func: Callable[..., None], *args: Any) -> None:
        """From any thread: run ``func(*args)`` on the loop soon."""
        with self._lock:
            self._calls.append((func, args))
            if len(self._calls) > 1:
                return  # a wake-up is on its way and will find this call too
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: the server has stopped, nobody waits
            with self._lock:
                self._calls.clear()

    def _run(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for func, args in calls:
            # Each call on its own, as call_soon's callbacks are: one that raises must not
            # strand the rest of the burst (their clients would wait for their deadline).
            try:
                func(*args)
            except Exception as exc:  # noqa: BLE001 - reported as the loop reports its own
                self._loop.call_exception_handler({
                    "message": f"exception in {func!r}, handed over from the tick thread",
                    "exception": exc})

"""Counting a page's sequential store round trips at the store client's boundary.

:class:`RoundTripCounter` wraps the real store client a portal worker uses
(its ``client_factory``) and notes when each call that goes to the store
started and ended, and on which thread.  Calls that overlap in time were
in flight together (one ``get_cells``, or reads the page sent concurrently);
a call that starts after another ended may have waited for it.  The number of
sequential round trips of a request is the longest chain of calls each of which
started after the one before it ended -- what a page's latency is made of.
Nothing is changed: every call goes to the real store.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

# The methods that send something to the store; the rest (shard_of, group_of_shard)
# are computed where the client is.
STORE_CALLS = frozenset({
    "get", "get_row", "get_cells", "scan", "get_stream", "get_into", "put", "put_stream",
    "delete", "cput", "mutate_row", "status", "noop"})


@dataclass(frozen=True)
class Call:
    method: str
    thread: str
    started: float
    ended: float


def sequential(calls: list[Call]) -> int:
    """The longest chain of calls, each started after the previous one ended."""
    ordered = sorted(calls, key=lambda c: c.started)
    depth: list[int] = []
    for i, call in enumerate(ordered):
        before = [depth[j] for j in range(i) if ordered[j].ended <= call.started]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)


class RoundTripCounter:
    """A store client that notes its calls (see the module); counts those of chosen threads."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in STORE_CALLS or not callable(attr):
            return attr

        def noted(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return attr(*args, **kwargs)
            finally:
                call = Call(name, threading.current_thread().name, started, time.monotonic())
                with self._lock:
                    self.calls.append(call)
        return noted

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def of_requests(self, request_thread: str, helper_prefix: str) -> list[Call]:
        """The calls made for requests: on the request's thread or the page's read helpers
        (not background loops such as the last-seen recorder)."""
        with self._lock:
            return [c for c in self.calls
                    if c.thread == request_thread or c.thread.startswith(helper_prefix)]

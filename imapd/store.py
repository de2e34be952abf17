"""The store from the event loop: every call in a bounded pool of threads, read-only aware.

pymap runs on asyncio; the store client (``shards.Client``) and the mail model
are synchronous and block for a network round trip or more.  So every call
goes through :meth:`StoreCalls.run` or :meth:`StoreCalls.read`, which run it in
a pool of :data:`STORE_THREADS` threads and never block the loop; a burst of
clients queues there instead of making threads without bound.

The store is wrapped in :class:`shards.readonly.ReadOnlyFallback`, and every
call runs inside :func:`shards.readonly.observing`: while the user's group has
lost its majority, reads come stale from a surviving replica and writes are
refused at once with :class:`~raftkv.errors.ReadOnly` (answered ``NO
[UNAVAILABLE]`` with the reason, :mod:`imapd.errors`).  :meth:`read` says
whether what it read was stale, so SELECT can open the folder read-only.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shards.readonly import observing

STORE_THREADS = 16  # concurrent store calls of one imapd; each command needs one at a time


class StoreCalls:
    """The (wrapped) store and the threads that call it.

    :param store: the store every call is handed (a ``ReadOnlyFallback`` in the server).
    """

    def __init__(self, store: Any, threads: int = STORE_THREADS) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="imapd-store")

    async def run[T](self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in a thread; its exceptions are raised here."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(context.run, call, *args, **kwargs))

    async def read[T](self, call: Callable[..., T], *args: Any, **kwargs: Any
                      ) -> tuple[T, bool]:
        """``call(store, *args, **kwargs)`` inside :func:`observing`: (its result, stale)."""
        def observed() -> tuple[T, bool]:
            with observing() as state:
                result = call(self.store, *args, **kwargs)
            return result, state.read_only
        return await self.run(observed)

    async def write[T](self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(store, *args, **kwargs)`` inside :func:`observing` (refused at once,
        :class:`~raftkv.errors.ReadOnly`, while the group has lost its majority)."""
        return (await self.read(call, *args, **kwargs))[0]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""A page's view of the store: cached small cells confirmed by version, and reads sent together.

A page's latency is its sequential store round trips (README, "Store round
trips per page").  Two things keep them at two or fewer:

- **Cells confirmed by version.**  Each worker keeps small cells a page needs
  on every visit -- session, account, app-password and two-factor records, a
  drive's quota and folder headers, the folder index cells of a breadcrumb --
  in a :class:`CellCache` (least recently used, bounded).  Nothing cached is
  used as it is: a request names every cell it needs in one ``get_cells``,
  with the versions it holds as ``known``, and the store answers ``Unchanged``
  for those still current and the cell itself for those that changed
  (:meth:`PageStore.confirm`).  A session revoked on another frontend is
  absent in that answer, so it ends at once.  While a group has lost its
  majority the confirmation is a stale read, and the request carries the
  read-only notice (:mod:`shards.readonly`): a cached cell is never shown as
  current unless the store just said it is.
- **Independent reads together.**  :func:`together` runs reads that do not
  depend on each other at the same time, on a small pool of this process.

A page may also name a cell by version only (:meth:`PageStore.probe`): a cell
too large to keep here whose version says whether something the worker made of
it still holds (a message's parsed view, :mod:`.messageview`).  It rides in the
same ``get_cells``; its answer (``Unchanged``, the cell, or None) is kept for
the request only, never in the worker's cache.

Within a request, a cell once confirmed is read from the confirmation: the
request sees its cells as of its first round trip.  Every write that depends
on a cell is conditioned on the version read (CPUT, ``mutate_row``
conditions), so a stale copy cannot overwrite anything: the write fails with
ConditionFailed, and :class:`PageStore` then forgets the cells it named, here
and in the worker's cache, so the caller's retry reads them afresh.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from raftkv.errors import ConditionFailed
from raftkv.interface import MAX_CELLS, Cell, Unchanged

if TYPE_CHECKING:
    from raftkv.interface import Condition, Consistency, KeyValueStore, Mutation, Readable
    from shards.readonly import ReadOnlyFallback

Key = tuple[str, str]  # (row, column)

READERS = 16                   # threads per process that send a page's reads together
READER_PREFIX = "portal-reads"  # their names (tests count their calls as the page's)


class CellCache:
    """This worker's copies of small cells, least recently used first out.

    A copy is only ever a claim to be checked: :meth:`PageStore.confirm` sends
    its version to the store, which answers whether it still holds.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._cells: OrderedDict[Key, Cell] = OrderedDict()
        self._lock = threading.Lock()
        self.confirmed = 0   # copies the store said were current (no bytes sent)
        self.refreshed = 0   # copies replaced by a newer cell, or dropped as gone
        self.fetched = 0     # cells read that were not cached

    def peek(self, key: Key) -> Cell | None:
        """The cached copy, unconfirmed (to know what to ask for; never to show)."""
        with self._lock:
            return self._cells.get(key)

    def keep(self, key: Key, cell: Cell | None) -> None:
        """Remember ``cell`` as ``key``'s latest known state (None: forget it)."""
        with self._lock:
            if cell is None or not self.size:
                self._cells.pop(key, None)
                return
            self._cells[key] = Cell(cell.value, cell.version)  # a StaleCell's version is real
            self._cells.move_to_end(key)
            while len(self._cells) > self.size:
                self._cells.popitem(last=False)

    def forget(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self._cells.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cells)


class PageStore:
    """The store as one request sees it: the worker's store client (read-only fallback
    included), its :class:`CellCache`, and the cells this request confirmed.

    It is the store interface (``raftkv.interface.ShardedStore``), so the data model's
    functions take it as they take any store.
    """

    def __init__(self, store: ReadOnlyFallback, cache: CellCache) -> None:
        self.store = store
        self.cache = cache
        self.found: dict[Key, Cell | None] = {}
        self.probes: dict[Key, int] = {}   # cells named by version only: the version known
        self.probed: dict[Key, Cell | Unchanged | None] = {}  # and the store's answers

    def probe(self, key: Key, version: int) -> None:
        """Name ``key`` by ``version`` (0: none known) in this request's next
        :meth:`confirm`, which keeps the answer in :attr:`probed` (not in the cache)."""
        if key not in self.probed:
            self.probes[key] = version

    def read_probed(self, key: Key, version: int) -> Cell | Unchanged | None:
        """The answer for ``key`` probed by ``version``: the one the request's first
        read carried, else read now (then by ``version``)."""
        if key not in self.probed:
            self.probes[key] = self.probes.get(key, version)
            self.confirm([key])
        return self.probed[key]

    # -- confirming cached cells -------------------------------------------------------

    def confirm(self, keys: Iterable[Key]) -> None:
        """Make every cell of ``keys`` current for this request, in one ``get_cells``:
        cached copies are sent by version and kept if unchanged; the rest come back."""
        todo = [key for key in dict.fromkeys(keys)
                if key not in self.found and key not in self.probed]
        for start in range(0, len(todo), MAX_CELLS):
            self._confirm(todo[start:start + MAX_CELLS])

    def _confirm(self, keys: list[Key]) -> None:
        held = [None if key in self.probes else self.cache.peek(key) for key in keys]
        known = [self.probes[key] if key in self.probes else c.version if c else 0
                 for key, c in zip(keys, held, strict=True)]
        answers = self.store.get_cells(keys, known=known)
        for key, copy, answer in zip(keys, held, answers, strict=True):
            cell: Cell | None
            if key in self.probes:
                self.probed[key] = answer
                continue
            if isinstance(answer, Unchanged):
                cell = copy if copy is not None and copy.version == answer.version else None
                if cell is None:  # known 0 and still absent
                    self.found[key] = None
                    continue
                self.cache.confirmed += 1
            else:
                cell = answer
                if copy is not None:
                    self.cache.refreshed += 1
                else:
                    self.cache.fetched += 1
            self.found[key] = cell
            self.cache.keep(key, cell)

    def cell(self, row: str, col: str) -> Cell | None:
        """A confirmed cell (confirmed now, if this request has not yet)."""
        self.confirm([(row, col)])
        return self.found[(row, col)]

    def remember(self, key: Key, cell: Cell | None) -> None:
        """A cell this request read otherwise (in a row read): current, and worth caching."""
        self.found[key] = cell
        self.cache.keep(key, cell)

    def _forget(self, keys: Iterable[Key]) -> None:
        keys = list(keys)
        self._forget_quietly(keys)
        self.cache.refreshed += len(keys)

    def _wrote(self, key: Key, cell: Cell | None) -> None:
        self.probed.pop(key, None)  # a probe's answer is older than our own write
        # Our own write's result is current; cache it only where a copy was kept.
        if key in self.found:
            self.found[key] = cell
        if self.cache.peek(key) is not None:
            self.cache.keep(key, cell)

    # -- the store interface -----------------------------------------------------------

    def shard_of(self, row: str) -> int:
        return self.store.shard_of(row)

    def get(self, row: str, col: str, *, consistency: Consistency = "linearizable"
            ) -> Cell | None:
        if consistency == "linearizable" and (row, col) in self.found:
            return self.found[(row, col)]
        return self.store.get(row, col, consistency=consistency)

    def get_cells(self, cells: Sequence[Key], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        return self.store.get_cells(cells, known=known, consistency=consistency)

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False, consistency: Consistency = "linearizable"
                ) -> dict[str, Cell]:
        return self.store.get_row(row, prefix, after=after, limit=limit, reverse=reverse,
                                  consistency=consistency)

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        return self.store.scan(shard, after_row, limit, consistency=consistency)

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        return self.store.get_stream(row, col, consistency=consistency, offset=offset)

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        return self.store.get_into(row, col, out, consistency=consistency)

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        version = self.store.put(row, col, value, ttl=ttl)
        self._wrote((row, col), Cell(value, version))
        return version

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        self._forget_quietly([(row, col)])
        return self.store.put_stream(row, col, stream, ttl=ttl)

    def delete(self, row: str, col: str) -> bool:
        existed = self.store.delete(row, col)
        self._wrote((row, col), None)
        return existed

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        try:
            version = self.store.cput(row, col, new, old=old, if_version=if_version, ttl=ttl)
        except ConditionFailed:
            self._forget([(row, col)])  # our copy was stale: the retry reads it afresh
            raise
        self._wrote((row, col), Cell(new, version))
        return version

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *, ttl: float | None = None) -> dict[str, int]:
        try:
            versions = self.store.mutate_row(row, conditions, mutations, ttl=ttl)
        except ConditionFailed:
            self._forget((row, condition[1]) for condition in conditions)
            raise
        for mutation in mutations:
            if mutation[0] == "put":
                self._wrote((row, mutation[1]), Cell(mutation[2], versions.get(mutation[1], 0)))
            else:
                self._wrote((row, mutation[1]), None)
        return versions

    def _forget_quietly(self, keys: list[Key]) -> None:
        for key in keys:
            self.found.pop(key, None)
            self.probed.pop(key, None)
        self.cache.forget(keys)

    # -- the rest: as the worker's client ------------------------------------------------

    def lost(self, row: str) -> bool:
        return self.store.lost(row)

    def status(self) -> list[dict[str, Any]]:
        return self.store.status()

    def config_group(self) -> KeyValueStore | None:
        return self.store.config_group()

    def close(self) -> None:
        self.store.close()


# -- reads sent together ------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _readers() -> ThreadPoolExecutor:
    """This process's pool (a forked worker makes its own: threads do not cross a fork)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(READERS, thread_name_prefix=READER_PREFIX)
            _pool_pid = os.getpid()
            # Every thread started now, not on a page's first reads: a read sent
            # "together" must not wait for a thread to be made.
            ready = threading.Barrier(READERS)
            for _ in range(READERS):
                _pool.submit(ready.wait, 10.0)
        return _pool


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at the same time and return their results in order; the first
    error (in order) is raised once all have ended.

    Each runs in a copy of the caller's context, so its reads count for the
    caller's request (:func:`shards.readonly.observing`).  Not to be nested: a
    call must not itself use :func:`together` (the pool is small).
    """
    if len(calls) == 1:
        return [calls[0]()]
    pool = _readers()
    futures: list[Future[Any]] = [pool.submit(contextvars.copy_context().run, call)
                                  for call in calls[1:]]
    results: list[Any] = []
    first_error: BaseException | None = None
    try:
        results.append(calls[0]())  # the caller's thread sends one of them itself
    except BaseException as exc:  # noqa: BLE001 - raised below, after the others end
        first_error = exc
        results.append(None)
    for future in futures:
        try:
            results.append(future.result())
        except BaseException as exc:  # noqa: BLE001
            first_error = first_error or exc
            results.append(None)
    if first_error is not None:
        raise first_error
    return results

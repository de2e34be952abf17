"""Read-only service while a group has lost its majority: stale reads, marked, and no writes.

A group with two of its three replicas down has no leader and cannot get
one: every linearizable read waits for the client's whole deadline (10 s) and
fails.  The apps' doors (the portal's pages, and the IMAP and WebDAV doors to
come) wrap their store in a :class:`ReadOnlyFallback` and run each request
inside :func:`observing`:

- A linearizable read gets a short first try (:data:`FIRST_TRY`) and one quick
  retry; an ordinary election (a second or two) usually ends within them.
- If both fail as unavailable, the group is *marked*: this read and every
  later one of the group are served by a stale read from a surviving replica
  (at once, with no more waiting), and the request's :class:`ReadState` says
  it read stale -- the door must show that (the portal's banner).  Nothing
  read stale is ever presented as current: the marker travels with the
  request, not with the data.
- A write to a marked group is refused at once with :class:`~raftkv.errors.ReadOnly`
  (it could not commit before the majority returns).
- A probe thread (:class:`GroupHealth`) sends a barrier through each marked
  group's log every :data:`PROBE_INTERVAL`; the first that commits clears the
  mark, and requests read linearizably again.
- Inside :func:`current_only` a read never falls back: decisions that must see
  the present (a sign-in checks a password that may just have changed) get
  :class:`~raftkv.errors.ReadOnly` instead.

Outside :func:`observing` the wrapper changes nothing: background work (queues,
clean-ups, heartbeats) never acts on stale data.  docs/store-promises.md,
"Read-only while a group has lost its majority", has the promises.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO, Protocol, TypeVar

from raftkv.background import UNTIL_WOKEN, BackgroundLoop
from raftkv.errors import ReadOnly, UnavailableError, WrongShard
from raftkv.interface import (
    Cell,
    Condition,
    Consistency,
    KeyValueStore,
    Mutation,
    Readable,
    ShardedStore,
    Unchanged,
)

from .client import Client

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_TRY = 0.6       # seconds one linearizable try may take before the quick retry
RETRY_PAUSE = 0.1     # seconds between the two tries: a NotLeader hint may need a moment
PROBE_INTERVAL = 0.5  # seconds between barriers sent to a marked group
CELL_READERS = 8      # threads of one get_cells' groups, beyond the caller's own
# Two tries, the pause and the stale read stay well inside the 2 s a page may take.

READ_ONLY_MESSAGE = ("Part of the storage cluster is recovering, so your data is read-only "
                     "for now: changes cannot be saved. Please try again in a few minutes.")


@dataclass
class ReadState:
    """What one request's reads met: which groups answered only stale."""

    current_only: bool = False
    stale_groups: set[int] = field(default_factory=set)

    @property
    def read_only(self) -> bool:
        """Something this request shows came from a stale read: say so."""
        return bool(self.stale_groups)


_state: contextvars.ContextVar[ReadState | None] = contextvars.ContextVar(
    "shards_read_state", default=None)


@contextmanager
def observing() -> Iterator[ReadState]:
    """Run a request whose reads may fall back to stale ones; its :class:`ReadState`."""
    state = ReadState()
    token = _state.set(state)
    try:
        yield state
    finally:
        _state.reset(token)


@contextmanager
def current_only() -> Iterator[None]:
    """Inside, a read that cannot be linearizable raises :class:`ReadOnly` instead of
    falling back: for decisions on data that may have just changed (a password)."""
    state = _state.get()
    if state is None:
        yield  # not observing: reads are linearizable anyway
        return
    before, state.current_only = state.current_only, True
    try:
        yield
    finally:
        state.current_only = before


def read_state() -> ReadState | None:
    """The running request's :class:`ReadState`, or None outside :func:`observing`."""
    return _state.get()


class GroupHealth(BackgroundLoop):
    """Which groups lost their majority, as this process saw it; a probe clears the marks.

    ``probe(gid)`` must raise unless a linearizable operation of group ``gid``
    succeeded (``raftkv.Client.noop``: a barrier through the log).
    """

    def __init__(self, probe: Callable[[int], object], *,
                 interval: float = PROBE_INTERVAL) -> None:
        super().__init__("shards-readonly-probe", interval)
        self._probe = probe
        self._marked: dict[int, float] = {}  # group -> when it was marked (monotonic)
        self._lock = threading.Lock()

    def lost(self, gid: int) -> bool:
        with self._lock:
            return gid in self._marked

    def marked(self) -> dict[int, float]:
        with self._lock:
            return dict(self._marked)

    def mark(self, gid: int) -> None:
        with self._lock:
            new = gid not in self._marked
            self._marked.setdefault(gid, time.monotonic())
        if new:
            log.warning("group %d answers no linearizable read: serving it read-only", gid)
            self.start()
            self.wake()

    def clear(self, gid: int) -> None:
        with self._lock:
            since = self._marked.pop(gid, None)
        if since is not None:
            log.warning("group %d answers again after %.1fs read-only", gid,
                        time.monotonic() - since)

    def step(self) -> float | None:
        for gid in self.marked():
            if self.stopping:
                break
            try:
                self._probe(gid)
            except UnavailableError:
                continue  # still no majority: the mark stays
            self.clear(gid)
        return None if self.marked() else UNTIL_WOKEN


def _outcome[R](call: Callable[[], R]) -> R | BaseException:
    """What ``call`` returns, or what it raised (to raise once the others are done)."""
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001 - the caller raises it
        return exc


class RoutedStore(ShardedStore, Protocol):
    """What :class:`ReadOnlyFallback` needs of the store it wraps (``shards.Client``)."""

    def status(self) -> list[dict[str, Any]]: ...

    def config_group(self) -> KeyValueStore | None: ...


class ReadOnlyFallback:
    """A :class:`~raftkv.interface.ShardedStore` that serves reads stale, and refuses
    writes at once, for groups that lost their majority -- inside :func:`observing` only.

    :param store: the store, with its usual deadline (writes, stale reads).
    :param quick: the same store with a deadline of :data:`FIRST_TRY` (the tries
        of linearizable reads, the probes); ``shards.Client(cluster, timeout=FIRST_TRY)``.
    :param probe: a barrier through group ``gid``'s log (:class:`GroupHealth`).
    :param group_of_shard: the id of the group serving a shard.
    """

    def __init__(self, store: RoutedStore, quick: RoutedStore,
                 probe: Callable[[int], object], group_of_shard: Callable[[int], int], *,
                 retry_pause: float = RETRY_PAUSE, probe_interval: float = PROBE_INTERVAL
                 ) -> None:
        self.store = store
        self.quick = quick
        self.group_of_shard = group_of_shard
        self.retry_pause = retry_pause
        self.health = GroupHealth(probe, interval=probe_interval)
        self._pool: ThreadPoolExecutor | None = None  # get_cells' groups, made on first use
        self._pool_lock = threading.Lock()

    # -- the decisions -----------------------------------------------------------

    def _read(self, gid: int, fresh: Callable[[ShardedStore], T],
              stale: Callable[[ShardedStore], T]) -> T:
        state = _state.get()
        if state is None:
            return fresh(self.store)  # not a request that can show a notice: as before
        if not self.health.lost(gid):
            try:
                return self._two_tries(fresh)
            except UnavailableError:
                self.health.mark(gid)
        if state.current_only:
            raise ReadOnly(READ_ONLY_MESSAGE)
        result = stale(self.store)
        state.stale_groups.add(gid)  # after the read: only data actually shown marks the page
        return result

    def _two_tries(self, fresh: Callable[[ShardedStore], T]) -> T:
        try:
            return self._try(fresh)
        except UnavailableError:
            time.sleep(self.retry_pause)
        return self._try(fresh)

    def _try(self, fresh: Callable[[ShardedStore], T]) -> T:
        try:
            return fresh(self.quick)
        except WrongShard:
            # The shard is moving: the store's own deadline covers following it, and
            # a move needs the groups' majorities anyway.
            return fresh(self.store)

    def _write(self, gid: int, call: Callable[[ShardedStore], T]) -> T:
        if _state.get() is not None and self.health.lost(gid):
            raise ReadOnly(READ_ONLY_MESSAGE)
        try:
            return call(self.store)
        except UnavailableError:
            if _state.get() is not None:
                self.health.mark(gid)  # so the next request's writes are refused at once
            raise

    def lost(self, row: str) -> bool:
        """Whether ``row``'s group is marked: its writes are refused, its reads stale."""
        return self.health.lost(self._gid(row))

    def _gid(self, row: str) -> int:
        return self.group_of_shard(self.store.shard_of(row))

    # -- the store interface -----------------------------------------------------

    def shard_of(self, row: str) -> int:
        return self.store.shard_of(row)

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        if consistency == "stale":
            return self.store.get(row, col, consistency="stale")
        return self._read(self._gid(row), lambda s: s.get(row, col),
                          lambda s: s.get(row, col, consistency="stale"))

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        if consistency == "stale" or _state.get() is None:
            return self.store.get_cells(cells, known=known, consistency=consistency)
        versions = [0] * len(cells) if known is None else list(known)
        by_group: dict[int, list[int]] = {}
        for i, (row, _col) in enumerate(cells):
            by_group.setdefault(self._gid(row), []).append(i)
        # Each group on its own and all at once (one request per group, as the store
        # sends them anyway): a group that lost its majority costs only its own two
        # tries, during which the others answer, and is marked by its own failure.
        parts = [(gid, [cells[i] for i in indices], [versions[i] for i in indices])
                 for gid, indices in by_group.items()]
        if not parts:
            return []
        pending = [self._cell_readers().submit(
            contextvars.copy_context().run, partial(self._group_cells, *part))
            for part in parts[1:]]
        first = parts[0]
        outcomes = [_outcome(lambda: self._group_cells(*first)),
                    *(_outcome(future.result) for future in pending)]
        answers: list[Cell | Unchanged | None] = [None] * len(cells)
        for indices, outcome in zip(by_group.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            for i, answer in zip(indices, outcome, strict=True):
                answers[i] = answer
        return answers

    def _cell_readers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CELL_READERS,
                                                thread_name_prefix="shards-readonly-cells")
            return self._pool

    def _group_cells(self, gid: int, cells: list[tuple[str, str]], known: list[int]
                     ) -> list[Cell | Unchanged | None]:
        return self._read(gid, lambda s: s.get_cells(cells, known=known),
                          lambda s: s.get_cells(cells, known=known, consistency="stale"))

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        def read(s: ShardedStore, consistency: Consistency) -> dict[str, Cell]:
            return s.get_row(row, prefix, after=after, limit=limit, reverse=reverse,
                             consistency=consistency)
        if consistency == "stale":
            return read(self.store, "stale")
        return self._read(self._gid(row), lambda s: read(s, "linearizable"),
                          lambda s: read(s, "stale"))

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        if consistency == "stale":
            return self.store.scan(shard, after_row, limit, consistency="stale")
        return self._read(self.group_of_shard(shard),
                          lambda s: s.scan(shard, after_row, limit),
                          lambda s: s.scan(shard, after_row, limit, consistency="stale"))

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        # Only the cell (a manifest) is read through the log; chunks come from any replica.
        if consistency == "stale":
            return self.store.get_stream(row, col, consistency="stale", offset=offset)
        return self._read(self._gid(row), lambda s: s.get_stream(row, col, offset=offset),
                          lambda s: s.get_stream(row, col, consistency="stale", offset=offset))

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        # Through the stream: a try that fails must not have written to ``out``.
        found = self.get_stream(row, col, consistency=consistency)
        if found is None:
            return None
        cell = self.get(row, col, consistency=consistency)  # the version, which a stream lacks
        for chunk in found[1]:
            out.write(chunk)
        return None if cell is None else cell.version

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        return self._write(self._gid(row), lambda s: s.put(row, col, value, ttl=ttl))

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        return self._write(self._gid(row), lambda s: s.put_stream(row, col, stream, ttl=ttl))

    def delete(self, row: str, col: str) -> bool:
        return self._write(self._gid(row), lambda s: s.delete(row, col))

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        return self._write(self._gid(row), lambda s: s.cput(
            row, col, new, old=old, if_version=if_version, ttl=ttl))

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        return self._write(self._gid(row), lambda s: s.mutate_row(
            row, conditions, mutations, ttl=ttl))

    # -- the rest ----------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        return self.store.status()

    def config_group(self) -> KeyValueStore | None:
        """The config group's store, unwrapped: the registry, never a user's data."""
        return self.store.config_group()

    def release(self) -> None:
        """Stop what the wrapper made (the probe thread, the quick twin); not the store."""
        self.health.stop()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
        if self.quick is not self.store:
            self.quick.close()

    def close(self) -> None:
        self.release()
        self.store.close()


def fallback_for(store: RoutedStore, quick_timeout: float = FIRST_TRY) -> ReadOnlyFallback:
    """:class:`ReadOnlyFallback` around a ``shards.Client``, with its quick twin and probe.

    Any other store (the unit tests' in-memory one) is one group that never loses
    its majority: wrapped, it behaves as itself.
    """
    if not isinstance(store, Client):
        return ReadOnlyFallback(store, store, lambda gid: None, lambda shard: 0)
    quick = Client(store.cluster, timeout=quick_timeout)

    def probe(gid: int) -> int:
        return quick.group_client(gid).noop()
    return ReadOnlyFallback(store, quick, probe, store.group_of_shard)

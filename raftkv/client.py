"""``raftkv.Client``: the thread-safe, pipelined client of one Raft group.

* Finds the leader and follows ``NotLeader`` hints; retries transient failures
  until its deadline.
* Every write carries ``(client id, sequence number)`` fixed before the first
  try: a retry reuses them, so the group applies a write exactly once.  A write
  whose deadline passes raises :class:`~raftkv.errors.OutcomeUnknown`.
* Values above :data:`INLINE_LIMIT` become content-addressed blobs: chunks go to
  every replica in parallel, and the cell (a manifest) is written once a majority
  holds each chunk (:mod:`raftkv.transfer`).  Readers get the bytes back, never
  the manifest; :meth:`Client.put_stream`, :meth:`Client.get_stream` and
  :meth:`Client.get_into` move values of any size without holding them whole.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, BinaryIO

from .blobs import CHUNK_SIZE, data_chunks, manifest_of, parse_manifest
from .cells import MAX_TTL
from .client_backup import BackupCalls
from .client_upkeep import UpkeepCalls
from .connection import Connection
from .errors import (
    AuthenticationFailed,
    ClientClosed,
    ConditionFailed,
    ConfigError,
    Frozen,
    NotLeader,
    OutcomeUnknown,
    ProtocolError,
    RaftKVError,
    Timeout,
    TooLarge,
    UnavailableError,
    UploadExpired,
    from_wire,
)
from .interface import (
    MAX_CELLS,
    Cell,
    Condition,
    Consistency,
    Mutation,
    Readable,
    StaleCell,
    Unchanged,
)
from .operations import unknown_operation
from .transfer import (
    READ_AHEAD,
    UPLOAD_LEASE,
    ReplicaPenalty,
    Upload,
    read_ahead,
    read_full,
    skip_bytes,
)

INLINE_LIMIT = 16 * 1024   # larger values are stored as blobs, beside Raft
ATTEMPT_TIMEOUT = 3.0      # one try at one replica; then the next (same request id)
FROZEN_PAUSE = 0.01        # seconds between tries of a write a backup's freeze refused


class _Session:
    """Sequence numbers of one client and the low-water mark of answered ones."""

    def __init__(self) -> None:
        self.client_id = random.getrandbits(62) + 1
        self._next = 1
        self._outstanding: set[int] = set()
        self._lock = threading.Lock()

    def begin(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            self._outstanding.add(seq)
            return seq

    def end(self, seq: int) -> None:
        with self._lock:
            self._outstanding.discard(seq)

    def ack(self) -> int:
        """Every sequence number at or below this one has been answered."""
        with self._lock:
            return (min(self._outstanding) if self._outstanding else self._next) - 1


class Client(UpkeepCalls, BackupCalls):
    """Talk to one group of replicas.

    :param addrs: the client ports (``host:port``) of the group's replicas.
    :param secret: the cluster secret.
    :param timeout: how long one call may take in all, retries included.
    :param upload_lease: seconds a large value's upload stays protected from
        garbage collection without renewal (it is renewed while the upload runs).
    """

    def __init__(self, addrs: Sequence[str], secret: bytes, *, timeout: float = 10.0,
                 upload_lease: float = UPLOAD_LEASE) -> None:
        if not addrs:
            raise ConfigError("a client needs at least one replica address")
        self.addrs = tuple(addrs)
        self.secret = secret
        self.timeout = timeout
        self._session = _Session()
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._leader = self.addrs[0]
        self.upload_lease = upload_lease
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=2 * len(self.addrs),
                                        thread_name_prefix="raftkv-status")
        self._fetch_pool = ThreadPoolExecutor(max_workers=2 * READ_AHEAD,
                                              thread_name_prefix="raftkv-fetch")
        self._penalty = ReplicaPenalty()
        self._refused: set[str] = set()  # replicas whose handshake refused our secret

    # -- plumbing ---------------------------------------------------------

    def connection(self, addr: str) -> Connection:
        """The open connection to replica ``addr`` (made on first use).

        Low-level: for raftkv's own helpers (:mod:`raftkv.transfer` pipelines
        chunks on it); everything else goes through the methods below.
        """
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            conn = self._connections.get(addr)
            if conn is not None and not conn.closed:
                return conn
        try:
            conn = Connection(addr, self.secret)  # connect outside the lock
        except AuthenticationFailed as exc:
            # One replica refusing is that replica's problem (an old secret file, another
            # cluster's process on the port): pass on to the others, as for one that is
            # down.  Only when every replica refuses is it ours: no retry changes a secret.
            with self._lock:
                self._refused.add(addr)
                everyone = self._refused.issuperset(self.addrs)
            if everyone:
                raise
            raise UnavailableError(f"{addr} refused this client's secret: {exc}") from exc
        with self._lock:
            self._refused.discard(addr)
            if self._closed:
                # close() ran while we connected: it cannot have seen this connection.
                conn.close()
                raise ClientClosed("the client is closed")
            old = self._connections.get(addr)
            if old is not None and not old.closed:
                conn.close()
                return old
            self._connections[addr] = conn
            return conn

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request to one replica; raises the answer's error."""
        conn = self.connection(addr)
        future = conn.send(request)
        try:
            answer = future.result(timeout)
        except FutureTimeout:
            conn.forget(future)
            raise Timeout(f"no answer from {addr} in {timeout:.1f}s") from None
        if "error" in answer:
            raise from_wire(answer)
        result = answer.get("ok")
        if not isinstance(result, dict):
            raise ProtocolError("answer without a result")
        return result

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        """Send to the leader, following hints and retrying until the deadline."""
        deadline = time.monotonic() + self.timeout
        seq = 0
        if write:
            seq = self._session.begin()
            request = {**request, "cid": self._session.client_id, "seq": seq}
        attempt = 0
        try:
            while not self._closed:
                addr = self._leader
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if write:
                    request["ack"] = self._session.ack()
                try:
                    result = self._send_to(addr, request, min(remaining, ATTEMPT_TIMEOUT))
                except NotLeader as exc:
                    self._leader = exc.leader if exc.leader in self.addrs else self._next_addr(addr)
                    if exc.leader is None or exc.leader == addr:
                        time.sleep(min(0.05 * 2 ** min(attempt, 4), 0.5))
                except UnavailableError:
                    self._leader = self._next_addr(addr)
                    time.sleep(min(0.02 * 2 ** min(attempt, 5), 0.5))
                else:
                    if "error" not in result:
                        return result
                    err = from_wire(result)
                    if not isinstance(err, Frozen):
                        raise err
                    # Not applied and not kept (raftkv/freezing.py): the same request
                    # again once the backup's moment has passed.
                    time.sleep(FROZEN_PAUSE)
                attempt += 1
        finally:
            if write:
                self._session.end(seq)
        if write:
            raise OutcomeUnknown(f"write not confirmed within {self.timeout}s; it may have applied")
        raise Timeout(f"no leader answered within {self.timeout}s")

    def _next_addr(self, addr: str) -> str:
        index = self.addrs.index(addr) if addr in self.addrs else -1
        return self.addrs[(index + 1) % len(self.addrs)]

    def _read(self, request: dict[str, Any], consistency: Consistency) -> dict[str, Any]:
        if consistency == "linearizable":
            return self._call(request, write=False)
        if consistency != "stale":
            raise ValueError("consistency is 'linearizable' or 'stale'")
        # A stale read takes any replica that answers, labelled as such.  A
        # replica's refusal (say, one that is behind) passes on to the next; the
        # last one is raised.
        last: RaftKVError = UnavailableError("no replica answered")
        for addr in self.addrs:
            try:
                result = self._send_to(addr, {**request, "consistency": "stale"},
                                       ATTEMPT_TIMEOUT)
            except UnavailableError as exc:
                last = exc
                continue
            if "error" not in result:
                return result
            last = from_wire(result)
        raise last

    # -- values and blobs -------------------------------------------------

    def _write_values(self, values: Sequence[bytes | Readable],
                      build: Callable[[list[tuple[bytes, bool]]], dict[str, Any]]) -> dict[str, Any]:
        """Store ``values`` (bytes or streams) and send ``build([(stored, is_blob), ...])``.

        Small bytes go inline; anything else becomes a blob under one upload
        intent, which the write retires.
        """
        inline = [(v, False) for v in values if isinstance(v, bytes) and len(v) <= INLINE_LIMIT]
        if len(inline) == len(values):
            return self._call(build(inline), write=True)
        with Upload(self, self.upload_lease) as upload:
            try:
                stored = [self._store(upload, v) for v in values]
                request = build(stored)
                if upload.registered:  # streams may turn out small: then nothing was uploaded
                    request["upload"] = upload.id
                return self._call(request, write=True)
            except (ConditionFailed, UploadExpired):
                raise  # the group has already dropped the intent
            except BaseException:
                upload.abandon()
                raise

    @staticmethod
    def _store(upload: Upload, value: bytes | Readable) -> tuple[bytes, bool]:
        if isinstance(value, bytes):
            if len(value) <= INLINE_LIMIT:
                return value, False
            return upload.write(io.BytesIO(value)), True
        first = read_full(value, INLINE_LIMIT + 1)
        if len(first) <= INLINE_LIMIT:
            return first, False
        return upload.write(_Prefixed(first, value)), True

    def put_chunk(self, name: str, data: bytes) -> None:
        """Store one chunk on every replica; return once a majority has it on disk."""
        stored, last = 0, "no replica tried"
        for addr in self.addrs:
            try:
                self._send_to(addr, {"op": "blob_put", "name": name, "data": data},
                              self.timeout)
                stored += 1
            except UnavailableError as exc:
                last = str(exc)
        if stored < len(self.addrs) // 2 + 1:
            raise UnavailableError(f"chunk {name[:12]} stored on {stored} replicas: {last}")

    def fetch_chunk(self, name: str, addrs: Sequence[str] | None = None) -> bytes:
        """One chunk, verified, from the first of ``addrs`` (default: the group) that has it."""
        for addr in self._penalty.order(tuple(addrs or self.addrs), name):
            try:
                result = self._send_to(addr, {"op": "blob_get", "name": name}, ATTEMPT_TIMEOUT)
            except UnavailableError:
                self._penalty.failed(addr)
                continue
            data: bytes = result.get("data", b"")
            if result.get("found") and hashlib.sha256(data).hexdigest() == name:
                return data
            self._penalty.failed(addr)
        raise UnavailableError(f"no replica could serve chunk {name[:12]}")

    def _chunks(self, manifest: bytes, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """``(size, chunks)`` of a blob, the chunks from byte ``offset`` on: the chunks
        before the one holding it are never fetched (a range, a seek, a resumed copy)."""
        parsed = parse_manifest(manifest)
        first, skip = divmod(min(offset, parsed.size), CHUNK_SIZE)
        names = data_chunks(parsed, self.fetch_chunk, first)
        chunks = read_ahead(self._fetch_pool, names, self.fetch_chunk)
        return parsed.size, (skip_bytes(chunks, skip) if skip else chunks)

    def _cell(self, result: dict[str, Any]) -> Cell | None:
        if not result.get("found"):
            return None
        return self._full_cell(result["version"], result["value"], bool(result.get("blob")),
                               bool(result.get("stale")))

    def _full_cell(self, version: int, value: bytes, blob: bool, stale: bool) -> Cell:
        """A cell as a read answered it: a blob's bytes fetched (its value is the manifest)."""
        if blob:
            value = b"".join(self._chunks(value)[1])
        return StaleCell(value, version) if stale else Cell(value, version)

    # -- the API ----------------------------------------------------------

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        """The cell at (row, col), or None.

        ``consistency="stale"`` reads any one replica that answers (it works
        with a single replica alive) and returns a :class:`StaleCell`.
        """
        return self._cell(self._read({"op": "get", "row": row, "col": col}, consistency))

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        """Store a value of any size; returns the cell's new version.

        ``ttl``: the cell expires this many seconds after the write, on the
        group's clock (reads then find it absent); without, it never does.
        """
        return self.put_stream(row, col, value, ttl=ttl)

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        """Store what ``stream.read()`` yields until EOF, never holding it whole.

        :raises UploadExpired: the upload stalled for longer than its lease.
        """
        expiry = ttl_field(ttl)
        version: int = self._write_values([stream], lambda s: {
            "op": "put", "row": row, "col": col, "value": s[0][0], "blob": s[0][1],
            **expiry})["version"]
        return version

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        """``(size, chunks)`` of the value at (row, col), fetched lazily; or None.

        ``size`` is the whole value's; the chunks start at byte ``offset`` (past the
        end: none), and what lies before it is not fetched.  A few chunks are fetched
        ahead of the consumer, each verified against its hash; a chunk that a replica
        lacks or holds corrupt comes from another.  ``consistency="stale"`` reads the
        cell (a manifest) from any one replica.
        """
        if offset < 0:
            raise ValueError("an offset is 0 or more")
        found = self._stream(row, col, consistency, offset)
        return None if found is None else found[:2]

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        """Write the value at (row, col) into ``out``; its version, or None if absent."""
        found = self._stream(row, col, consistency)
        if found is None:
            return None
        for chunk in found[1]:
            out.write(chunk)
        return found[2]

    def _stream(self, row: str, col: str, consistency: Consistency, offset: int = 0
                ) -> tuple[int, Iterator[bytes], int] | None:
        result = self._read({"op": "get", "row": row, "col": col}, consistency)
        if not result.get("found"):
            return None
        if result.get("blob"):
            return (*self._chunks(result["value"], offset), result["version"])
        value: bytes = result["value"]
        rest = value[offset:] if offset else value
        return len(value), iter([rest] if rest else []), result["version"]

    def delete(self, row: str, col: str) -> bool:
        """Delete a cell; True if it existed."""
        deleted: bool = self._call({"op": "delete", "row": row, "col": col},
                                   write=True)["deleted"]
        return deleted

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        """Store ``new`` only if the cell still holds ``old`` (None: absent) or ``if_version``.

        An expired cell is absent.  ``ttl`` as for :meth:`put`.
        :raises ConditionFailed: with the cell's current version (0 if absent).
        """
        condition: dict[str, Any] = ({"if_version": if_version} if if_version is not None else
                                     {"old": None if old is None else self._comparable(old)})
        expiry = ttl_field(ttl)
        version: int = self._write_values([new], lambda s: {
            "op": "cput", "row": row, "col": col, "value": s[0][0], "blob": s[0][1],
            **condition, **expiry})["version"]
        return version

    @staticmethod
    def _comparable(value: bytes) -> bytes:
        """What a cell holding ``value`` stores: the bytes, or the (deterministic) manifest."""
        return value if len(value) <= INLINE_LIMIT else manifest_of(value)

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        """Apply ``mutations`` to one row atomically if every condition holds.

        Conditions: ``("version", col, n)``, ``("absent", col)``, ``("value", col, bytes)``;
        an expired cell is absent.
        Mutations: ``("put", col, value)``, ``("delete", col)``.  ``ttl`` (as for
        :meth:`put`) applies to every cell the call puts.
        """
        expiry = ttl_field(ttl)
        conds = [[c[0], c[1], self._comparable(c[2])] if c[0] == "value" else list(c)
                 for c in conditions]
        values = [m[2] for m in mutations if m[0] == "put"]

        def build(stored: list[tuple[bytes, bool]]) -> dict[str, Any]:
            pending = iter(stored)
            muts = [["put", m[1], *next(pending)] if m[0] == "put" else list(m)
                    for m in mutations]
            return {"op": "mutate_row", "row": row, "conditions": conds, "mutations": muts,
                    **expiry}
        versions: dict[str, int] = self._write_values(values, build)["versions"]
        return versions

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        """Cells of any rows of this group in one request, answered from one state of the
        store (linearizable: by the leader without a log entry, as :meth:`get`).

        ``known[i]``, the version the caller holds of cell ``i`` (0: none), makes the
        answer :class:`Unchanged` while the cell still has it: no value comes back.
        A replica of a release without ``get_cells`` is read cell by cell instead.
        :raises TooLarge: more than :data:`~raftkv.interface.MAX_CELLS` cells.
        :raises WrongShard: one of the rows' shards is not served here.
        """
        request = cells_request(cells, known)
        if not request:
            return []
        try:
            result = self._read({"op": "get_cells", "cells": request}, consistency)
        except (ProtocolError, TooLarge) as exc:
            # A replica of a release without get_cells; or, while a group's reads go
            # through the log (an upgrade in progress), a request above the entry cap
            # (long names).  Cell by cell, each answer is the same (and a cell's own
            # TooLarge, a key too long, is raised by its get).
            if isinstance(exc, ProtocolError) and str(exc) != unknown_operation("get_cells"):
                raise
            return [self._cell_if_changed(row, col, version, consistency)
                    for row, col, version in request]
        stale = bool(result.get("stale"))
        return [self._decoded(answer, stale) for answer in result["cells"]]

    def _decoded(self, answer: list[Any] | None, stale: bool) -> Cell | Unchanged | None:
        """One cell of a ``get_cells`` answer: a blob's bytes are fetched as :meth:`get` does."""
        if answer is None:
            return None
        if len(answer) == 1:
            return Unchanged(answer[0], stale)
        version, value, blob = answer
        return self._full_cell(version, value, blob, stale)

    def _cell_if_changed(self, row: str, col: str, known: int,
                         consistency: Consistency) -> Cell | Unchanged | None:
        """``get_cells``' answer for one cell, from a ``get`` (replicas that predate it)."""
        result = self._read({"op": "get", "row": row, "col": col}, consistency)
        if result.get("found") and 0 < known == result["version"]:
            return Unchanged(known, bool(result.get("stale")))
        return self._cell(result)

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        """The cells of ``row`` whose column starts with ``prefix`` (large values included),
        in column order, or descending with ``reverse``: those after ``after`` (before it
        with ``reverse``; ``""`` then starts at the last column), ``limit`` at most.

        The replica reads each page straight off its table's key range; pages of at
        most :data:`~raftkv.pagereads.MAX_ROW_CELLS_RETURNED` follow one another until
        ``limit`` is reached or the range ends (each page is one read: a row that
        changes meanwhile may show cells of two moments).
        """
        if limit is not None and limit < 0:
            raise ValueError("limit is a number of cells, 0 or more")
        cells: dict[str, Cell] = {}
        for col, version, value, blob, stale in self._row_pages(row, prefix, after, limit,
                                                                reverse, consistency):
            cells[col] = self._full_cell(version, value, blob, stale)
        return cells

    def _row_pages(self, row: str, prefix: str, after: str, limit: int | None, reverse: bool,
                   consistency: Consistency) -> Iterator[tuple[str, int, bytes, bool, bool]]:
        """``(column, version, value, is_blob, stale)`` of the cells ``get_row`` returns."""
        taken = 0
        while limit is None or taken < limit:
            request: dict[str, Any] = {"op": "get_row", "row": row, "prefix": prefix,
                                       "after": after}
            if limit is not None:
                request["limit"] = limit - taken
            if reverse:
                request["reverse"] = True
            result = self._read(request, consistency)
            if reverse and not result.get("reverse"):
                # A replica that predates reverse pages ignored it and paged forward.
                yield from self._reversed_here(row, prefix, after,
                                               None if limit is None else limit - taken,
                                               consistency)
                return
            stale = bool(result.get("stale"))
            for col, version, value, blob in result["cells"]:
                yield col, version, value, blob, stale
                after = col
                taken += 1
            if not result.get("more"):
                return

    def _reversed_here(self, row: str, prefix: str, before: str, limit: int | None,
                       consistency: Consistency) -> Iterator[tuple[str, int, bytes, bool, bool]]:
        """A reverse page from forward pages: every column under ``prefix`` read, the
        last ``limit`` before ``before`` kept (during an upgrade only)."""
        found = [cell for cell in self._row_pages(row, prefix, "", None, False, consistency)
                 if not before or cell[0] < before]
        found.reverse()
        yield from found if limit is None else found[:limit]

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        """Up to ``limit`` rows of ``shard`` after ``after_row``; large values summarised.

        A blob's cell holds its manifest here, not its bytes: a browser of raw
        data should not pull gigabytes.  :func:`raftkv.blobs.read_manifest` reads it.
        A row carries at most 1000 cells or about 1 MiB of values (``get_row``
        reads all of it).  Fewer than ``limit`` rows come back only at the shard's
        end: a replica's answer that stopped at its byte budget is followed by the next.
        """
        rows: list[tuple[str, dict[str, Cell]]] = []
        while len(rows) < limit:
            result = self._read({"op": "scan", "shard": shard, "after": after_row,
                                 "limit": limit - len(rows), "pages": True}, consistency)
            rows.extend((row, {col: Cell(value, version) for col, version, value, _blob in cells})
                        for row, cells in result["rows"])
            if not result.get("more") or not result["rows"]:
                return rows
            after_row = rows[-1][0]
        return rows

    def status(self) -> list[dict[str, Any]]:
        """Each replica's status; ``alive`` is False for one that did not answer."""
        def one(addr: str) -> dict[str, Any]:
            try:
                return {"alive": True, **self._send_to(addr, {"op": "status"}, 2.0)}
            except RaftKVError as exc:
                return {"alive": False, "addr": addr, "error": str(exc)}
        return list(self._pool.map(one, self.addrs))

    def close(self) -> None:
        """Close every connection; calls in progress or made later fail at once."""
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
        self._pool.shutdown(wait=False)
        self._fetch_pool.shutdown(wait=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cells_request(cells: Sequence[tuple[str, str]], known: Sequence[int] | None
                  ) -> list[list[Any]]:
    """``get_cells``' cells as sent: ``[row, column, known version (0: none)]`` each.

    :raises TooLarge: more than :data:`~raftkv.interface.MAX_CELLS`.
    :raises ValueError: ``known`` does not give one version per cell.
    """
    if len(cells) > MAX_CELLS:
        raise TooLarge(f"get_cells reads at most {MAX_CELLS} cells at once, not {len(cells)}: "
                       "split the call")
    versions = [0] * len(cells) if known is None else list(known)
    if len(versions) != len(cells) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in versions):
        raise ValueError("known gives one version (an int, 0: none) per cell")
    return [[row, col, version] for (row, col), version in zip(cells, versions, strict=True)]


def ttl_field(ttl: float | None) -> dict[str, float]:
    """The ``ttl`` field of a write: none for a permanent cell."""
    if ttl is None:
        return {}
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (
            math.isfinite(ttl) and ttl > 0):
        raise ValueError("ttl is a positive number of seconds")
    return {"ttl": min(float(ttl), MAX_TTL)}


class _Prefixed(io.RawIOBase):
    """``first`` followed by the rest of ``stream``."""

    def __init__(self, first: bytes, stream: Readable) -> None:
        self._first = first
        self._stream = stream

    def read(self, size: int | None = -1) -> bytes:
        if self._first:
            if size is None or size < 0:
                size = len(self._first)
            out, self._first = self._first[:size], self._first[size:]
            return out
        return self._stream.read(-1 if size is None else size)

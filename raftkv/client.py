"""``raftkv.Client``: the thread-safe, pipelined client of one Raft group.

* Finds the leader and follows ``NotLeader`` hints; retries transient failures
  until its deadline.
* Every write carries ``(client id, sequence number)`` fixed before the first
  try: a retry reuses them, so the group applies a write exactly once.  A write
  whose deadline passes raises :class:`~raftkv.errors.OutcomeUnknown`.
* Values above :data:`INLINE_LIMIT` become content-addressed blobs: chunks go to
  every replica in parallel, and the cell (a manifest) is written once a majority
  holds each chunk.  Readers get the bytes back, never the manifest.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, BinaryIO, NamedTuple

from .blobs import CHUNK_SIZE, make_manifest, read_manifest
from .connection import Connection
from .errors import (
    ConfigError,
    NotLeader,
    OutcomeUnknown,
    ProtocolError,
    RaftKVError,
    Timeout,
    TooLarge,
    UnavailableError,
    from_wire,
)

INLINE_LIMIT = 16 * 1024   # larger values are stored as blobs, beside Raft
ATTEMPT_TIMEOUT = 3.0      # one try at one replica; then the next (same request id)


class Cell(NamedTuple):
    """A cell's value and version, as the group's majority agreed on it."""

    value: bytes
    version: int

    stale = False  # a class attribute, not a field: see StaleCell


class StaleCell(Cell):
    """A cell read from one replica without asking the majority: possibly out of date."""

    __slots__ = ()
    stale = True


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


class Client:
    """Talk to one group of replicas.

    :param addrs: the client ports (``host:port``) of the group's replicas.
    :param secret: the cluster secret.
    :param timeout: how long one call may take in all, retries included.
    """

    def __init__(self, addrs: Sequence[str], secret: bytes, *, timeout: float = 10.0) -> None:
        if not addrs:
            raise ConfigError("a client needs at least one replica address")
        self.addrs = tuple(addrs)
        self.secret = secret
        self.timeout = timeout
        self._session = _Session()
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._leader = self.addrs[0]
        self._pool = ThreadPoolExecutor(max_workers=2 * len(self.addrs),
                                        thread_name_prefix="raftkv-blob")

    # -- plumbing ---------------------------------------------------------

    def _connection(self, addr: str) -> Connection:
        with self._lock:
            conn = self._connections.get(addr)
            if conn is not None and not conn.closed:
                return conn
        conn = Connection(addr, self.secret)  # connect outside the lock
        with self._lock:
            old = self._connections.get(addr)
            if old is not None and not old.closed:
                conn.close()
                return old
            self._connections[addr] = conn
            return conn

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request to one replica; raises the answer's error."""
        conn = self._connection(addr)
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
            while True:
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
                    if "error" in result:
                        raise from_wire(result)
                    return result
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

    def _read(self, request: dict[str, Any], consistency: str) -> dict[str, Any]:
        if consistency == "linearizable":
            return self._call(request, write=False)
        if consistency != "stale":
            raise ValueError("consistency is 'linearizable' or 'stale'")
        # A stale read takes any replica that answers, labelled as such.
        last: RaftKVError = UnavailableError("no replica answered")
        for addr in self.addrs:
            try:
                return self._send_to(addr, {**request, "consistency": "stale"}, ATTEMPT_TIMEOUT)
            except UnavailableError as exc:
                last = exc
        raise last

    # -- values and blobs -------------------------------------------------

    def _store_value(self, value: bytes) -> tuple[bytes, bool]:
        """What the cell holds for ``value``: the bytes, or a blob manifest."""
        if len(value) <= INLINE_LIMIT:
            return value, False
        return self._upload(io.BytesIO(value)), True

    def _upload(self, stream: BinaryIO) -> bytes:
        digests: list[bytes] = []
        size = 0
        while chunk := _read_full(stream, CHUNK_SIZE):
            digest = hashlib.sha256(chunk).digest()
            self._put_chunk(digest.hex(), chunk)
            digests.append(digest)
            size += len(chunk)
        manifest = make_manifest(size, digests)
        if len(manifest) > INLINE_LIMIT:
            raise TooLarge(f"a value of {size} bytes is above the largest blob")
        return manifest

    def _put_chunk(self, name: str, data: bytes) -> None:
        """Store a chunk on every replica; return once a majority has it on disk."""
        futures = [self._pool.submit(self._send_to, addr, {"op": "blob_put", "name": name,
                                                           "data": data}, self.timeout)
                   for addr in self.addrs]
        needed = len(self.addrs) // 2 + 1
        stored = 0
        failures: list[BaseException] = []
        for future in futures:  # the slow minority keeps going in the background
            try:
                future.result()
                stored += 1
            except RaftKVError as exc:
                failures.append(exc)
            if stored >= needed:
                return
        raise UnavailableError(f"chunk stored on {stored} of {len(self.addrs)} replicas: {failures[0]}")

    def _fetch_chunk(self, name: str) -> bytes:
        addrs = sorted(self.addrs, key=lambda a: a != self._leader)
        for addr in addrs:
            try:
                result = self._send_to(addr, {"op": "blob_get", "name": name}, ATTEMPT_TIMEOUT)
            except UnavailableError:
                continue
            data = result.get("data", b"")
            if result.get("found") and hashlib.sha256(data).hexdigest() == name:
                return data
        raise UnavailableError(f"no replica could serve chunk {name[:12]}")

    def _chunks(self, manifest: bytes) -> tuple[int, Iterator[bytes]]:
        size, names = read_manifest(manifest)
        return size, (self._fetch_chunk(name) for name in names)

    def _cell(self, result: dict[str, Any]) -> Cell | None:
        if not result.get("found"):
            return None
        value = result["value"]
        if result.get("blob"):
            value = b"".join(self._chunks(value)[1])
        return Cell(value, result["version"])

    # -- the API ----------------------------------------------------------

    def get(self, row: str, col: str, *, consistency: str = "linearizable") -> Cell | None:
        """The cell at (row, col), or None.

        ``consistency="stale"`` reads any one replica that answers (it works
        with a single replica alive) and returns a :class:`StaleCell`.
        """
        result = self._read({"op": "get", "row": row, "col": col}, consistency)
        cell = self._cell(result)
        if cell is not None and result.get("stale"):
            return StaleCell(*cell)
        return cell

    def put(self, row: str, col: str, value: bytes) -> int:
        """Store a value of any size; returns the cell's new version."""
        stored, blob = self._store_value(value)
        return self._call({"op": "put", "row": row, "col": col, "value": stored, "blob": blob},
                          write=True)["version"]

    def put_stream(self, row: str, col: str, stream: BinaryIO) -> int:
        """Store what ``stream.read()`` yields until EOF, never holding it whole."""
        first = _read_full(stream, INLINE_LIMIT + 1)
        if len(first) <= INLINE_LIMIT:
            return self.put(row, col, first)
        manifest = self._upload(_Prefixed(first, stream))
        return self._call({"op": "put", "row": row, "col": col, "value": manifest, "blob": True},
                          write=True)["version"]

    def get_stream(self, row: str, col: str) -> tuple[int, Iterator[bytes]] | None:
        """``(size, chunks)`` of the value at (row, col), fetched lazily; or None."""
        result = self._read({"op": "get", "row": row, "col": col}, "linearizable")
        if not result.get("found"):
            return None
        if result.get("blob"):
            return self._chunks(result["value"])
        return len(result["value"]), iter([result["value"]])

    def delete(self, row: str, col: str) -> bool:
        """Delete a cell; True if it existed."""
        return self._call({"op": "delete", "row": row, "col": col}, write=True)["deleted"]

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None) -> int:
        """Store ``new`` only if the cell still holds ``old`` (None: absent) or ``if_version``.

        :raises ConditionFailed: with the cell's current version (0 if absent).
        """
        stored, blob = self._store_value(new)
        request: dict[str, Any] = {"op": "cput", "row": row, "col": col, "value": stored,
                                   "blob": blob}
        if if_version is not None:
            request["if_version"] = if_version
        else:
            request["old"] = None if old is None else self._comparable(old)
        return self._call(request, write=True)["version"]

    def _comparable(self, value: bytes) -> bytes:
        """What a cell holding ``value`` stores: the bytes, or the (deterministic) manifest."""
        if len(value) <= INLINE_LIMIT:
            return value
        digests = [hashlib.sha256(value[i:i + CHUNK_SIZE]).digest()
                   for i in range(0, len(value), CHUNK_SIZE)]
        return make_manifest(len(value), digests)

    def mutate_row(self, row: str, conditions: Sequence[tuple[Any, ...]],
                   mutations: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        """Apply ``mutations`` to one row atomically if every condition holds.

        Conditions: ``("version", col, n)``, ``("absent", col)``, ``("value", col, bytes)``.
        Mutations: ``("put", col, value)``, ``("delete", col)``.
        """
        conds = [[c[0], c[1], self._comparable(c[2])] if c[0] == "value" else list(c)
                 for c in conditions]
        muts: list[list[Any]] = []
        for m in mutations:
            if m[0] == "put":
                stored, blob = self._store_value(m[2])
                muts.append(["put", m[1], stored, blob])
            else:
                muts.append(list(m))
        return self._call({"op": "mutate_row", "row": row, "conditions": conds,
                           "mutations": muts}, write=True)["versions"]

    def get_row(self, row: str, prefix: str = "", *,
                consistency: str = "linearizable") -> dict[str, Cell]:
        """Every cell of ``row`` whose column starts with ``prefix`` (large values included)."""
        cells: dict[str, Cell] = {}
        after = ""
        while True:
            result = self._read({"op": "get_row", "row": row, "prefix": prefix, "after": after},
                                consistency)
            for col, version, value, blob in result["cells"]:
                cell = self._cell({"found": True, "version": version, "value": value,
                                   "blob": blob})
                assert cell is not None
                cells[col] = cell
                after = col
            if not result.get("more"):
                return cells

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: str = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        """Up to ``limit`` rows of ``shard`` after ``after_row``; large values summarised.

        A blob's cell holds its manifest here, not its bytes: a browser of raw
        data should not pull gigabytes.  :func:`raftkv.blobs.read_manifest` reads it.
        """
        result = self._read({"op": "scan", "shard": shard, "after": after_row, "limit": limit},
                            consistency)
        return [(row, {col: Cell(value, version) for col, version, value, _blob in cells})
                for row, cells in result["rows"]]

    def status(self) -> list[dict[str, Any]]:
        """Each replica's status; ``alive`` is False for one that did not answer."""
        def one(addr: str) -> dict[str, Any]:
            try:
                return {"alive": True, **self._send_to(addr, {"op": "status"}, 2.0)}
            except RaftKVError as exc:
                return {"alive": False, "addr": addr, "error": str(exc)}
        return list(self._pool.map(one, self.addrs))

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first (streams may return less)."""
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


class _Prefixed(io.RawIOBase):
    """``first`` followed by the rest of ``stream``."""

    def __init__(self, first: bytes, stream: BinaryIO) -> None:
        self._first = first
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._first:
            out, self._first = self._first[:size], self._first[size:]
            return out
        return self._stream.read(size)

"""The client's blob calls: values of any size, streamed, and the chunks they travel in.

A mixin of :class:`raftkv.Client`.  Values above :data:`INLINE_LIMIT` become
content-addressed blobs: chunks go to every replica in parallel, and the cell (a
manifest) is written once a majority holds each chunk (:mod:`raftkv.transfer`).
Readers get the bytes back, never the manifest; :meth:`BlobCalls.put_stream`,
:meth:`BlobCalls.get_stream` and :meth:`BlobCalls.get_into` move values of any size
without holding them whole (docs/store-promises.md, "Blobs").
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .blobs import CHUNK_SIZE, data_chunks, manifest_of, parse_manifest
from .client_cells import ttl_field
from .connection import ATTEMPT_TIMEOUT
from .errors import ConditionFailed, UnavailableError, UploadExpired
from .interface import Cell, Consistency, Readable, StaleCell
from .transfer import ReplicaPenalty, Upload, read_ahead, read_full, skip_bytes

if TYPE_CHECKING:
    from .client import Client

INLINE_LIMIT = 16 * 1024   # larger values are stored as blobs, beside Raft


class BlobCalls:
    """Mixin of :class:`raftkv.client.Client` (which provides ``_call``, ``_read``,
    ``_send_to`` and the pools and settings below)."""

    addrs: tuple[str, ...]
    timeout: float
    upload_lease: float
    _penalty: ReplicaPenalty
    _fetch_pool: ThreadPoolExecutor

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _read(self, request: dict[str, Any], consistency: Consistency) -> dict[str, Any]:
        raise NotImplementedError

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def _write_values(self, values: Sequence[bytes | Readable],
                      build: Callable[[list[tuple[bytes, bool]]], dict[str, Any]]) -> dict[str, Any]:
        """Store ``values`` (bytes or streams) and send ``build([(stored, is_blob), ...])``.

        Small bytes go inline; anything else becomes a blob under one upload
        intent, which the write retires.
        """
        inline = [(v, False) for v in values if isinstance(v, bytes) and len(v) <= INLINE_LIMIT]
        if len(inline) == len(values):
            return self._call(build(inline), write=True)
        # An upload drives the whole client: its connections and its intent calls.
        with Upload(cast("Client", self), self.upload_lease) as upload:
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


    def _full_cell(self, version: int, value: bytes, blob: bool, stale: bool) -> Cell:
        """A cell as a read answered it: a blob's bytes fetched (its value is the manifest)."""
        if blob:
            value = b"".join(self._chunks(value)[1])
        return StaleCell(value, version) if stale else Cell(value, version)


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


    @staticmethod
    def _comparable(value: bytes) -> bytes:
        """What a cell holding ``value`` stores: the bytes, or the (deterministic) manifest."""
        return value if len(value) <= INLINE_LIMIT else manifest_of(value)


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

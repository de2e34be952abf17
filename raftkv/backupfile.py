"""A backup file: the cells and chunks of every group, as plain data.

A backup is read by a person's restore on another machine, perhaps years later,
perhaps after it was damaged or swapped for someone else's file; so it holds
nothing but msgpack of numbers, strings and bytes, never a pickle and never a
copy of an LMDB file (which LMDB would trust).  Every record is checked as it is
read (:class:`BackupReader`), and a file whose bytes do not match the digest at
its end is refused whole, before anything restored from it is put in place.

Layout::

    MAGIC | record | record | ... | end record

    record = length (4 bytes, big-endian) | msgpack [kind, body]

    "cluster"  {"format": 1, "shards": n, "created": t, "groups": [gid, ...],
                "secret_check": a key derived from the cluster's secret,
                "header_sha256": digest of the rest of this record}              first
    "group"    {"gid", "applied_index", "clock", "counters": {shard: n},
                "config_num", "owned": [shard, ...] | None}                  starts a group
    "cells"    [[shard, row, column, version, is_blob, expires | None, value], ...]
    "chunk"    [name, bytes]                       a blob chunk of the group, named by its SHA-256
    "end"      {"groups": n, "cells": n, "chunks": n, "sha256": digest of every byte before}

Within a group, cells come in the store's key order and each chunk once.  The
story (what the cut is, how a file is saved and restored) is in docs/operations.md,
"Backup and restore".
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

from . import diskkeys
from .blobs import CHUNK_SIZE, parse_manifest
from .cells import MAX_CELL_KEY
from .cluster import derive_key
from .errors import ProtocolError
from .files import PRIVATE_FILE, fsync_dir
from .keys import shard_of

MAGIC = b"RAFTKV-BACKUP\n\x00\x01"
FORMAT = 1
LENGTH = struct.Struct(">I")
MAX_RECORD = CHUNK_SIZE + 4096        # a chunk and its name; a page of cells is smaller
CELLS_PAGE_BYTES = 1 << 20           # a cells record holds about this much, at most MAX_RECORD
MAX_VALUE = 64 * 1024                # a cell's value (inline values stay under the entry cap)
MAX_SHARDS = 1 << 16
MAX_NUMBER = 1 << 63


class BackupDamaged(ValueError):
    """The file is not a whole, intact backup of this format: nothing is restored from it."""


def secret_check(secret: bytes) -> bytes:
    """What a backup records of the secret of the cluster it was saved from: enough to
    tell a restore that its secret differs (keys derived from the secret, such as the
    app passwords' (shards/model/apppasswords.py), stop matching then), nothing more."""
    return derive_key(secret, "backup-secret-check")[:16]


@dataclass(frozen=True)
class ClusterHeader:
    shards: int
    created: float
    groups: tuple[int, ...]
    secret_check: bytes


@dataclass(frozen=True)
class GroupHeader:
    gid: int
    applied_index: int
    clock: float
    counters: dict[int, int]
    config_num: int
    owned: tuple[int, ...] | None


@dataclass(frozen=True)
class BackupCell:
    shard: int
    row: str
    col: str
    version: int
    is_blob: bool
    expires: float | None
    value: bytes

    def key(self) -> bytes:
        return diskkeys.cell_key(self.shard, self.row, self.col)

    def to_list(self) -> list[Any]:
        return [self.shard, self.row, self.col, self.version, self.is_blob, self.expires,
                self.value]


@dataclass(frozen=True)
class Chunk:
    name: str
    data: bytes


@dataclass(frozen=True)
class End:
    groups: int
    cells: int
    chunks: int


Record = ClusterHeader | GroupHeader | list[BackupCell] | Chunk | End


# -- writing -------------------------------------------------------------------------

class BackupWriter:
    """Writes a backup under a temporary name; :meth:`finish` syncs it and renames it in."""

    def __init__(self, path: Path, shards: int, groups: list[int], created: float,
                 secret: bytes) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.groups = self.cells = self.chunks = 0
        self._write_raw(MAGIC)
        header = {"format": FORMAT, "shards": shards, "created": created, "groups": groups,
                  "secret_check": secret_check(secret)}
        self._record("cluster", {**header, "header_sha256": _header_digest(header)})

    def _write_raw(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)

    def _record(self, kind: str, body: Any) -> None:
        packed = msgpack.packb([kind, body], use_bin_type=True)
        assert len(packed) <= MAX_RECORD, "a record above the reader's limit"
        self._write_raw(LENGTH.pack(len(packed)) + packed)

    def group(self, header: GroupHeader) -> None:
        self.groups += 1
        self._record("group", {"gid": header.gid, "applied_index": header.applied_index,
                               "clock": header.clock, "counters": header.counters,
                               "config_num": header.config_num,
                               "owned": None if header.owned is None else list(header.owned)})

    def cells_page(self, cells: list[BackupCell]) -> None:
        if cells:
            self.cells += len(cells)
            self._record("cells", [c.to_list() for c in cells])

    def chunk(self, name: str, data: bytes) -> None:
        self.chunks += 1
        self._record("chunk", [name, data])

    def finish(self) -> None:
        body = {"groups": self.groups, "cells": self.cells, "chunks": self.chunks,
                "sha256": self._digest.digest()}
        packed = msgpack.packb(["end", body], use_bin_type=True)
        self._file.write(LENGTH.pack(len(packed)) + packed)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


# -- reading -------------------------------------------------------------------------

class BackupReader:
    """Iterates the records of a backup file, each checked; :class:`BackupDamaged` at
    the first thing wrong.  The caller must read to the end: only the end record
    proves that everything before it is intact."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.cluster: ClusterHeader | None = None
        self._group: GroupHeader | None = None
        self._seen_groups: set[int] = set()
        self._last_key = b""
        self._counts = [0, 0, 0]  # groups, cells, chunks

    def __iter__(self) -> Iterator[Record]:
        if self._read(len(MAGIC), "its beginning") != MAGIC:
            raise BackupDamaged("not a raftkv backup file (it does not begin as one)")
        while True:
            before = self._digest.digest()
            kind, body = self._next_record()
            if kind == "end":
                end = self._end(body, before)
                if self._stream.read(1):
                    raise BackupDamaged("bytes follow the end of the backup")
                yield end
                return
            yield self._parse(kind, body)

    def _read(self, size: int, what: str) -> bytes:
        data = self._stream.read(size)
        if len(data) < size:
            raise BackupDamaged(f"the backup file is cut short (in {what})")
        self._digest.update(data)
        return data

    def _next_record(self) -> tuple[str, Any]:
        (size,) = LENGTH.unpack(self._read(LENGTH.size, "a record's length"))
        if size > MAX_RECORD:
            raise BackupDamaged(f"a record of {size} bytes, above the {MAX_RECORD} a backup holds")
        raw = self._read(size, "a record")
        try:
            # No larger than the record itself, which msgpack's limits follow.
            record = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:  # noqa: BLE001 - whatever msgpack finds wrong
            raise BackupDamaged(f"a record that is not msgpack ({type(exc).__name__})") from None
        if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], str)):
            raise BackupDamaged("a record that is not [kind, body]")
        return record[0], record[1]

    def _parse(self, kind: str, body: Any) -> Record:
        try:
            if kind == "cluster" and self.cluster is None:
                self.cluster = _cluster(body)
                return self.cluster
            if self.cluster is None:
                raise BackupDamaged("the backup does not begin with its cluster record")
            if kind == "group":
                self._group = _group(body, self.cluster)
                if self._group.gid in self._seen_groups:
                    raise BackupDamaged(f"group {self._group.gid} appears twice")
                self._seen_groups.add(self._group.gid)
                self._last_key = b""
                self._counts[0] += 1
                return self._group
            if self._group is None:
                raise BackupDamaged(f"a {kind!r} record before any group")
            if kind == "cells":
                cells = self._cells(body, self.cluster.shards)
                self._counts[1] += len(cells)
                return cells
            if kind == "chunk":
                self._counts[2] += 1
                return _chunk(body)
        except (TypeError, ValueError, KeyError, OverflowError, ProtocolError) as exc:
            if isinstance(exc, BackupDamaged):
                raise
            raise BackupDamaged(f"a malformed {kind!r} record: {exc}") from None
        raise BackupDamaged(f"an unexpected {kind!r} record")

    def _cells(self, body: Any, shards: int) -> list[BackupCell]:
        if not isinstance(body, list):
            raise TypeError("a cells record is a list")
        cells = [_cell(fields, shards) for fields in body]
        for cell in cells:
            key = cell.key()
            if key <= self._last_key:
                raise ValueError("cells out of order, or one twice")
            self._last_key = key
        return cells

    def _end(self, body: Any, digest: bytes) -> End:
        if self.cluster is None or not isinstance(body, dict):
            raise BackupDamaged("an end record out of place")
        if body.get("sha256") != digest:
            raise BackupDamaged("the backup's checksum does not match its contents: damaged")
        counts = [body.get("groups"), body.get("cells"), body.get("chunks")]
        if counts != self._counts:
            raise BackupDamaged(f"the backup's counts {counts} do not match its records "
                                f"{self._counts}")
        return End(*self._counts)


def _number(value: Any, what: str, low: int = 0, high: int = MAX_NUMBER) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise ValueError(f"{what} is not a number from {low} below {high}")
    return value


def _time(value: Any, what: str) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{what} is not a finite, non-negative time")
    return float(value)


def _header_digest(header: dict[str, Any]) -> bytes:
    return hashlib.sha256(msgpack.packb(header, use_bin_type=True)).digest()


def _cluster(body: Any) -> ClusterHeader:
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BackupDamaged(f"a backup of a format this code does not read "
                            f"({body.get('format') if isinstance(body, dict) else body!r})")
    # Checked at once, not with the whole file's digest at the end: a restore decides
    # from the header whether the backup fits the cluster, and must not blame a cluster
    # file for a damaged header.
    header = {k: v for k, v in body.items() if k != "header_sha256"}
    if body.get("header_sha256") != _header_digest(header):
        raise BackupDamaged("the backup's header is damaged (its checksum does not match)")
    groups = body["groups"]
    if not isinstance(groups, list) or len(set(groups)) != len(groups) or len(groups) > 1024:
        raise ValueError("the group list")
    check = body["secret_check"]
    if not isinstance(check, bytes) or len(check) != 16:
        raise ValueError("the secret check")
    return ClusterHeader(_number(body["shards"], "the shard count", 1, MAX_SHARDS),
                         _time(body["created"], "the time it was made"),
                         tuple(_number(g, "a group id") for g in groups), check)


def _group(body: Any, cluster: ClusterHeader) -> GroupHeader:
    gid = _number(body["gid"], "a group id")
    if gid not in cluster.groups:
        raise ValueError(f"group {gid} is not in the cluster record")
    counters = body["counters"]
    if not isinstance(counters, dict):
        raise TypeError("counters")
    owned = body["owned"]
    if owned is not None:
        owned = tuple(_number(s, "an owned shard", 0, cluster.shards) for s in owned)
    return GroupHeader(
        gid=gid, applied_index=_number(body["applied_index"], "an applied index"),
        clock=_time(body["clock"], "a group's clock"),
        counters={_number(k, "a shard", 0, cluster.shards): _number(v, "a counter")
                  for k, v in counters.items()},
        config_num=_number(body["config_num"], "a configuration number"), owned=owned)


def _cell(fields: Any, shards: int) -> BackupCell:
    if not isinstance(fields, list) or len(fields) != 7:
        raise ValueError("a cell is seven fields")
    shard, row, col, version, is_blob, expires, value = fields
    if not (isinstance(row, str) and isinstance(col, str) and isinstance(is_blob, bool)
            and isinstance(value, bytes)):
        raise TypeError("a cell's row, column, flag or value")
    if len(value) > MAX_VALUE:
        raise ValueError(f"a cell value of {len(value)} bytes")
    cell = BackupCell(_number(shard, "a shard", 0, shards), row, col,
                      _number(version, "a version", 1), is_blob,
                      None if expires is None else _time(expires, "an expiry"), value)
    if shard_of(row, shards) != cell.shard:
        raise ValueError(f"row {row[:40]!r} is not of shard {cell.shard}")
    if len(cell.key()) > MAX_CELL_KEY:
        raise ValueError("a row and column too long for the store")
    if is_blob:
        parse_manifest(value)  # ProtocolError if it is not one
    return cell


def _chunk(body: Any) -> Chunk:
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)
            and isinstance(body[1], bytes)):
        raise TypeError("a chunk is [name, bytes]")
    name, data = body
    if len(data) > CHUNK_SIZE or hashlib.sha256(data).hexdigest() != name:
        raise ValueError("a chunk whose bytes do not match its name")
    return Chunk(name, data)

"""How the state machine's table is laid out as keys and values of an ordered store on disk.

Every engine we consider (docs/state-on-disk.md) keeps byte-string keys in
byte order, so the layout is chosen for that order to be the order the store
reads in: a row's columns are one contiguous, sorted range, and so are a
shard's rows.  ``get_row`` (with ``prefix`` and ``after``), ``scan`` and a
shard's export pages then become range reads, with no per-call sorting.

A cell's key is ``shard (4 bytes, big-endian) + row + 0x00 + column``, both
names in UTF-8:

* UTF-8 orders strings by code point, as Python compares ``str``, and never
  contains the bytes 0xFE or 0xFF.
* A row may contain U+0000, so a 0x00 inside the row is written 0x00 0xFF and
  the row ends with a lone 0x00 (FoundationDB's tuple layer escapes strings the
  same way).  A terminator is followed by a column's first byte, never 0xFF, so
  it sorts below an escaped 0x00: row ``"a"`` comes before row ``"a\\0"``, as
  in Python.  The column is last and needs no escape.
* Hence no component of a key begins with 0xFF, and ``prefix + b"\\xff"``
  bounds exactly the keys under ``prefix`` whenever the prefix ends where a
  component (or a column's prefix) ends: a range never leaks into the next row
  or shard.

A cell's value is ``version (8 bytes) + flags (1) + expiry (8, a double) +
bytes``; the expiry is meaningful only when its flag is set.  Cells that expire
are also indexed by ``expiry + cell key``: a non-negative double's big-endian
bytes sort as the number does, so the cells due by a time are one range from
the start.  The exactly-once results are keyed ``client id + sequence
number``, so a client's answers at or below its ``ack`` are one range too.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

SHARD = struct.Struct(">I")
RESULT = struct.Struct(">QQ")           # client id, sequence number
EXPIRY = struct.Struct(">d")
CELL_HEADER = struct.Struct(">QBd")     # version, flags, expiry
BLOB = 0x01                             # flags: the value is a blob manifest
EXPIRES = 0x02                          # flags: the expiry field is set
TERMINATOR = b"\x00"                    # ends a row's name
ESCAPED_NUL = b"\x00\xff"               # a U+0000 inside a row's name
END = b"\xff"                           # begins no component: prefix + END bounds the prefix


class CellValue(NamedTuple):
    """A cell as the disk holds it (the state machine's ``Cell``, in fixed fields)."""

    version: int
    value: bytes
    is_blob: bool
    expires: float | None


class CellKey(NamedTuple):
    shard: int
    row: str
    col: str


# -- keys of cells ---------------------------------------------------------------


def shard_prefix(shard: int) -> bytes:
    """The prefix of every cell key of ``shard``."""
    return SHARD.pack(shard)


def row_prefix(shard: int, row: str) -> bytes:
    """The prefix of every cell key of ``row`` (its shard given: see :func:`raftkv.keys.shard_of`)."""
    return SHARD.pack(shard) + row.encode("utf-8").replace(b"\x00", ESCAPED_NUL) + TERMINATOR


def cell_key(shard: int, row: str, col: str) -> bytes:
    return row_prefix(shard, row) + col.encode("utf-8")


def decode_cell_key(key: bytes) -> CellKey:
    """The shard, row and column a key of :func:`cell_key` names.

    :raises ValueError: ``key`` is not such a key.
    """
    if len(key) < SHARD.size + 1:
        raise ValueError("too short for a cell key")
    (shard,) = SHARD.unpack_from(key)
    position = SHARD.size
    while True:
        nul = key.index(b"\x00", position)
        if key[nul + 1:nul + 2] != END:
            break
        position = nul + 2
    row = key[SHARD.size:nul].replace(ESCAPED_NUL, b"\x00").decode("utf-8")
    return CellKey(shard, row, key[nul + 1:].decode("utf-8"))


def successor(key: bytes) -> bytes:
    """The least key greater than ``key``: where a range that excludes ``key`` starts."""
    return key + b"\x00"


def prefix_end(prefix: bytes) -> bytes:
    """The exclusive upper bound of the keys that begin with ``prefix``, a prefix that
    ends where a component or a column's prefix ends (see the module's docstring)."""
    return prefix + END


def columns_range(shard: int, row: str, prefix: str = "", after: str = "") -> tuple[bytes, bytes]:
    """``[start, end)`` of ``row``'s cells whose column begins with ``prefix`` and sorts
    after ``after`` (``get_row``'s arguments; as in the in-memory store, whose test is
    ``column > after``, ``""`` excludes only a column named ``""``)."""
    base = row_prefix(shard, row)
    start = max(base + prefix.encode("utf-8"), successor(base + after.encode("utf-8")))
    return start, prefix_end(base + prefix.encode("utf-8"))


def columns_before(shard: int, row: str, prefix: str = "", before: str = "") -> tuple[bytes, bytes]:
    """``[start, end)`` of ``row``'s cells whose column begins with ``prefix`` and sorts
    before ``before`` (``""``: no bound), for ``get_row`` in reverse."""
    base = row_prefix(shard, row)
    end = prefix_end(base + prefix.encode("utf-8"))
    if before:
        end = min(end, base + before.encode("utf-8"))
    return base + prefix.encode("utf-8"), end


def rows_range(shard: int, after_row: str = "") -> tuple[bytes, bytes]:
    """``[start, end)`` of ``shard``'s cells in rows that sort after ``after_row``
    (``scan``'s cursor; like the in-memory store, ``""`` excludes only a row named ``""``)."""
    return prefix_end(row_prefix(shard, after_row)), prefix_end(shard_prefix(shard))


# -- values of cells -------------------------------------------------------------


def pack_cell(version: int, value: bytes, is_blob: bool, expires: float | None = None) -> bytes:
    flags = (BLOB if is_blob else 0) | (0 if expires is None else EXPIRES)
    return CELL_HEADER.pack(version, flags, 0.0 if expires is None else expires) + value


def unpack_cell(data: bytes) -> CellValue:
    version, flags, expires = CELL_HEADER.unpack_from(data)
    return CellValue(version, bytes(data[CELL_HEADER.size:]), bool(flags & BLOB),
                     expires if flags & EXPIRES else None)


# -- the expiry index and the exactly-once results -------------------------------


def expiry_key(expires: float, key: bytes) -> bytes:
    """The index entry of the cell at ``key`` that expires at ``expires`` (seconds since
    the epoch: the group's clock is never negative).

    :raises ValueError: ``expires`` is negative or not finite (it would sort wrongly).
    """
    if not (math.isfinite(expires) and expires >= 0.0):
        raise ValueError("an expiry is a finite, non-negative time")
    return EXPIRY.pack(expires + 0.0) + key  # + 0.0: -0.0 would sort after every time


def due_end(now: float) -> bytes:
    """The exclusive upper bound of the index entries of cells that expire at or before
    ``now``."""
    return EXPIRY.pack(math.nextafter(max(now, 0.0), math.inf))


def decode_expiry_key(entry: bytes) -> tuple[float, bytes]:
    """``(expires, cell key)`` of an entry made by :func:`expiry_key`."""
    return EXPIRY.unpack_from(entry)[0], entry[EXPIRY.size:]


def result_key(client: int, seq: int) -> bytes:
    """Where the answer to a client's request ``seq`` is kept (both are positive and below
    2**64: client ids are 62-bit, see :mod:`raftkv.client`)."""
    return RESULT.pack(client, seq)

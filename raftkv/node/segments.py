"""The journal's segment files: how a record is laid out, and how opening reads them back.

A directory holds segments named by the Raft index of their first record
(``00000000000000000042.seg``), each a magic then records::

    crc32 (4) | command length (4) | index (8) | term (8) | command

the CRC covering everything after it.  The ``start`` file holds the first index
compaction kept (:data:`START_FILE`).  Opening (:class:`SegmentOpening`, a mixin of
:class:`~raftkv.node.journal.SegmentJournal`) scans the segments and keeps the
entries up to the first record that is short, fails its CRC, does not follow the
one before or goes back in term (a write that no sync had covered, so nobody was
told of it): the tail from there is cut off, and durably so before anyone is told
of what was kept (docs/engine-fixes.md, "The journal").
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

from ..files import fsync_dir

# The journal's log lines, wherever in it they come from.
log = logging.getLogger("raftkv.node.journal")

MAGIC = b"RKVJSEG1"
RECORD = struct.Struct("<IIQQ")  # crc32, command length, index, term
START_FILE = "start"             # the first index kept (compaction), 8 bytes little-endian
START = struct.Struct("<Q")
SUFFIX = ".seg"
PRIVATE_DIR = 0o700


class JournalCorrupt(RuntimeError):
    """A record the journal had accepted reads back wrong: the disk changed it."""


@dataclass
class Segment:
    first: int   # the index its name carries: of the first record written into it
    path: Path
    fd: int
    size: int    # bytes of valid records (and the magic)


def segment_name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def pack_record(command: bytes, index: int, term: int) -> bytes:
    body = RECORD.pack(0, len(command), index, term)[4:] + command
    return struct.pack("<I", zlib.crc32(body)) + body



def read_whole(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class SegmentOpening:
    """Mixin of :class:`~raftkv.node.journal.SegmentJournal`: ``_open`` indexes the
    segments found in its directory (which the journal's ``__init__`` calls)."""

    _dir: Path
    _segments: list[Segment]
    _start: int
    _offsets: array[int]
    _terms: array[int]
    _totals: array[int]
    _dir_unsynced: bool
    _written: int
    _synced: int

    def __len__(self) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def _total_before(self, pos: int) -> int:
        raise NotImplementedError

    def _open(self, floor: int) -> None:
        start_file = self._dir / START_FILE
        if start_file.exists():
            raw = start_file.read_bytes()
            if len(raw) == START.size:
                floor = max(floor, START.unpack(raw)[0])
        names = sorted(p for p in self._dir.iterdir() if p.name.endswith(SUFFIX)
                       and p.name[:-len(SUFFIX)].isdigit())
        paths = [(int(p.name[:-len(SUFFIX)]), p) for p in names]
        # Segments wholly below the floor: compaction had begun to remove them.
        while len(paths) > 1 and paths[1][0] <= floor:
            paths.pop(0)[1].unlink()
            self._dir_unsynced = True
        expected: int | None = None
        last_term = 0
        for n, (first, path) in enumerate(paths):
            fd = os.open(path, os.O_RDWR)
            segment = Segment(first, path, fd, 0)
            data = read_whole(fd)
            good, expected, last_term = self._scan(data, segment, floor, expected, last_term)
            if good is None:  # not even a magic, or its first record is not the one due
                os.close(fd)
                self._cut(paths[n:], None)
                break
            self._segments.append(segment)
            segment.size = good
            if good < len(data):
                self._cut(paths[n + 1:], segment)
                break
        if not len(self) and self._segments:
            # Only entries below the floor, or none: nothing to follow on from.
            self.clear()
        # What was read may be in the page cache only (the process died before a sync, the
        # machine did not): synced here, at opening, before anyone is told of it.
        for segment in self._segments:
            os.fsync(segment.fd)
        if self._dir_unsynced:
            fsync_dir(self._dir)
            self._dir_unsynced = False
        self._written = self._synced = self._start + len(self) - 1 if len(self) else 0

    def _scan(self, data: bytes, segment: Segment, floor: int, expected: int | None,
              last_term: int) -> tuple[int | None, int | None, int]:
        """Index ``segment``'s records from ``data``; where its valid records end (None
        if it has none that may follow), the next index due, the last term."""
        if data[:len(MAGIC)] != MAGIC:
            return None, expected, last_term
        offset = len(MAGIC)
        while offset + RECORD.size <= len(data):
            crc, length, index, term = RECORD.unpack_from(data, offset)
            end = offset + RECORD.size + length
            due = segment.first if offset == len(MAGIC) else expected
            if (end > len(data) or zlib.crc32(data[offset + 4:end]) != crc
                    or index != due or (expected is not None and index != expected)
                    or term < last_term):
                break
            if index >= floor:
                if not len(self):
                    self._start = index
                self._offsets.append(offset)
                self._terms.append(term)
                self._totals.append(self._total_before(len(self._totals)) + length)
            expected, last_term, offset = index + 1, term, end
        if offset == len(MAGIC) and expected is not None and segment.first != expected:
            return None, expected, last_term
        return offset, expected, last_term

    def _cut(self, later: list[tuple[int, Path]], torn: Segment | None) -> None:
        """Drop a torn tail found when opening: ``torn`` is cut at its last good record,
        ``later`` segments are removed; made durable at once."""
        dropped = 0
        if torn is not None:
            dropped += os.fstat(torn.fd).st_size - torn.size
            os.ftruncate(torn.fd, torn.size)
            os.fsync(torn.fd)
        for _, path in later:
            dropped += path.stat().st_size
            path.unlink()
        self._dir_unsynced = True
        log.warning("the journal in %s ended in a record never synced (a crash before it "
                    "was acknowledged): %d bytes cut from %s on; it ends at entry %s",
                    self._dir, dropped, torn.path.name if torn else later[0][1].name,
                    self._start + len(self) - 1 if len(self) else "none")

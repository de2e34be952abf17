"""The Raft journal in segment files: entries on disk, only an index in memory
(docs/engine-fixes.md, "The journal"; docs/state-on-disk.md, "The journal").

Records are appended with ``os.pwrite`` to segment files (their layout, and how
opening reads them back and cuts a torn tail: :mod:`raftkv.node.segments`); a new
segment begins once the current one passes :data:`SEGMENT_BYTES`.  In memory each
entry costs three machine words (its offset in its segment, its term, the running
total of command bytes), and the commands of the most recent entries, which are read
at once to be sent and applied, stay in a cache of :data:`CACHE_BYTES`; any other is
read back from its segment.

Compaction (:meth:`SegmentJournal.deleteEntriesTo`) records the new first index in
the ``start`` file and removes the segments wholly before it: nothing is rewritten.
Both are left to the journal's syncer, the thread that also makes what was written
durable (:mod:`raftkv.node.journal_syncer`): the engine's tick thread only moves the
index.
"""

from __future__ import annotations

import bisect
import os
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from ..files import PRIVATE_FILE, fsync_dir, pwrite_all
from .journal_syncer import JournalSyncer
from .journal_syncer import SyncDeferred as SyncDeferred
from .segments import MAGIC as MAGIC
from .segments import PRIVATE_DIR as PRIVATE_DIR
from .segments import RECORD as RECORD
from .segments import START as START
from .segments import START_FILE as START_FILE
from .segments import SUFFIX as SUFFIX
from .segments import JournalCorrupt as JournalCorrupt
from .segments import Segment, SegmentOpening, pack_record, segment_name

SEGMENT_BYTES = 16 << 20  # a segment this large is closed: compaction frees whole segments
CACHE_BYTES = 8 << 20     # commands of the latest entries kept in memory

Entry = tuple[bytes, int, int]  # (command, index, term): what the engine reads


class SegmentJournal(JournalSyncer, SegmentOpening):
    """The entries of a Raft log, ``journal[pos] -> (command, index, term)`` as
    pysyncobj expects, appended to segment files in ``directory``.

    ``floor``: entries below this index are dropped when opening (the caller knows
    a snapshot covers them).  ``bytes`` is the commands' total size, exact.
    """

    def __init__(self, directory: Path, floor: int = 0) -> None:
        self._dir = directory
        self._dir.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        self._segments: list[Segment] = []
        self._start = 0                 # index of journal[0]
        self._head = 0                  # position of journal[0] in the arrays below
        self._offsets = array("q")      # each entry's record, in its segment
        self._terms = array("q")
        self._totals = array("q")       # command bytes up to and including each entry
        self._base = 0                  # the running total before the arrays' first entry
        self._cache: dict[int, bytes] = {}  # index -> command, oldest first
        self._cache_bytes = 0
        self._init_syncer()
        self._open(floor)

    # -- reading -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._offsets) - self._head

    def command_bytes(self) -> int:
        """Command bytes of the entries held (when to compact): also ``.bytes``."""
        if not len(self):
            return 0
        return self._totals[-1] - self._total_before(self._head)

    @property
    def first_index(self) -> int:
        return self._start

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | Sequence[Entry]:
        count = len(self)
        if isinstance(item, slice):
            start, stop, step = item.indices(count)
            if step != 1:
                return [self.entry(self._start + p) for p in range(start, stop, step)]
            return _Entries(self, self._start + start, self._start + max(start, stop))
        pos = item + count if item < 0 else item
        if not 0 <= pos < count:
            raise IndexError("journal position out of range")
        return self.entry(self._start + pos)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self[:])

    def entry(self, index: int) -> Entry:
        """The entry at Raft ``index`` (which the journal holds)."""
        pos = self._head + index - self._start
        if not self._head <= pos < len(self._offsets):
            raise IndexError(f"the journal holds no entry {index}")
        term = self._terms[pos]
        command = self._cache.get(index)
        if command is None:
            command = self._read(index, pos)
        return command, index, term

    def term_of(self, index: int) -> int:
        """The term of the entry at Raft ``index`` (which the journal holds), without
        reading its command."""
        pos = self._head + index - self._start
        if not self._head <= pos < len(self._offsets):
            raise IndexError(f"the journal holds no entry {index}")
        return self._terms[pos]

    def _read(self, index: int, pos: int) -> bytes:
        segment = self._segments[bisect.bisect_right(self._firsts(), index) - 1]
        length = self._totals[pos] - self._total_before(pos)
        raw = os.pread(segment.fd, RECORD.size + length, self._offsets[pos])
        crc, size, found, term = RECORD.unpack_from(raw)
        if (len(raw) != RECORD.size + length or size != length or found != index
                or term != self._terms[pos] or zlib.crc32(raw[4:]) != crc):
            raise JournalCorrupt(f"entry {index} in {segment.path} reads back wrong")
        return raw[RECORD.size:]

    def _total_before(self, pos: int) -> int:
        return self._totals[pos - 1] if pos else self._base

    def _firsts(self) -> list[int]:
        return [s.first for s in self._segments]

    # -- writing -------------------------------------------------------------------

    def add(self, command: bytes | str, idx: int, term: int) -> None:
        data = command if isinstance(command, bytes) else command.encode()
        if len(self) and idx != self._start + len(self):
            raise ValueError(f"entry {idx} does not follow the journal's last, "
                             f"{self._start + len(self) - 1}")
        if not len(self):
            self._start = idx
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.size >= SEGMENT_BYTES:
            segment = self._new_segment(idx)
        record = pack_record(data, idx, term)
        pwrite_all(segment.fd, record, segment.size)
        self._offsets.append(segment.size)
        segment.size += len(record)
        self._terms.append(term)
        self._totals.append(self._total_before(len(self._totals)) + len(data))
        with self._lock:  # after the write: a round that sees the index syncs the write
            self._unsynced[segment.fd] = segment
            self._written = idx
        self._cache[idx] = data
        self._cache_bytes += len(data)
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            oldest = next(iter(self._cache))
            self._cache_bytes -= len(self._cache.pop(oldest))

    def _new_segment(self, first: int) -> Segment:
        path = self._dir / segment_name(first)
        with self._lock:
            same_name = any(doomed.path == path for doomed in self._doomed)
        if same_name:  # never in practice (compaction drops names below the start): be sure
            self._remove_doomed()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        pwrite_all(fd, MAGIC, 0)
        segment = Segment(first, path, fd, len(MAGIC))
        self._segments.append(segment)
        with self._lock:
            self._dir_unsynced = True
        return segment

    def deleteEntriesFrom(self, pos: int) -> None:  # noqa: N802 - pysyncobj's name
        """Cut the journal from ``pos`` on (a follower's conflicting tail), on disk at once
        (on the calling thread: a cut is rare), and ``synced_index`` below the cut."""
        if pos >= len(self):
            return
        if pos <= 0:
            self.clear()
            return
        index = self._start + pos
        with self._lock:  # before anything changes: a round under way publishes nothing
            self._generation += 1
            self._written = index - 1
            self._synced = min(self._synced, index - 1)
        at = self._head + pos
        holder = bisect.bisect_right(self._firsts(), index) - 1
        if self._segments[holder].first == index and holder > 0:
            keep, cut_at = holder - 1, None   # the cut falls on a segment's first record
        else:
            keep, cut_at = holder, self._offsets[at]
        for gone in self._segments[keep + 1:]:
            self._remove(gone)
        del self._segments[keep + 1:]
        last = self._segments[keep]
        if cut_at is not None:
            last.size = cut_at
            os.ftruncate(last.fd, cut_at)
            os.fsync(last.fd)  # the segment may stay in _unsynced: its earlier writes are covered too
        with self._lock:
            directory, self._dir_unsynced = self._dir_unsynced, False
        if directory:
            fsync_dir(self._dir)
        for array_ in (self._offsets, self._terms, self._totals):
            del array_[at:]
        for cached in [i for i in self._cache if i >= index]:
            self._cache_bytes -= len(self._cache.pop(cached))

    def deleteEntriesTo(self, pos: int) -> None:  # noqa: N802 - pysyncobj's name
        """Forget entries before ``pos`` (compaction, after a snapshot is on disk): the
        new start is recorded and whole segments before it are removed."""
        if pos <= 0:
            return
        if pos >= len(self):
            self.clear()
            return
        start = self._start + pos
        self._head += pos
        self._start = start
        # The start file and the removal of the segments wholly before it are the
        # syncer's: on a busy disk, unlinking a 16 MiB segment held the tick thread 20 to
        # 130 ms (the filesystem frees its blocks), the start file's rename up to 30 ms
        # (docs/engine-fixes.md, "The journal").  Until then those segments are files
        # below the snapshot's entry, which opening drops anyway.
        doomed = []
        while len(self._segments) > 1 and self._segments[1].first <= start:
            doomed.append(self._segments.pop(0))
        with self._lock:  # a round duplicates the descriptors it syncs under this lock
            for segment in doomed:
                self._unsynced.pop(segment.fd, None)
            self._doomed.extend(doomed)
            self._new_start = start
            self._start_syncer()
        if self._head > 4096 and self._head * 2 > len(self._offsets):
            self._base = self._totals[self._head - 1]
            for array_ in (self._offsets, self._terms, self._totals):
                del array_[:self._head]
            self._head = 0
        for cached in [i for i in self._cache if i < start]:
            self._cache_bytes -= len(self._cache.pop(cached))

    def clear(self) -> None:
        """Remove every entry; the next one added may have any index."""
        with self._lock:  # nothing is on disk any more: a round under way publishes nothing
            self._generation += 1
            self._written = self._synced = 0
        # First the segments compaction dropped: with the start file gone, one left behind
        # would be taken at the next opening for the log's beginning, and the rest cut.
        self._remove_doomed()
        for segment in self._segments:
            self._remove(segment)
        self._segments.clear()
        (self._dir / START_FILE).unlink(missing_ok=True)
        self._reset_index()

    def _reset_index(self) -> None:
        self._offsets, self._terms, self._totals = array("q"), array("q"), array("q")
        self._head = self._base = self._start = 0
        self._cache.clear()
        self._cache_bytes = 0

    def _remove(self, segment: Segment) -> None:
        with self._lock:  # a round duplicates the descriptors it syncs under this lock
            self._unsynced.pop(segment.fd, None)
            self._dir_unsynced = True
        os.close(segment.fd)
        segment.path.unlink(missing_ok=True)

    # -- closing -------------------------------------------------------------------

    def _destroy(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
            syncer, self._syncer = self._syncer, None
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join(timeout=10.0)  # a round's fsync under way ends on its own
        if syncer is None or not syncer.is_alive():
            self._remove_doomed()  # the rest the next opening removes (below the start)
        for segment in self._segments:
            os.close(segment.fd)
        self._segments.clear()
        self._unsynced.clear()

    close = _destroy

    # The engine's fixes read ``journal.bytes``; defined last, so that ``bytes`` in this
    # class body above is still the type.
    bytes = property(command_bytes)


class _Entries(Sequence[Entry]):
    """Entries ``first`` to ``stop - 1`` of a journal, read when used: the engine slices
    to the end of its log to send a follower a batch of it, and to apply what was
    committed, and uses a few.  A slice of this is a list; pickled, it is one too."""

    def __init__(self, journal: SegmentJournal, first: int, stop: int) -> None:
        self._journal, self._first, self._stop = journal, first, stop

    def __len__(self) -> int:
        return self._stop - self._first

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        if isinstance(item, slice):
            return [self._journal.entry(self._first + p) for p in range(*item.indices(len(self)))]
        pos = item + len(self) if item < 0 else item
        if not 0 <= pos < len(self):
            raise IndexError("entry range position out of range")
        return self._journal.entry(self._first + pos)

    def __iter__(self) -> Iterator[Entry]:
        for index in range(self._first, self._stop):
            yield self._journal.entry(index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)


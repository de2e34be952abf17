"""The Raft journal in segment files: entries on disk, only an index in memory
(docs/engine-fixes.md, "The journal"; docs/state-on-disk.md, "The journal").

A directory holds segments named by the Raft index of their first record
(``00000000000000000042.seg``), each a magic then records::

    crc32 (4) | command length (4) | index (8) | term (8) | command

the CRC covering everything after it.  Records are appended with ``os.pwrite``;
a new segment begins once the current one passes :data:`SEGMENT_BYTES`.  In memory
each entry costs three machine words (its offset in its segment, its term, the
running total of command bytes), and the commands of the most recent entries, which
are read at once to be sent and applied, stay in a cache of :data:`CACHE_BYTES`;
any other is read back from its segment.

Compaction (:meth:`SegmentJournal.deleteEntriesTo`) records the new first index in
the ``start`` file and removes the segments wholly before it: nothing is rewritten.
Opening scans the segments and keeps the entries up to the first record that is
short, fails its CRC, or does not follow the one before (a write that no sync had
covered, so nobody was told of it): the tail from there is cut off.

Syncing runs on a thread of its own, the journal's syncer, not on the engine's tick
thread (docs/engine-fixes.md, "The journal"): :meth:`SegmentJournal.request_sync`
returns at once, and :attr:`SegmentJournal.synced_index` says how far the disk is
known to hold the journal.  A round of the syncer takes, under a lock, duplicates of
the descriptors of the segments written since the last round (compaction, a cut or
:meth:`~SegmentJournal.clear` may close and reuse the originals meanwhile, never the
duplicates), fsyncs them with no lock held, and then publishes the index the journal
ended at when the round began, unless a cut or a clear happened meanwhile (those
lower ``synced_index`` themselves, and the round's claim may name entries that are
gone).  A round that cannot duplicate a descriptor (EMFILE) takes nothing and
syncs nothing: a later one does.  A failed fsync is for good: the round raises, and
every later one raises it again, publishing nothing (the kernel may have dropped the
pages; a retry would claim what the disk does not hold).
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from ..files import PRIVATE_FILE, fsync_dir, pwrite_all, write_private_atomically
from ..replica_metrics import FSYNC_SECONDS

log = logging.getLogger(__name__)

SEGMENT_BYTES = 16 << 20  # a segment this large is closed: compaction frees whole segments
CACHE_BYTES = 8 << 20     # commands of the latest entries kept in memory
MAGIC = b"RKVJSEG1"
RECORD = struct.Struct("<IIQQ")  # crc32, command length, index, term
START_FILE = "start"             # the first index kept (compaction), 8 bytes little-endian
START = struct.Struct("<Q")
SUFFIX = ".seg"
PRIVATE_DIR = 0o700

Entry = tuple[bytes, int, int]  # (command, index, term): what the engine reads


class JournalCorrupt(RuntimeError):
    """A record the journal had accepted reads back wrong: the disk changed it."""


class SyncDeferred(RuntimeError):
    """A sync round could not begin (no descriptor left to duplicate one with): nothing
    was synced or claimed, and the next round syncs it all.  Not a failed fsync."""


@dataclass
class _Segment:
    first: int   # the index its name carries: of the first record written into it
    path: Path
    fd: int
    size: int    # bytes of valid records (and the magic)


def _segment_name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _record(command: bytes, index: int, term: int) -> bytes:
    body = RECORD.pack(0, len(command), index, term)[4:] + command
    return struct.pack("<I", zlib.crc32(body)) + body


class SegmentJournal:
    """The entries of a Raft log, ``journal[pos] -> (command, index, term)`` as
    pysyncobj expects, appended to segment files in ``directory``.

    ``floor``: entries below this index are dropped when opening (the caller knows
    a snapshot covers them).  ``bytes`` is the commands' total size, exact.
    """

    def __init__(self, directory: Path, floor: int = 0) -> None:
        self._dir = directory
        self._dir.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        self._segments: list[_Segment] = []
        self._start = 0                 # index of journal[0]
        self._head = 0                  # position of journal[0] in the arrays below
        self._offsets = array("q")      # each entry's record, in its segment
        self._terms = array("q")
        self._totals = array("q")       # command bytes up to and including each entry
        self._base = 0                  # the running total before the arrays' first entry
        self._cache: dict[int, bytes] = {}  # index -> command, oldest first
        self._cache_bytes = 0
        # What a sync round reads and the tick thread changes; never held across an fsync.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the syncer waits here for requests
        self._published = threading.Condition(self._lock)  # wait_synced waits here for rounds
        self._rounds = 0                  # rounds that raised synced_index
        self._round = threading.Lock()    # one sync round at a time (the syncer's, sync()'s)
        self._unsynced: dict[int, _Segment] = {}  # fd -> segment written since the last round
        # Segments compaction dropped, for the syncer to close and unlink (see deleteEntriesTo);
        # each stays listed until it is gone, so that a new segment of the same name waits.
        self._doomed: list[_Segment] = []
        self._new_start: int | None = None  # for the syncer to write into the start file
        self._removing = threading.Lock()  # held while doomed segments are unlinked
        self._dir_unsynced = False
        self._written = 0                 # index of the last entry written (0: none)
        self._generation = 0              # bumped by each cut and clear (see _sync_round)
        self._synced = 0
        self._wanted = False              # a sync was asked for since the syncer's last round
        self._closed = False
        self._failed: OSError | None = None  # an fsync failed: no round publishes again
        self._syncer: threading.Thread | None = None
        self.on_synced: Callable[[], None] | None = None   # after synced_index rose (syncer's thread)
        self.on_sync_failed: Callable[[OSError], None] | None = None
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
        record = _record(data, idx, term)
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

    def _new_segment(self, first: int) -> _Segment:
        path = self._dir / _segment_name(first)
        with self._lock:
            same_name = any(doomed.path == path for doomed in self._doomed)
        if same_name:  # never in practice (compaction drops names below the start): be sure
            self._remove_doomed()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        pwrite_all(fd, MAGIC, 0)
        segment = _Segment(first, path, fd, len(MAGIC))
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

    def _remove(self, segment: _Segment) -> None:
        with self._lock:  # a round duplicates the descriptors it syncs under this lock
            self._unsynced.pop(segment.fd, None)
            self._dir_unsynced = True
        os.close(segment.fd)
        segment.path.unlink(missing_ok=True)

    # -- syncing -------------------------------------------------------------------

    @property
    def synced_index(self) -> int:
        """The highest index the disk is known to hold, with every entry before it
        (0: none); it rises as the syncer's rounds end, and falls with a cut or a clear."""
        with self._lock:
            return self._synced

    @property
    def generation(self) -> int:
        """How many cuts and clears the journal has seen: an answer about entries that
        was prepared before one may name entries that are gone."""
        with self._lock:
            return self._generation

    @property
    def rounds(self) -> int:
        """How many sync rounds have raised ``synced_index`` so far."""
        with self._lock:
            return self._rounds

    def wait_synced(self, index: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``synced_index`` to reach ``index``
        (after :meth:`request_sync`); whether it did."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._synced < index:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed or self._failed is not None:
                    return False
                self._published.wait(left)
            return True

    def request_sync(self) -> None:
        """Ask the syncer (a thread, started on first use) to sync everything written so
        far; returns at once.  Requests made while a round runs share the next round."""
        with self._lock:
            if self._closed or self._failed is not None or self._written <= self._synced:
                return
            self._wanted = True
            self._start_syncer()

    def _start_syncer(self) -> None:
        """Wake the syncer, started on first use (under the lock)."""
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._run_syncer, daemon=True,
                                            name=f"journal-syncer {self._dir.name}")
            self._syncer.start()
        self._wake.notify()

    def sync(self) -> None:
        """Make everything written so far survive a crash of the machine, on the calling
        thread (after a round of the syncer's that is under way); nothing to do when
        nothing was written.  Raises the :class:`OSError` of a failed fsync, this one's
        or any earlier one's (for good), and :class:`SyncDeferred` if the round could
        not begin."""
        self._sync_round()

    def flush(self) -> None:
        self.sync()

    def _remove_doomed(self) -> None:
        """Record compaction's new start, then close and unlink the segments it dropped
        (the syncer's work; on another thread only before a clear, or if a new segment
        would take a doomed one's name)."""
        with self._removing:
            with self._lock:
                doomed = list(self._doomed)
                start, self._new_start = self._new_start, None
            if start is not None:
                # No fsync: compaction follows a snapshot already on disk, and opening
                # drops the entries below that snapshot's own entry anyway; the file only
                # spares reading segments below it.  Lost or torn, it is ignored.
                try:
                    write_private_atomically(self._dir / START_FILE, START.pack(start),
                                             durable=False)
                except OSError as exc:
                    log.warning("the journal in %s could not record its start: %s", self._dir, exc)
            for segment in doomed:
                try:
                    os.close(segment.fd)
                    segment.path.unlink(missing_ok=True)
                except OSError as exc:  # below the start: the next opening removes it
                    log.warning("the journal in %s could not remove %s: %s",
                                self._dir, segment.path.name, exc)
            with self._lock:
                del self._doomed[:len(doomed)]
                self._dir_unsynced = self._dir_unsynced or bool(doomed)

    def _run_syncer(self) -> None:
        while True:
            with self._lock:
                while (not self._wanted and not self._doomed and self._new_start is None
                       and not self._closed):
                    self._wake.wait()
                if self._closed:
                    return
                wanted, self._wanted = self._wanted, False
                doomed = bool(self._doomed) or self._new_start is not None
            if doomed:
                self._remove_doomed()
            if not wanted:
                continue
            try:
                rose = self._sync_round()
            except SyncDeferred:
                continue  # the next request (each tick makes one while entries wait) retries
            except OSError as exc:
                # A failed fsync may have dropped the dirty pages (retrying would claim
                # them): synced_index stays where it is for good.
                log.critical("the journal in %s failed to sync: %s", self._dir, exc)
                if self.on_sync_failed is not None:
                    self.on_sync_failed(exc)
                return
            if rose and self.on_synced is not None:
                self.on_synced()

    def _sync_round(self) -> bool:
        """One fsync of every segment written before it began (and of the directory if a
        segment came or went); whether ``synced_index`` rose."""
        with self._round:
            with self._lock:
                if self._failed is not None:
                    # The failed fsync may have dropped pages a later one would claim.
                    raise self._failed
                if self._closed:
                    return False
                target, generation = self._written, self._generation
                fds = self._duplicates()
                self._unsynced.clear()
                directory, self._dir_unsynced = self._dir_unsynced, False
            began = time.perf_counter()
            try:
                for fd in fds:
                    os.fsync(fd)
                if directory:
                    fsync_dir(self._dir)
                FSYNC_SECONDS.observe(time.perf_counter() - began)
            except OSError as exc:
                with self._lock:
                    self._failed = exc
                raise
            finally:
                for fd in fds:
                    os.close(fd)
            with self._lock:
                # A cut or a clear since the round began: its entries may be gone, and the
                # cut or clear set synced_index itself.  What the round synced is synced;
                # the next round, finding nothing else, publishes the end.
                if generation != self._generation or target <= self._synced:
                    return False
                self._synced = target
                self._rounds += 1
                self._published.notify_all()
                return True

    def _duplicates(self) -> list[int]:
        """Our own descriptors of the segments to sync (under the lock): the journal may
        close and reuse its own meanwhile.  If one cannot be made (EMFILE), those made
        are closed and :class:`SyncDeferred` raised, the round having taken nothing."""
        fds: list[int] = []
        try:
            for fd in self._unsynced:
                fds.append(os.dup(fd))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            log.warning("the journal in %s puts a sync off: cannot duplicate a segment's "
                        "descriptor (%s)", self._dir, exc)
            raise SyncDeferred(f"cannot duplicate a segment's descriptor ({exc})") from exc
        return fds

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

    # -- opening -------------------------------------------------------------------

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
            segment = _Segment(first, path, fd, 0)
            data = _read_whole(fd)
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

    def _scan(self, data: bytes, segment: _Segment, floor: int, expected: int | None,
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

    def _cut(self, later: list[tuple[int, Path]], torn: _Segment | None) -> None:
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


def _read_whole(fd: int) -> bytes:
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

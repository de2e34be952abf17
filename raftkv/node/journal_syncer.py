"""The journal's syncer: a thread of its own that makes the written entries durable.

A mixin of :class:`~raftkv.node.journal.SegmentJournal`.  Syncing runs off the
engine's tick thread (docs/engine-fixes.md, "The journal"):
:meth:`JournalSyncer.request_sync` returns at once, and
:attr:`JournalSyncer.synced_index` says how far the disk is known to hold the
journal.  A round of the syncer takes, under a lock, duplicates of the descriptors of
the segments written since the last round (compaction, a cut or ``clear`` may close
and reuse the originals meanwhile, never the duplicates), fsyncs them with no lock
held, and then publishes the index the journal ended at when the round began, unless
a cut or a clear happened meanwhile (those lower ``synced_index`` themselves, and the
round's claim may name entries that are gone).  A round that cannot duplicate a
descriptor (EMFILE) takes nothing and syncs nothing: a later one does.  A failed
fsync is for good: the round raises, and every later one raises it again, publishing
nothing (the kernel may have dropped the pages; a retry would claim what the disk
does not hold).

The syncer also does compaction's file work, which took the tick thread tens of
milliseconds on a busy disk: it records the new start and closes and unlinks the
segments compaction dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..files import fsync_dir, write_private_atomically
from ..replica_metrics import FSYNC_SECONDS
from .segments import START, START_FILE, Segment

# The journal's log lines, wherever in it they come from.
log = logging.getLogger("raftkv.node.journal")


class SyncDeferred(RuntimeError):
    """A sync round could not begin (no descriptor left to duplicate one with): nothing
    was synced or claimed, and the next round syncs it all.  Not a failed fsync."""



class JournalSyncer:
    """Mixin of :class:`~raftkv.node.journal.SegmentJournal`: ``request_sync``,
    ``sync``, ``wait_synced`` and the syncer's thread."""

    _dir: Path

    def _init_syncer(self) -> None:
        # What a sync round reads and the tick thread changes; never held across an fsync.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the syncer waits here for requests
        self._published = threading.Condition(self._lock)  # wait_synced waits here for rounds
        self._rounds = 0                  # rounds that raised synced_index
        self._round = threading.Lock()    # one sync round at a time (the syncer's, sync()'s)
        self._unsynced: dict[int, Segment] = {}  # fd -> segment written since the last round
        # Segments compaction dropped, for the syncer to close and unlink (see deleteEntriesTo);
        # each stays listed until it is gone, so that a new segment of the same name waits.
        self._doomed: list[Segment] = []
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

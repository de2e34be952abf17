"""The journal's syncer (raftkv/node/journal_syncer.py): ``synced_index``, syncs asked for and run
on a thread of their own, and what compaction, a cut or a clear during a sync do to it
(docs/engine-fixes.md, "The journal").  Real files; only ``os.fsync`` is watched, and
held where a test needs a sync to be under way."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.node import journal
from raftkv.node.journal import SegmentJournal

from .._procs import wait_for

Entry = tuple[bytes, int, int]


def _entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [(b"%d:" % i + b"x" * 40, i, term) for i in range(first, last + 1)]


def _fill(j: SegmentJournal, entries: list[Entry]) -> None:
    for entry in entries:
        j.add(*entry)


class Fsyncs:
    """``os.fsync`` watched: which file each call synced and on which thread; while
    :attr:`held` is set, a call from the syncer's thread waits (at most 10 s) until it is
    cleared."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []   # (thread name, file)
        self.held = threading.Event()
        self.waiting = threading.Event()          # a held fsync is waiting
        self._released = threading.Event()
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        thread = threading.current_thread().name
        self.calls.append((thread, os.readlink(f"/proc/self/fd/{fd}")))
        if self.held.is_set() and thread.startswith("journal-syncer"):
            self.waiting.set()
            self._released.wait(10)
        self._real(fd)

    def hold(self) -> None:
        self._released.clear()
        self.waiting.clear()
        self.held.set()

    def release(self) -> None:
        self.held.clear()
        self._released.set()

    def on(self, thread_prefix: str) -> list[str]:
        return [f for t, f in self.calls if t.startswith(thread_prefix)]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fsyncs]:
    watched = Fsyncs()
    monkeypatch.setattr(os, "fsync", watched)
    yield watched
    watched.release()


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "SEGMENT_BYTES", 1024)


def _synced_to(j: SegmentJournal, index: int) -> None:
    wait_for(lambda: j.synced_index == index, 10, f"synced_index {index} (is {j.synced_index})",
             interval=0.005)


def _round_ended(j: SegmentJournal) -> None:
    """Wait (10 s at most) for the syncer's round under way to end."""
    assert j._round.acquire(timeout=10), "the round did not end"
    j._round.release()


def test_a_sync_asked_for_returns_at_once_and_the_syncer_raises_synced_index(tmp_path, fsyncs) -> None:
    j = SegmentJournal(tmp_path / "j")
    woken = threading.Event()
    j.on_synced = woken.set
    _fill(j, _entries(1, 5))
    assert j.synced_index == 0
    fsyncs.hold()
    j.request_sync()                      # returns while the fsync it asked for is held
    assert fsyncs.waiting.wait(10) and j.synced_index == 0 and not woken.is_set()
    fsyncs.release()
    _synced_to(j, 5)
    assert woken.wait(10)
    assert fsyncs.on("MainThread") == [], "the caller's thread fsynced"
    assert any(f.endswith(journal.SUFFIX) for f in fsyncs.on("journal-syncer"))
    j.close()


def test_one_round_covers_every_request_made_while_one_runs(tmp_path, fsyncs) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 5))
    fsyncs.hold()
    j.request_sync()
    assert fsyncs.waiting.wait(10)
    for index in range(6, 26):            # twenty more entries, twenty requests
        j.add(*_entries(index, index)[0])
        j.request_sync()
    fsyncs.release()
    _synced_to(j, 25)
    segment_syncs = [f for f in fsyncs.on("journal-syncer") if f.endswith(journal.SUFFIX)]
    assert len(segment_syncs) == 2, segment_syncs   # the held round, then one for the rest
    j.close()


def test_compaction_during_a_sync_closes_nothing_the_syncer_uses(tmp_path, fsyncs, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 60))             # several segments, none synced
    before = {p.name for p in path.iterdir() if p.name.endswith(journal.SUFFIX)}
    assert len(before) > 3
    fsyncs.hold()
    j.request_sync()
    assert fsyncs.waiting.wait(10)
    j.deleteEntriesTo(50)                 # closes and removes the segments the round syncs
    _fill(j, _entries(61, 120))           # new segments: their descriptors reuse the numbers
    fsyncs.release()
    _synced_to(j, 60)
    # The round synced the files it began with (removed since), through its own
    # descriptors; never a new segment through a reused number, never a closed one.
    first_round = [Path(f.removesuffix(" (deleted)")).name
                   for f in fsyncs.on("journal-syncer") if journal.SUFFIX in f][:len(before)]
    assert set(first_round) == before
    j.request_sync()
    _synced_to(j, 120)
    j.close()


def test_compaction_leaves_the_start_file_and_the_unlinks_to_the_syncer(
        tmp_path, monkeypatch, small_segments) -> None:
    """Unlinking a segment held the tick thread 20-130 ms on a busy disk, the start
    file's rename up to 30 ms (bench.capacity): compaction only lists them, the syncer
    writes the start file, then closes and unlinks the segments."""
    unlinks: list[tuple[str, str]] = []
    renames: list[tuple[str, str]] = []
    real_unlink, real_replace = os.unlink, os.replace

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        unlinks.append((threading.current_thread().name, Path(path).name))
        real_unlink(path, *args, **kwargs)

    def replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        renames.append((threading.current_thread().name, Path(target).name))
        real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 60))
    before = {p.name for p in path.iterdir() if p.name.endswith(journal.SUFFIX)}
    j.deleteEntriesTo(50)

    def gone() -> set[str]:
        return before - {p.name for p in path.iterdir()}

    wait_for(lambda: len(gone()) >= 3, 10, "the segments below the start removed",
             interval=0.005)
    assert {name for _, name in unlinks} == gone()
    assert {thread.split()[0] for thread, _ in unlinks} == {"journal-syncer"}
    wait_for(lambda: renames, 10, "the start file written", interval=0.005)
    assert [(thread.split()[0], name) for thread, name in renames] == [
        ("journal-syncer", journal.START_FILE)]
    j.close()


def test_a_cut_during_a_sync_lowers_synced_index_and_the_round_claims_nothing(tmp_path, fsyncs) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 10))
    j.sync()
    assert j.synced_index == 10
    _fill(j, _entries(11, 12))
    fsyncs.hold()
    j.request_sync()                      # the round will have covered 1..12 of term 1
    assert fsyncs.waiting.wait(10)
    j.deleteEntriesFrom(7)                # a new leader's log differs from entry 8 on
    assert j.synced_index == 7
    _fill(j, _entries(8, 9, term=2))
    fsyncs.release()
    _round_ended(j)
    assert j.synced_index == 7, "the round claimed entries the cut replaced"
    j.request_sync()
    _synced_to(j, 9)
    assert [e[2] for e in j[6:]] == [1, 2, 2]
    j.close()


def test_a_clear_during_a_sync_leaves_nothing_claimed(tmp_path, fsyncs) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 10))
    fsyncs.hold()
    j.request_sync()
    assert fsyncs.waiting.wait(10)
    j.clear()                             # a snapshot installed: the journal starts over
    j.add(*_entries(100, 100)[0])
    j.add(*_entries(101, 101)[0])
    assert j.synced_index == 0
    fsyncs.release()
    _round_ended(j)
    assert j.synced_index == 0, "the round claimed entries of the journal before the clear"
    j.request_sync()
    _synced_to(j, 101)
    j.close()


def test_what_opening_reads_is_synced_before_it_counts(tmp_path, fsyncs) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 10))
    j.close()                             # the process died before any sync
    fsyncs.calls.clear()
    j = SegmentJournal(path)
    assert j.synced_index == 10
    assert any(f.endswith(journal.SUFFIX) for f in fsyncs.on("MainThread"))
    j.close()


def test_a_failed_fsync_is_reported_and_claims_nothing(tmp_path, monkeypatch) -> None:
    j = SegmentJournal(tmp_path / "j")
    failed: list[OSError] = []
    j.on_sync_failed = failed.append
    _fill(j, _entries(1, 3))

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    j.request_sync()
    wait_for(lambda: failed, 10, "the failure to be reported")
    assert j.synced_index == 0
    monkeypatch.undo()
    j.close()


def test_a_failed_fsync_is_for_good_no_later_round_claims_anything(tmp_path, monkeypatch) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 3))
    real_fsync = os.fsync
    failing = threading.Event()
    failing.set()

    def once(fd: int) -> None:
        if failing.is_set():
            failing.clear()
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", once)
    with pytest.raises(OSError):
        j.sync()
    _fill(j, _entries(4, 5))
    for _ in range(2):                    # the kernel may have dropped 1..3: never claimed
        with pytest.raises(OSError):
            j.sync()
    j.request_sync()
    assert j.synced_index == 0
    j.close()


def test_a_round_that_cannot_duplicate_a_descriptor_stops_nothing_and_leaks_nothing(
        tmp_path, fsyncs, small_segments, monkeypatch) -> None:
    j = SegmentJournal(tmp_path / "j")
    failed: list[OSError] = []
    j.on_sync_failed = failed.append
    _fill(j, _entries(1, 60))             # several segments, none synced
    segments = {str(p) for p in (tmp_path / "j").iterdir() if p.name.endswith(journal.SUFFIX)}
    assert len(segments) > 3
    real_dup, real_close = os.dup, os.close
    made: list[int] = []
    closed: list[int] = []
    refused = threading.Event()

    def dup(fd: int) -> int:              # the third descriptor of the round: EMFILE, once
        if len(made) == 2 and not refused.is_set():
            refused.set()
            raise OSError(errno.EMFILE, "Too many open files")
        made.append(real_dup(fd))
        return made[-1]

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "dup", dup)
    monkeypatch.setattr(os, "close", close)
    j.request_sync()
    assert refused.wait(10)
    _round_ended(j)
    assert sorted(closed) == sorted(made), "a descriptor the round made was left open"
    assert not failed, "a refused dup was taken for a failed fsync"
    assert j.synced_index == 0 and fsyncs.on("journal-syncer") == []
    j.request_sync()                      # a later round syncs every segment
    _synced_to(j, 60)
    assert segments <= set(fsyncs.on("journal-syncer"))
    assert not failed
    j.close()

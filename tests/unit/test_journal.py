"""The Raft journal in segment files (raftkv/node/journal.py) on its own, on real files
(docs/engine-fixes.md, "The journal")."""

from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv.node import journal
from raftkv.node.journal import SegmentJournal

from .._procs import wait_for

Entry = tuple[bytes, int, int]


def _entries(first: int, last: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [(b"%d:" % i + b"x" * size, i, term) for i in range(first, last + 1)]


def _fill(j: SegmentJournal, entries: list[Entry]) -> None:
    for entry in entries:
        j.add(*entry)


def _segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(journal.SUFFIX))


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 1 KiB and a cache of 256 bytes: a few entries fill each."""
    monkeypatch.setattr(journal, "SEGMENT_BYTES", 1024)
    monkeypatch.setattr(journal, "CACHE_BYTES", 256)


def _reopened(j: SegmentJournal, path: Path, floor: int = 0) -> SegmentJournal:
    j.sync()
    j.close()
    return SegmentJournal(path, floor)


def test_entries_read_back_by_position_and_slice_also_after_reopening(tmp_path, small_segments) -> None:
    j = SegmentJournal(tmp_path / "j")
    entries = _entries(1, 200)
    _fill(j, entries)
    assert len(_segments(tmp_path / "j")) > 5
    for reopen in (False, True):
        current = j = _reopened(j, tmp_path / "j") if reopen else j
        assert len(current) == 200 and current.bytes == sum(len(e[0]) for e in entries)
        assert current[0] == entries[0] and current[-1] == entries[-1] and current[57] == entries[57]
        assert list(current[10:20]) == entries[10:20] and current[10:20][1:3] == entries[11:13]
        assert list(current[190:]) == entries[190:] and len(current[300:]) == 0
        assert current[::50] == entries[::50]
        with pytest.raises(IndexError):
            current[200]
    j.close()


def test_a_slice_is_read_when_used_and_pickles_as_a_list(tmp_path) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 5))
    tail = j[2:]
    j.add(b"late", 6, 1)                 # the slice names indexes, not a copy
    assert len(tail) == 3 and tail[-1] == (b"5:" + b"x" * 10, 5, 1)
    assert pickle.loads(pickle.dumps(tail)) == _entries(3, 5)
    assert type(pickle.loads(pickle.dumps(tail))) is list
    j.close()


def test_entries_must_follow_one_another(tmp_path) -> None:
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(5, 6))
    with pytest.raises(ValueError, match="does not follow"):
        j.add(b"gap", 8, 1)
    j.close()


def test_compaction_removes_whole_segments_and_keeps_the_indexes(tmp_path, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    entries = _entries(1, 300)
    _fill(j, entries)
    before = _segments(path)
    j.deleteEntriesTo(150)               # the engine: keep from the snapshot's entry on
    wait_for(lambda: not j._doomed, 10, "the syncer removing the segments", interval=0.005)
    after = _segments(path)
    assert len(after) < len(before) and set(after) <= set(before)
    assert int(after[0][:-4]) <= 151 and int(after[1][:-4]) > 151   # nothing below rewritten
    assert len(j) == 150 and j[0] == entries[150] and j[-1] == entries[-1]
    assert j.bytes == sum(len(e[0]) for e in entries[150:])
    j.add(*_entries(301, 301)[0])
    j = _reopened(j, path)
    assert j[0] == entries[150] and len(j) == 151 and list(j[:3]) == entries[150:153]
    assert j.bytes == sum(len(e[0]) for e in entries[150:]) + len(_entries(301, 301)[0][0])
    j.close()


def test_compaction_many_times_compacts_the_index_too(tmp_path, small_segments) -> None:
    j = SegmentJournal(tmp_path / "j")
    entries = _entries(1, 20_000, size=0)
    _fill(j, entries)
    for cut in range(1000, 19_000, 1000):
        j.deleteEntriesTo(1000)
        assert j[0] == entries[cut] and j.bytes == sum(len(e[0]) for e in entries[cut:])
    assert j._head < 4096 + 1000             # the arrays' dropped prefix was let go
    j.close()


def test_a_conflicting_tail_is_cut_on_disk_at_once(tmp_path, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 100))
    j.sync()
    synced: list[str] = []
    real = os.fsync
    os.fsync = lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),  # type: ignore[assignment]
                           real(fd))[1]
    try:
        j.deleteEntriesFrom(40)          # entries 41.. conflict with the new leader's
    finally:
        os.fsync = real                  # type: ignore[assignment]
    assert [Path(p).name for p in synced if p.endswith(journal.SUFFIX)] == _segments(path)[-1:], \
        "the cut was not made durable"
    assert len(j) == 40 and j[-1][1] == 40
    _fill(j, _entries(41, 45, term=2))
    j = _reopened(j, path)
    assert [e[2] for e in j[38:]] == [1, 1, 2, 2, 2, 2, 2] and j[-1][1] == 45
    assert j.bytes == sum(len(e[0]) for e in _entries(1, 40) + _entries(41, 45, term=2))
    j.close()


def test_a_cut_on_a_segments_first_record_removes_that_segment(tmp_path, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 100))
    second = int(_segments(path)[1][:-4])
    j.deleteEntriesFrom(second - 1)
    assert _segments(path)[-1] == _segments(path)[0] and len(j) == second - 1
    _fill(j, _entries(second, second + 2, term=3))
    j = _reopened(j, path)
    assert j[-1] == _entries(second + 2, second + 2, term=3)[0]
    j.close()


def test_clear_then_any_index(tmp_path) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 10))
    j.deleteEntriesTo(5)
    j.clear()                            # a snapshot from the leader
    assert len(j) == 0 and j.bytes == 0
    _fill(j, _entries(500, 501, term=4))
    j = _reopened(j, path)
    assert list(j) == _entries(500, 501, term=4)
    j.close()


def _last_segment(path: Path) -> Path:
    return path / _segments(path)[-1]


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_a_torn_last_record_is_dropped_and_the_earlier_kept(tmp_path, caplog, damage) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    entries = _entries(1, 20)
    _fill(j, entries)
    j.sync()
    j.close()
    segment = _last_segment(path)
    data = bytearray(segment.read_bytes())
    if damage == "cut":
        data = data[:-3]
    else:
        data[-5] ^= 0x40
    segment.write_bytes(bytes(data))
    j = SegmentJournal(path)
    assert list(j) == entries[:-1] and j.bytes == sum(len(e[0]) for e in entries[:-1])
    assert "never synced" in caplog.text
    assert segment.stat().st_size < len(data) or damage == "flip"
    j.add(b"again", 20, 2)               # appended where the torn record was
    j = _reopened(j, path)
    assert list(j) == entries[:-1] + [(b"again", 20, 2)]
    j.close()


def test_a_torn_record_in_an_earlier_segment_drops_every_later_one(tmp_path, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    entries = _entries(1, 100)
    _fill(j, entries)
    j.sync()
    j.close()
    names = _segments(path)
    second = path / names[1]
    second.write_bytes(second.read_bytes()[:-2])
    j = SegmentJournal(path)
    third_first = int(names[2][:-4])
    assert list(j) == entries[:third_first - 2]
    assert _segments(path) == names[:2]
    j.close()


def test_an_older_term_after_a_newer_one_is_cut_when_opening(tmp_path) -> None:
    """What a cut that did not reach the disk would leave: the old tail after new entries."""
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 5, term=3))
    j.add(b"stale", 6, 2)
    j = _reopened(j, path)
    assert list(j) == _entries(1, 5, term=3)
    j.close()


def test_an_empty_segment_left_by_a_crash_is_removed(tmp_path) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 3))
    j.sync()
    j.close()
    (path / "00000000000000000004.seg").write_bytes(b"")   # created, nothing written yet
    j = SegmentJournal(path)
    assert list(j) == _entries(1, 3) and len(_segments(path)) == 1
    j.close()


def test_the_floor_drops_entries_below_the_snapshot_when_opening(tmp_path, small_segments) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    _fill(j, _entries(1, 100))
    j = _reopened(j, path, floor=60)     # compacted, but the journal's record of it was lost
    assert j[0][1] == 60 and len(j) == 41
    j.close()
    j = SegmentJournal(path, floor=500)  # the snapshot is past every entry: nothing follows on
    assert len(j) == 0 and _segments(path) == []
    j.close()


def test_sync_does_nothing_when_clean_and_covers_a_new_segment(tmp_path, small_segments, monkeypatch) -> None:
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real(fd))[1])
    j = SegmentJournal(tmp_path / "j")
    _fill(j, _entries(1, 30))
    j.sync()
    names = {Path(p).name for p in synced}
    assert set(_segments(tmp_path / "j")) <= names and "j" in names   # and the directory
    synced.clear()
    j.sync()
    assert synced == []
    j.close()


def test_memory_holds_the_index_and_the_cache_not_the_entries(tmp_path) -> None:
    """200 MiB appended: what stays allocated is the recent entries' cache (8 MiB) and
    the index, a few words an entry."""
    command = os.urandom(32 * 1024)
    count = 200 * 1024 * 1024 // len(command)
    tracemalloc.start()
    try:
        j = SegmentJournal(tmp_path / "j")
        for i in range(1, count + 1):
            j.add(command + b"%d" % i, i, 1)
        held, _ = tracemalloc.get_traced_memory()
        assert j.bytes > 200 * 1024 * 1024
        assert held < journal.CACHE_BYTES + 2 * 1024 * 1024, held
        assert j._cache_bytes <= journal.CACHE_BYTES
        assert j[0][0] == command + b"1"          # read back from its segment
    finally:
        tracemalloc.stop()
    j.close()


class JournalAgainstAList(RuleBasedStateMachine):
    """Every operation the engine uses, on the journal and on a plain list; reopened
    at random.  Small segments and cache, so that segments roll and reads miss."""

    def __init__(self) -> None:
        super().__init__()
        self._saved = (journal.SEGMENT_BYTES, journal.CACHE_BYTES)
        journal.SEGMENT_BYTES, journal.CACHE_BYTES = 300, 100
        self.path = Path(os.environ.get("TMPDIR", "/tmp")) / f"journal-model-{os.getpid()}-{id(self)}"
        self.j = SegmentJournal(self.path)
        self.model: list[Entry] = []
        self.term = 1

    def teardown(self) -> None:
        self.j.close()
        for p in self.path.iterdir():
            p.unlink()
        self.path.rmdir()
        journal.SEGMENT_BYTES, journal.CACHE_BYTES = self._saved

    def _next_index(self) -> int:
        return self.model[-1][1] + 1 if self.model else 1

    @rule(size=st.integers(0, 120), more=st.integers(1, 5))
    def add(self, size: int, more: int) -> None:
        for _ in range(more):
            entry = (os.urandom(size), self._next_index(), self.term)
            self.j.add(*entry)
            self.model.append(entry)

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def cut_the_tail(self, data: st.DataObject) -> None:
        pos = data.draw(st.integers(1, len(self.model) - 1))
        self.j.deleteEntriesFrom(pos)
        del self.model[pos:]
        self.term += 1

    @precondition(lambda self: len(self.model) > 2)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        pos = data.draw(st.integers(1, len(self.model) - 2))
        self.j.deleteEntriesTo(pos)
        del self.model[:pos]

    @rule()
    def clear(self) -> None:
        self.j.clear()
        self.model.clear()

    @rule()
    def reopen(self) -> None:
        self.j = _reopened(self.j, self.path)
        if not self.model:
            return

    @invariant()
    def same_entries(self) -> None:
        assert len(self.j) == len(self.model)
        assert self.j.bytes == sum(len(e[0]) for e in self.model)
        assert list(self.j[:]) == self.model
        if self.model:
            assert self.j[-1] == self.model[-1] and self.j[0] == self.model[0]


TestJournalAgainstAList = JournalAgainstAList.TestCase
TestJournalAgainstAList.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_compaction_fsyncs_nothing_on_the_tick_thread(tmp_path, small_segments, monkeypatch) -> None:
    path = tmp_path / "j"
    j = SegmentJournal(path)
    entries = _entries(1, 300)
    _fill(j, entries)
    j.sync()
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    j.deleteEntriesTo(150)
    wait_for(lambda: (path / journal.START_FILE).exists() and not j._doomed, 10,
             "the syncer recording the start", interval=0.005)
    assert synced == []  # the snapshot it follows is on disk already
    monkeypatch.undo()
    # A crash that loses the start file: opening at the snapshot's entry (the floor the
    # replica passes) gives the same journal.
    (path / journal.START_FILE).unlink()
    j = _reopened(j, path, floor=151)
    assert j[0] == entries[150] and len(j) == 150
    j.close()

"""Formats and upgrades (docs/store-promises.md, "Formats and upgrades").

The registry and its decisions on their own; the data directory's version file
on real directories (one made by the replica's own engine); the Raft port's
hello on engines driven by hand (tests/_engine.py).
"""

from __future__ import annotations

import logging
import pickle
import stat
import struct
from pathlib import Path
from typing import Any

import msgpack
import pysyncobj.journal
import pytest

from raftkv import formats, node
from raftkv.formats import (
    DATA,
    DATA_FORMAT_FILE,
    RAFT,
    FormatError,
    FormatLine,
    entry_format,
    overlaps,
    peer_raft_formats,
    prepare_data_dir,
    raft_format_needed,
)
from raftkv.node import disk, replica
from raftkv.store import Store

from .._engine import Harness
from .._procs import SECRET

# -- the registry -------------------------------------------------------------------


@pytest.mark.parametrize("line", [formats.DATA, formats.RAFT, formats.CLIENT], ids=lambda f: f.name)
def test_every_version_has_its_history_and_no_gaps(line: FormatLine) -> None:
    assert sorted(line.history) == list(range(1, line.newest + 1))
    assert all(text.strip() for text in line.history.values())
    assert line.oldest in line.speaks and line.newest in line.speaks


def test_every_data_format_this_code_reads_converts_to_the_newest() -> None:
    assert all(v in formats.CONVERSIONS for v in range(DATA.oldest, DATA.newest))


def test_a_group_with_old_entries_writes_the_highest_format_every_voter_speaks() -> None:
    both = range(1, 3)
    assert entry_format([both, both], group_format=1) == 2
    assert entry_format([both, None], group_format=1) == 1       # a silent voter: maybe old code
    assert entry_format([both, range(2, 4)], group_format=1) == 2  # a newer one: ours caps it
    # Once the log holds format 2 every replica must apply it: no going back.
    assert entry_format([both, None], group_format=2) == 2
    assert entry_format([None, None], group_format=2) == 2


def test_a_group_whose_log_holds_no_command_writes_the_newest_whoever_is_silent() -> None:
    new_group = formats.NO_COMMANDS
    assert entry_format([None, None], group_format=new_group) == RAFT.newest
    assert entry_format([range(1, 3), None], group_format=new_group) == 2
    # What a voter said still caps it (a hello that announces format 1 alone).
    assert entry_format([range(1, 2), None], group_format=new_group) == 1


def test_what_a_peer_speaks_comes_from_its_hello() -> None:
    assert peer_raft_formats(None) == range(1, 2)                      # no hello: before PreVote
    assert peer_raft_formats({"type": "hello", "features": ["pre_vote"]}) == range(1, 3)
    assert peer_raft_formats({"type": "hello", "raft_formats": [2, 5]}) == range(2, 6)
    assert peer_raft_formats({"type": "hello", "raft_formats": "junk"}) == range(1, 3)
    assert overlaps(range(2, 6)) and not overlaps(range(RAFT.newest + 1, RAFT.newest + 3))


def test_only_a_command_that_uses_a_newer_format_needs_it() -> None:
    assert raft_format_needed({"op": "put", "row": "r", "col": "c", "value": b""}) == 1
    assert raft_format_needed({"op": "put", "row": "r", "col": "c", "value": b"", "ttl": 5}) == 2
    assert raft_format_needed({"op": "put", "ttl": None}) == 1
    assert raft_format_needed({"op": "expire_cells"}) == 2
    assert raft_format_needed({"op": 7}) == 1


# -- the data directory ------------------------------------------------------------------


def _recorded(data_dir: Path) -> tuple[str, int]:
    path = data_dir / DATA_FORMAT_FILE
    return path.read_text(), stat.S_IMODE(path.stat().st_mode)


def test_a_new_directory_records_the_newest_format_private(tmp_path: Path) -> None:
    assert prepare_data_dir(tmp_path / "new") == DATA.newest
    assert _recorded(tmp_path / "new") == (f"{DATA.newest}\n", 0o600)
    assert not (tmp_path / "new" / (DATA_FORMAT_FILE + ".tmp")).exists()


def _legacy_dir(path: Path) -> Store:
    """A data directory as the code of data format 1 left it: a journal, and a snapshot
    of pickled engine bookkeeping then msgpack of the whole store; no version file."""
    store = Store(shards=4)
    for i in range(30):
        store.apply({"op": "put", "row": f"r{i}", "col": "c", "value": b"v%d" % i,
                     "cid": 3, "seq": i + 1, "ack": i})
    path.mkdir()
    bookkeeping = pickle.dumps(((b"", 41, 2), (b"", 40, 2), set()))
    with open(path / "raft.snapshot", "wb") as f:
        f.write(struct.pack(">Q", len(bookkeeping)) + bookkeeping)
        state = store.snapshot()
        del state["raft_format"]  # old code did not record it
        msgpack.pack(state, f, use_bin_type=True)
    _pysyncobj_journal(path, [(b"e%d" % i, i, 2) for i in range(40, 46)], term=2)
    return store


def _pysyncobj_journal(data_dir: Path, entries: list[tuple[bytes, int, int]], term: int) -> None:
    """raft.journal and its term/vote as the code of data formats 1 and 2 left them:
    pysyncobj's own FileJournal (raftkv.node's subclass only added fsyncs)."""
    old = pysyncobj.journal.FileJournal(str(data_dir / "raft.journal"))
    for entry in entries:
        old.add(*entry)
    old.setCurrentTerm(term, None)
    old._destroy()


def test_a_format_1_directory_is_converted_once_into_the_store_on_disk(tmp_path: Path) -> None:
    data_dir = tmp_path / "raft"
    old = _legacy_dir(data_dir)
    snapshot = (data_dir / "raft.snapshot").read_bytes()
    assert prepare_data_dir(data_dir) == DATA.newest == 3
    assert _recorded(data_dir) == ("3\n", 0o600)
    converted = Store(shards=4, path=data_dir / "state")
    try:
        assert converted.snapshot() == {**old.snapshot(), "raft_format": 1}  # cells, versions,
        # exactly-once, clock; old code wrote its entries in Raft format 1
        assert converted.applied_index == 41  # the journal replays from the entry after it
    finally:
        converted.close()
    # The engine still reads its bookkeeping there; the next snapshot replaces it.
    assert (data_dir / "raft.snapshot").read_bytes() == snapshot
    formats._state_onto_disk(data_dir)  # a step interrupted before its version was recorded
    again = Store(shards=4, path=data_dir / "state")
    try:
        assert again.snapshot() == {**old.snapshot(), "raft_format": 1}
    finally:
        again.close()


def test_a_format_2_journal_becomes_segments_the_engine_reads(tmp_path: Path) -> None:
    """What the code of data format 2 left (pysyncobj's journal file, compacted once, and
    its term) is converted on first start; the engine then holds the same entries."""
    data_dir = tmp_path / "raft"
    data_dir.mkdir()
    (data_dir / DATA_FORMAT_FILE).write_text("2\n")
    old = pysyncobj.journal.FileJournal(str(data_dir / "raft.journal"))
    for i in range(1, 301):
        old.add(b"command %d" % i, i, 1 + i // 100)
    old.deleteEntriesTo(99)  # compaction: the journal starts at entry 100
    old.setCurrentTerm(7, None)
    expected = list(old)
    old._destroy()
    assert prepare_data_dir(data_dir) == 3
    assert not (data_dir / "raft.journal").exists()
    assert {p.name for p in data_dir.iterdir()} == {
        DATA_FORMAT_FILE, "raft.journal.d", "raft.journal.meta"}
    segments = data_dir / "raft.journal.d"
    assert stat.S_IMODE(segments.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in segments.iterdir())
    h = Harness(data_dir, replica._Engine)  # the engine on the converted directory
    try:
        assert [h.log[i] for i in range(len(h.log))] == expected
        assert h.log[0] == (b"command 100", 100, 2)
        assert h.engine._SyncObj__raftCurrentTerm == 7
        assert h.engine._journal.bytes == sum(len(e[0]) for e in expected)
    finally:
        h.close()


def test_a_journal_conversion_cut_short_is_done_again_from_the_old_file(tmp_path: Path) -> None:
    _pysyncobj_journal(tmp_path, [(b"c%d" % i, i, 1) for i in range(1, 6)], term=1)
    (tmp_path / DATA_FORMAT_FILE).write_text("2\n")
    half = tmp_path / "raft.journal.d.tmp"   # a run that died while writing the segments
    half.mkdir()
    (half / "00000000000000000001.seg").write_bytes(b"RKVJSEG1 torn")
    assert prepare_data_dir(tmp_path) == 3
    assert not half.exists() and not (tmp_path / "raft.journal").exists()
    converted = disk.SegmentJournal(tmp_path / "raft.journal.d")
    try:
        assert list(converted) == [(b"c%d" % i, i, 1) for i in range(1, 6)]
    finally:
        converted.close()


def test_a_newer_format_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    (tmp_path / DATA_FORMAT_FILE).write_text(f"{DATA.newest + 1}\n")
    (tmp_path / "raft.journal").write_bytes(b"from the future")
    with pytest.raises(FormatError, match=rf"format {DATA.newest + 1}; this code knows formats"):
        prepare_data_dir(tmp_path)
    assert (tmp_path / DATA_FORMAT_FILE).read_text() == f"{DATA.newest + 1}\n"
    assert (tmp_path / "raft.journal").read_bytes() == b"from the future"


@pytest.mark.parametrize("content", ["", "two", "-1", "1.5"])
def test_a_garbled_version_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / DATA_FORMAT_FILE).write_text(content)
    with pytest.raises(FormatError, match="not a data format number"):
        prepare_data_dir(tmp_path)


LINE = FormatLine("data", {1: "one", 2: "two", 3: "three"}, oldest=1)


def test_older_formats_convert_step_by_step_each_step_recorded(tmp_path: Path) -> None:
    (tmp_path / "raft.journal").write_bytes(b"old")  # no version file: format 1
    steps: list[tuple[int, str]] = []

    def step(version: int) -> Any:
        def convert(data_dir: Path) -> None:
            steps.append((version, (data_dir / DATA_FORMAT_FILE).read_text()
                          if (data_dir / DATA_FORMAT_FILE).exists() else "none"))
        return convert

    assert prepare_data_dir(tmp_path, LINE, {1: step(1), 2: step(2)}) == 3
    assert steps == [(1, "none"), (2, "2\n")]
    assert _recorded(tmp_path) == ("3\n", 0o600)


def test_a_conversion_that_fails_resumes_from_the_last_completed_step(tmp_path: Path) -> None:
    (tmp_path / DATA_FORMAT_FILE).write_text("1\n")

    def broken(data_dir: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        prepare_data_dir(tmp_path, LINE, {1: lambda d: None, 2: broken})
    assert (tmp_path / DATA_FORMAT_FILE).read_text() == "2\n"
    assert prepare_data_dir(tmp_path, LINE, {1: broken, 2: lambda d: None}) == 3


def test_a_format_without_its_conversion_is_refused(tmp_path: Path) -> None:
    (tmp_path / DATA_FORMAT_FILE).write_text("1\n")
    with pytest.raises(FormatError, match="upgrade through an earlier release"):
        prepare_data_dir(tmp_path, LINE, {2: lambda d: None})
    assert (tmp_path / DATA_FORMAT_FILE).read_text() == "1\n"


def test_the_replica_refuses_a_newer_directory_before_opening_it(tmp_path: Path) -> None:
    (tmp_path / DATA_FORMAT_FILE).write_text(f"{DATA.newest + 1}\n")
    config = node.ReplicaConfig(raft_addr="127.0.0.1:1", peers=(), data_dir=tmp_path, secret=SECRET)
    with pytest.raises(FormatError):
        node.Replica(config)
    assert not (tmp_path / "raft.journal").exists()


# -- the group's format, in the replicated state -------------------------------------------


def test_the_store_remembers_the_highest_entry_format_it_applied() -> None:
    store = Store(4)
    assert store.raft_format == formats.NO_COMMANDS
    store.apply_entry([{"op": "noop"}])
    assert store.raft_format == 1
    store.apply_entry([1e9, {"op": "noop"}])
    assert store.raft_format == 2
    store.apply_entry([{"op": "noop"}])
    assert store.raft_format == 2
    copy = Store(4)
    copy.restore(msgpack.unpackb(msgpack.packb(store.snapshot()), strict_map_key=False))
    assert copy.raft_format == 2
    older = store.snapshot()
    del older["raft_format"]  # a snapshot made before formats
    copy.restore(older)
    assert copy.raft_format == 1


def test_a_group_that_starts_with_timed_entries_never_records_the_old_format() -> None:
    store = Store(4)
    store.apply_entry([1e9, {"op": "noop"}])
    assert store.raft_format == 2
    fresh = Store(4)
    fresh.restore(msgpack.unpackb(msgpack.packb(Store(4).snapshot()), strict_map_key=False))
    assert fresh.raft_format == formats.NO_COMMANDS  # a snapshot before any command: still new


# -- the Raft port --------------------------------------------------------------------------


def _connected(tmp_path: Path) -> Harness:
    h = Harness(tmp_path, replica._Engine)
    h.engine._SyncObj__onNodeConnected(h.peer)
    return h


def test_a_leader_writes_the_old_format_until_every_voter_said_it_speaks_the_new(tmp_path: Path) -> None:
    h = _connected(tmp_path)
    try:
        h.engine._store.raft_format = 1                   # the log holds old-format entries
        other = next(n for n in h.engine._SyncObj__otherNodes if n != h.peer)
        assert h.engine.entry_format() == 1               # nobody heard from
        h.deliver({"type": "hello", "features": ["pre_vote"], "raft_formats": [1, 2]})
        assert h.engine.peer_raft_formats == {h.peer: range(1, 3)}
        assert h.engine.entry_format() == 1               # the other voter: not yet
        h.engine._SyncObj__onNodeConnected(other)
        h.engine._SyncObj__onMessageReceived(other, {"type": "hello", "features": ["pre_vote"]})
        assert h.engine.entry_format() == 2               # a PreVote-era hello applies both
        h.engine._SyncObj__onNodeDisconnected(other)      # maybe restarting onto other code
        assert h.engine.entry_format() == 1
    finally:
        h.close()


@pytest.mark.parametrize("earlier", [[], [{"op": "noop"}]], ids=["no-command", "old-format-entry"])
def test_a_new_leader_decides_once_it_has_applied_the_earlier_terms(tmp_path: Path, earlier) -> None:
    """No voter has said hello.  Before it has applied its term's no-op a leader may
    hold unapplied entries of the old format: it decides nothing.  Then a log that
    held no command gives the newest format, one with an old-format entry format 1."""
    h = _connected(tmp_path)
    try:
        h.engine._SyncObj__raftCurrentTerm = 1
        h.engine._SyncObj__onBecomeLeader()
        if earlier:  # appended in term 1, not committed then
            h.engine.apply_batch(msgpack.packb(earlier), callback=lambda *_: None)
            h.engine.doTick(0.0)
        h.engine._SyncObj__raftCurrentTerm = 2      # leader again, in a later term
        h.engine._SyncObj__onBecomeLeader()
        noop = h.last_index()
        assert h.engine.entry_format() is None
        h.deliver({"type": "next_node_idx", "next_node_idx": noop + 1, "reset": False,
                   "success": True})                 # a majority has every entry: applied
        h.engine._journal.sync()   # the leader's own disk too (its syncer's work, done here)
        h.engine.doTick(0.0)
        assert h.engine.raftLastApplied == noop
        assert h.engine.entry_format() == (1 if earlier else RAFT.newest)
        assert h.engine._store.raft_format == (1 if earlier else formats.NO_COMMANDS)
    finally:
        h.close()


def test_a_peer_that_shares_no_format_is_refused_with_a_clear_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = _connected(tmp_path)
    closed: list[Any] = []

    class Connection:  # the peer's connection, as the transport holds it
        def disconnect(self) -> None:
            closed.append(h.peer)

    try:
        h.engine._SyncObj__transport._connections[h.peer] = Connection()
        future = [RAFT.newest + 1, RAFT.newest + 2]
        with caplog.at_level(logging.ERROR, logger="raftkv.node"):
            for _ in range(3):  # it redials: refused each time, logged once
                h.deliver({"type": "hello", "features": ["pre_vote"], "raft_formats": future})
        assert closed == [h.peer] * 3
        assert h.peer not in h.engine.peer_raft_formats
        lines = [r.getMessage() for r in caplog.records if "refusing Raft peer" in r.getMessage()]
        assert lines == [f"refusing Raft peer {h.peer.address}: it speaks Raft formats "
                         f"{future[0]} to {future[1]}, this replica {RAFT.oldest} to {RAFT.newest}; "
                         'run code that shares a format (docs/store-promises.md, "Formats and upgrades")']
    finally:
        h.close()

"""Each hardening of pysyncobj in the raftkv.node package, shown on the engine itself.

Every test drives one in-process engine by hand (no tick thread, messages
injected as a peer would send them) and runs twice: on the engine with the
fix, where the defect must be absent, and on the engine without that one fix,
where the same check must see the defect -- so each test demonstrably fails
without its fix.  docs/engine-fixes.md explains each defect.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pysyncobj.journal
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.transport
import pytest

from raftkv import node
from raftkv.errors import ConfigError
from raftkv.node import disk, fixes, journal, replica, syncing
from raftkv.store import Store

from .._engine import Harness, leader_with_a_confirmed_noop, variant
from .._procs import SECRET, free_port, wait_for


def _entries(first: int, last: int, term: int) -> list[tuple[bytes, int, int]]:
    return [(b"\x00", i, term) for i in range(first, last + 1)]


def _fsynced_before(events: list[tuple[str, Any]], file_name: str, message: str) -> bool:
    """Whether every ``message`` that left was preceded by an fsync of the file (any of
    the journal's segments for ``journal.SUFFIX``)."""
    synced = False
    checked = 0
    for kind, what in events:
        if kind == "fsync" and (what in (file_name, file_name + ".tmp")
                                or file_name == journal.SUFFIX and what.endswith(file_name)):
            synced = True
        elif kind == "send" and what == message:
            if not synced:
                return False
            checked += 1
    assert checked, f"no {message} was sent: the scenario did not run"
    return True


# -- a follower keeps matching entries (Follower truncation of matching entries)

@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_late_append_does_not_truncate_acknowledged_entries(tmp_path, fixed) -> None:
    engine = variant(None if fixed else fixes._FollowerKeepsMatchingEntries)
    h = Harness(tmp_path, engine)
    try:
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 10, 1)})
        assert h.last_index() == 10  # appended, and acknowledged to the leader
        # The leader's earlier, shorter message for the same entries arrives late.
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 2, "prevLogTerm": 1, "entries": _entries(3, 5, 1)})
        kept = h.last_index() == 10
        assert kept is fixed, f"log ends at {h.last_index()}"
    finally:
        h.close()


def test_a_real_conflict_still_replaces_the_followers_entries(tmp_path) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 10, 1)})
        h.deliver({"type": "append_entries", "term": 2, "commit_index": 1,
                   "prevLogIdx": 4, "prevLogTerm": 1, "entries": _entries(5, 6, 2)})
        assert h.last_index() == 6
        assert [e[2] for e in h.log[-2:]] == [2, 2]
    finally:
        h.close()


# -- the leader keeps nextIndex (A late reply moves nextIndex back) -----------

@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_late_reply_does_not_move_next_index_back(tmp_path, fixed) -> None:
    engine = variant(None if fixed else fixes._LeaderKeepsNextIndex)
    h = Harness(tmp_path, engine)
    try:
        h.engine._SyncObj__raftCurrentTerm = 1
        h.engine._SyncObj__onBecomeLeader()
        # The leader has sent entries up to 19 optimistically; only 10 are confirmed.
        h.engine._SyncObj__raftNextIndex[h.peer] = 20
        h.engine._SyncObj__raftMatchIndex[h.peer] = 10
        h.deliver({"type": "next_node_idx", "next_node_idx": 15, "reset": False,
                   "success": True})
        assert h.engine._SyncObj__raftMatchIndex[h.peer] == 14
        kept = h.engine._SyncObj__raftNextIndex[h.peer] == 20
        assert kept is fixed
    finally:
        h.close()


# -- the journal is on disk before anyone counts it (The journal) -------------

@pytest.fixture
def held_journal(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """While the event is clear, the journal's syncer waits in its fsyncs (10 s at most):
    a disk that takes its time.  Set at the end, so that the syncer and the engine stop."""
    release = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("journal-syncer"):
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield release
    release.set()


def _acks(events: list[tuple[str, Any]]) -> int:
    return sum(1 for kind, what in events if kind == "send" and what == "next_node_idx")


def _tick_fsyncs(events: list[tuple[str, Any]]) -> list[Any]:
    """The journal's fsyncs on the test's thread (the engine's tick thread here)."""
    return [what for kind, what in events if kind == "fsync" and what.endswith(journal.SUFFIX)]


@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_follower_acknowledges_only_entries_its_journal_synced(
        tmp_path, events, held_journal, fixed) -> None:
    engine = variant(None if fixed else syncing._FollowerAcksWhatIsSynced)
    h = Harness(tmp_path, engine)
    try:
        events.clear()
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 4, 1)})
        # The syncer's fsync is held: hardened, the answer waits for it, and the tick
        # thread fsyncs nothing; stock, the answer claims entries no disk holds.
        assert (_acks(events) == 0) is fixed
        assert _tick_fsyncs(events) == []
        assert h.log.synced_index < 4
        if not fixed:
            return
        held_journal.set()
        wait_for(lambda: h.log.synced_index == 4, 10, "the syncer's round", interval=0.005)
        # The syncer woke the tick thread (the engine's pipe is readable), which sends it.
        assert _woken(h)
        h.engine.doTick(0.0)
        assert _acks(events) == 1
    finally:
        held_journal.set()
        h.close()


def test_a_follower_answers_at_once_when_its_disk_is_quick(tmp_path, events, monkeypatch) -> None:
    """The tick thread waits (ACK_WAIT at most) for the syncer's round and sends the
    answer then, not a tick later after the syncer woke it out of poll()."""
    h = Harness(tmp_path, replica._Engine)
    try:
        events.clear()
        monkeypatch.setattr(syncing, "ACK_WAIT", 5.0)  # a loaded test machine: time enough
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 4, 1)})
        assert _acks(events) == 1 and h.log.synced_index >= 4  # no tick in between
        assert _tick_fsyncs(events) == []
    finally:
        h.close()


def test_a_slow_disk_costs_the_tick_one_wait_until_a_round_ends(
        tmp_path, events, held_journal, monkeypatch) -> None:
    h = Harness(tmp_path, replica._Engine)
    waits: list[float] = []
    real_wait = h.log.wait_synced

    def counted(index: int, timeout: float) -> bool:
        waits.append(timeout)
        return real_wait(index, timeout)

    monkeypatch.setattr(h.log, "wait_synced", counted)
    try:
        events.clear()
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 4, 1)})
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 4, "prevLogTerm": 1, "entries": _entries(5, 6, 1)})
        assert _acks(events) == 0 and waits == [syncing.ACK_WAIT]  # the second did not wait
        held_journal.set()
        wait_for(lambda: h.log.synced_index == 6, 10, "the syncer's round", interval=0.005)
        h.engine.doTick(0.0)
        assert _acks(events) == 2
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 6, "prevLogTerm": 1, "entries": _entries(7, 7, 1)})
        assert len(waits) == 2  # a round ended since: the disk may be quick again
    finally:
        held_journal.set()
        h.close()


def test_the_waits_for_the_syncer_in_one_poll_are_bounded(
        tmp_path, monkeypatch) -> None:
    """A burst of appends read in one poll(), each round ending within ACK_WAIT but not
    at once (a busy disk): each waited for its round, 20 to 40 ms in all in
    bench.capacity's fill."""
    h = Harness(tmp_path, replica._Engine)

    def slow_fsync(fd: int) -> None:  # the same time whatever else uses the disk
        time.sleep(0.0006)

    waited: list[float] = []
    real_wait = h.log.wait_synced

    def timed(index: int, timeout: float) -> bool:
        began = time.monotonic()
        try:
            return real_wait(index, timeout)
        finally:
            waited.append(time.monotonic() - began)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(h.log, "wait_synced", timed)
    try:
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,  # a first segment
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 3, 1)})
        wait_for(lambda: h.log.synced_index == 3, 10, "the syncer's round", interval=0.005)
        h.engine.doTick(0.0)          # a gap begins: what follows is one poll()'s messages
        waited.clear()
        for first in range(4, 44, 2):  # 20 appends, each answered after a round
            h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                       "prevLogIdx": first - 1, "prevLogTerm": 1,
                       "entries": _entries(first, first + 1, 1)})
        assert len(waited) >= 2 and sum(waited) <= syncing.ACK_WAITS_PER_GAP + 0.001
        h.engine.doTick(0.0)          # the next gap may wait again
        before = len(waited)
        wait_for(lambda: h.log.synced_index == 43, 10, "the syncer's round", interval=0.005)
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 43, "prevLogTerm": 1, "entries": _entries(44, 44, 1)})
        assert len(waited) == before + 1
    finally:
        h.close()


def test_a_held_answer_is_dropped_when_the_term_changes(tmp_path, events, held_journal) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        events.clear()
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1,
                   "prevLogIdx": 1, "prevLogTerm": 0, "entries": _entries(2, 4, 1)})
        h.deliver({"type": "request_vote", "term": 2, "last_log_index": 4,
                   "last_log_term": 1})   # a new term: the old leader's answer is stale
        held_journal.set()
        wait_for(lambda: h.log.synced_index == 4, 10, "the syncer's round", interval=0.005)
        h.engine.doTick(0.0)
        assert _acks(events) == 0
    finally:
        h.close()


def _woken(h: Harness, wait: float = 1.0) -> bool:
    """Whether the engine's wake-up pipe (its tick's way out of poll()) was written to."""
    wake = h.engine._SyncObj__pipeNotifier._PipeNotifier__pipeR
    return select.select([wake], [], [], wait)[0] == [wake]


@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_the_leader_counts_itself_only_for_entries_its_journal_synced(
        tmp_path, events, held_journal, fixed) -> None:
    engine = variant(None if fixed else syncing._LeaderCountsWhatIsSynced)
    h = Harness(tmp_path, engine)
    try:
        noop = leader_with_a_confirmed_noop(h)
        h.engine.doTick(0.0)
        # The leader's own fsync is held: itself and one follower would be 2 of 3, but
        # its disk does not hold the entry yet.
        assert h.log.synced_index < noop
        assert (h.engine._SyncObj__raftCommitIndex < noop) is fixed
        assert h.engine._SyncObj__raftMatchIndex[h.peer] == noop  # the true value, back
        assert _tick_fsyncs(events) == []
        held_journal.set()
        wait_for(lambda: h.log.synced_index == noop, 10, "the syncer's round", interval=0.005)
        assert _woken(h) is fixed  # the count waited for the syncer: it woke the tick
        h.engine.doTick(0.0)
        assert h.engine._SyncObj__raftCommitIndex == noop
    finally:
        h.close()


def test_the_leader_commits_what_a_majority_of_followers_holds_before_its_own_sync(
        tmp_path, held_journal) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        noop = leader_with_a_confirmed_noop(h)
        other = next(n for n in h.engine._SyncObj__otherNodes if n != h.peer)
        h.engine._SyncObj__onMessageReceived(other, {
            "type": "next_node_idx", "next_node_idx": noop + 1, "reset": False,
            "success": True})
        h.engine.doTick(0.0)   # both followers hold it: 2 of 3 without the leader
        assert h.log.synced_index < noop and h.engine._SyncObj__raftCommitIndex == noop
    finally:
        h.close()


def test_the_leader_syncs_a_new_entry_while_the_followers_write_it(tmp_path, events) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        h.engine._SyncObj__raftCurrentTerm = 1
        h.engine._SyncObj__onBecomeLeader()
        h.engine.doTick(0.0)
        before = h.last_index()
        events.clear()
        h.engine.apply_batch(msgpack.packb([1.0]), callback=lambda *_: None)
        # One tick appends the entry and sends it (to no one here: the peers are not
        # connected), and asks the syncer for its fsync, which runs while the tick
        # waits for the followers' answers; the tick itself fsyncs nothing.
        h.engine.doTick(0.0)
        assert h.last_index() == before + 1
        assert _tick_fsyncs(events) == []
        wait_for(lambda: h.log.synced_index == before + 1, 10, "the syncer's round",
                 interval=0.005)
        # Nothing waited for that round (no follower had answered): it woke nothing, as
        # an extra tick per write would cost the leader's CPU.
        assert not _woken(h, wait=0.2)
    finally:
        h.close()


def test_a_group_of_ones_leader_stops_on_a_failed_fsync_and_commits_nothing_after(
        tmp_path, monkeypatch) -> None:
    # Its leader fsyncs inline, on the tick thread; the engine's tick thread logs what a
    # tick raises and ticks again.  After a failed fsync the kernel may have dropped the
    # pages: no later tick may count them synced, and the replica stops.
    stopped: list[str] = []
    monkeypatch.setattr(syncing, "_stop_replica", stopped.append)  # not os._exit here
    config = node.ReplicaConfig(raft_addr=f"127.0.0.1:{free_port()}", peers=(),
                                data_dir=tmp_path, secret=SECRET, shards=4)
    conf = replica._engine_conf(config, Store(4))
    conf.autoTick = False
    engine = replica._Engine(config, Store(4), conf)
    log = engine._SyncObj__raftLog
    real_fsync = os.fsync
    failing = threading.Event()

    def fsync(fd: int) -> None:  # the next fsync of a segment fails, once
        if failing.is_set() and os.readlink(f"/proc/self/fd/{fd}").endswith(journal.SUFFIX):
            failing.clear()
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        engine._SyncObj__raftCurrentTerm = 1
        engine._SyncObj__onBecomeLeader()
        engine.doTick(0.0)
        before = log[-1][1]
        assert engine._SyncObj__raftCommitIndex == log.synced_index == before
        failing.set()
        engine.apply_batch(msgpack.packb([1.0]), callback=lambda *_: None)
        # The tick appends the entry and asks the syncer; its fsync fails (on the syncer's
        # thread, or at the next tick's inline sync, whichever comes first).
        engine.doTick(0.0)
        raised = 0
        for _ in range(3):                       # the engine's tick thread ticks again
            try:
                engine.doTick(0.0)
            except OSError:
                raised += 1
        assert not failing.is_set(), "the fsync did not fail: the scenario did not run"
        assert log[-1][1] == before + 1
        assert log.synced_index == before, "a round after the failed fsync claimed its entry"
        assert engine._SyncObj__raftCommitIndex == before
        assert stopped and "fsync failed" in stopped[0]
        assert raised >= 2, "a tick after the failed fsync went on to the commit loop"
    finally:
        engine.destroy()
        if engine._snapshot_context.serializer is not None:
            engine._snapshot_context.serializer.stop()


# -- term and vote are on disk before the vote leaves (Term and vote) ---------

@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_vote_is_fsynced_before_it_is_granted(tmp_path, events, monkeypatch, fixed) -> None:
    if not fixed:  # the journal looks the class up when it is built
        monkeypatch.setattr(pysyncobj.journal, "MetaStorer", disk._DurableMetaStorer.__bases__[0])
    h = Harness(tmp_path, replica._Engine)
    try:
        events.clear()
        h.deliver({"type": "request_vote", "term": 5, "last_log_index": 1,
                   "last_log_term": 0})
        assert h.engine._SyncObj__votedForNodeId is not None
        assert _fsynced_before(events, "raft.journal.meta", "response_vote") is fixed
    finally:
        h.close()


# -- the pickle protocol (The pickle protocol) --------------------------------

def test_journal_entries_use_pickle_protocol_5(tmp_path) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        h.engine._SyncObj__raftCurrentTerm = 1
        h.engine._SyncObj__onBecomeLeader()
        h.engine.apply_batch(b"\x90", callback=lambda *_: None)
        h.engine.doTick(0.0)
        command = h.log[-1][0]
        assert command[1:3] == b"\x80\x05", command[:8]
    finally:
        h.close()


# -- the secret, and frames a stranger announces (The password is mandatory,
# Huge frame headers) ----------------------------------------------------------

def test_a_replica_refuses_to_run_without_the_secret(tmp_path) -> None:
    config = node.ReplicaConfig(raft_addr="127.0.0.1:1", peers=(), data_dir=tmp_path,
                                secret=b"")
    with pytest.raises(ConfigError, match="secret"):
        node.Replica(config)


def test_raft_frame_limit_is_above_every_legitimate_frame() -> None:
    # appendEntriesBatchSizeBytes of entries, Fernet's base64 (4/3) and headers.
    assert 4 * node.ENTRY_CAP * 4 // 3 + 4096 < node.MAX_RAFT_FRAME
    assert struct.calcsize("i") == 4


# -- a follower answers the pieces of a snapshot (Snapshots and compaction) ------

def _piece(term: int, offset: int) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": 1,
            "serialized": (b"p" * 16, offset == 0, False, offset)}


@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_follower_answers_each_piece_of_a_snapshot(tmp_path, events, fixed) -> None:
    engine = variant(None if fixed else fixes._FollowerAnswersSnapshotPieces)
    h = Harness(tmp_path, engine)
    try:
        for offset in (0, 16, 32):
            h.deliver(_piece(3, offset))
        answers = [what for kind, what in events if kind == "send" and what == "next_node_idx"]
        # Without answers the leader drops a connection silent for its timeout and
        # starts the transfer over, for ever.
        assert len(answers) == (3 if fixed else 0)
    finally:
        h.close()


def test_pieces_from_a_deposed_leader_are_not_answered(tmp_path, events) -> None:
    h = Harness(tmp_path, replica._Engine)
    try:
        h.engine._SyncObj__raftCurrentTerm = 5
        h.deliver(_piece(3, 0))   # the engine ignores a lower term; so must the answer
        assert ("send", "next_node_idx") not in events
    finally:
        h.close()


def test_a_snapshot_piece_is_stored_not_compressed_and_entries_still_are() -> None:
    """zlib at level 3 ran at about 40 MB/s on a snapshot's pages: catch-up was CPU-bound."""
    codec = pysyncobj.tcp_connection.zlib
    # Pages that would compress, so that only a stored piece keeps its size.
    piece, batch = b"page " * (256 * 1024 // 5), b"entry " * 20_000   # 120 KB of entries
    stored, compressed = codec.compress(piece, 3), codec.compress(batch, 3)
    assert len(stored) > len(piece) and zlib.decompress(stored) == piece  # level 0: framing only
    assert len(compressed) < len(batch) // 10 and zlib.decompress(compressed) == batch


def test_the_commit_index_is_not_fsynced_every_second(tmp_path, events) -> None:
    """Two fsyncs a second on the tick thread held it past a second when the disk was busy."""
    h = Harness(tmp_path, replica._Engine)
    try:
        journal = h.engine._SyncObj__raftLog
        before = len(events)
        journal.setRaftCommitIndex(5)
        journal.onOneSecondTimer()
        assert [e for e in events[before:] if e[0] == "fsync"] == []
        journal.setCurrentTerm(3, None)   # term and vote: stored durably at once, as before
        assert any(e[0] == "fsync" for e in events[before:])
    finally:
        h.close()


# -- snapshots in proportion to the store (Snapshots and compaction) ------------

def test_snapshots_come_in_proportion_to_a_large_store(tmp_path, monkeypatch) -> None:
    h = Harness(tmp_path, variant(None))
    try:
        db = h.engine._store.db
        entries, size = h.config.log_compaction_entries, h.config.log_compaction_bytes
        monkeypatch.setattr(db, "file_bytes", lambda: 100 << 20)
        assert h.engine.compaction_bounds() == (entries, size)  # small: the settings
        monkeypatch.setattr(db, "file_bytes", lambda: 2 << 30)
        share = (2 << 30) // fixes.STORE_SHARE
        assert h.engine.compaction_bounds() == (entries * share // size, share)
        # A journal past the settings but not the store's share is not compacted...
        h.engine._SyncObj__forceLogCompaction = False
        monkeypatch.setattr(type(h.engine._journal), "bytes", size + 1, raising=False)
        h.engine.doTick(0.0)
        assert not h.engine._SyncObj__forceLogCompaction
    finally:
        h.close()


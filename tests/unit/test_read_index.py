"""ReadIndex: the leader's confirmation rounds (raftkv/readindex.py), and the engine that
sends and answers them (raftkv/node/read_index.py), driven by hand.

The process tests are in tests/integration/test_linearizability.py (a deposed leader
must not serve a stale read; every fault run checks linearizable with reads on
this path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pysyncobj.transport
import pytest

from raftkv import formats, node, prevote
from raftkv.errors import NotLeader, RaftKVError, Timeout
from raftkv.node import replica
from raftkv.readindex import READ_ACK, READ_PROBE, READ_TIMEOUT, ROUND_RETRY, Read, ReadRounds
from raftkv.store import Store

from .._procs import SECRET, free_port

Answers = list[tuple[str, int | None, RaftKVError | None]]


def _read(answers: Answers, name: str, deadline: float = 100.0) -> Read:
    return Read(lambda index, err: answers.append((name, index, err)), deadline)


# -- the rounds ------------------------------------------------------------------

def test_a_majority_counts_the_leader() -> None:
    rounds = ReadRounds(term=3, voters=3)
    answers: Answers = []
    rounds.add(_read(answers, "a"))
    seq, confirmed = rounds.start_round(commit_index=17, now=0.0)
    assert confirmed == []                       # the leader alone is 1 of 3
    confirmed = rounds.ack("p1", term=3, seq=seq)  # the leader and one follower: 2 of 3
    assert [r.index for r in confirmed] == [17]


def test_five_voters_need_two_acks() -> None:
    rounds = ReadRounds(term=1, voters=5)
    rounds.add(_read([], "a"))
    seq, _ = rounds.start_round(5, 0.0)
    assert rounds.ack("p1", 1, seq) == []
    assert rounds.ack("p1", 1, seq) == []  # the same peer twice is still one
    assert len(rounds.ack("p2", 1, seq)) == 1


def test_an_ack_of_an_earlier_round_does_not_confirm_a_later_read() -> None:
    rounds = ReadRounds(term=1, voters=3)
    answers: Answers = []
    rounds.add(_read(answers, "early"))
    first, _ = rounds.start_round(10, 0.0)
    rounds.add(_read(answers, "late"))     # arrived after round `first` was sent
    second, _ = rounds.start_round(12, 0.05)
    confirmed = rounds.ack("p1", 1, first)
    assert [r.index for r in confirmed] == [10]  # the early read only
    assert rounds.pending == 1
    assert [r.index for r in rounds.ack("p2", 1, first)] == []  # however many peers say so
    assert [r.index for r in rounds.ack("p2", 1, second)] == [12]


def test_an_ack_of_a_later_round_confirms_the_earlier_ones() -> None:
    rounds = ReadRounds(term=1, voters=3)
    rounds.add(_read([], "a"))
    rounds.start_round(10, 0.0)
    rounds.add(_read([], "b"))
    second, _ = rounds.start_round(11, 0.2)
    assert sorted(r.index for r in rounds.ack("p1", 1, second)) == [10, 11]
    assert rounds.pending == 0


def test_reads_that_arrive_together_share_one_round() -> None:
    rounds = ReadRounds(term=1, voters=3)
    for name in "abcdef":
        rounds.add(_read([], name))
    seq, _ = rounds.start_round(9, 0.0)
    assert len(rounds.ack("p1", 1, seq)) == 6


def test_acks_of_another_term_or_an_unsent_round_count_for_nothing() -> None:
    rounds = ReadRounds(term=2, voters=3)
    rounds.add(_read([], "a"))
    seq, _ = rounds.start_round(4, 0.0)
    assert rounds.ack("p1", 1, seq) == []       # a follower still in the earlier term
    assert rounds.ack("p1", 3, seq) == []
    assert rounds.ack("p1", 2, seq + 1) == []   # a round never sent
    assert rounds.pending == 1


def test_a_group_of_one_confirms_at_once() -> None:
    rounds = ReadRounds(term=1, voters=1)
    rounds.add(_read([], "a"))
    _, confirmed = rounds.start_round(3, 0.0)
    assert [r.index for r in confirmed] == [3]


def test_a_round_in_flight_holds_new_reads_until_it_is_answered_or_old() -> None:
    rounds = ReadRounds(term=1, voters=3)
    assert not rounds.round_due(0.0)  # nothing to confirm
    rounds.add(_read([], "a"))
    assert rounds.round_due(0.0)
    rounds.start_round(1, 0.0)
    rounds.add(_read([], "b"))
    assert not rounds.round_due(ROUND_RETRY / 2)  # b waits for the next round
    assert rounds.round_due(ROUND_RETRY)          # the first was lost, perhaps: again


def test_reads_past_their_deadline_are_returned_and_forgotten() -> None:
    rounds = ReadRounds(term=1, voters=3)
    rounds.add(_read([], "soon", deadline=1.0))
    rounds.start_round(1, 0.0)
    rounds.add(_read([], "later", deadline=5.0))
    assert len(rounds.expired(2.0)) == 1
    assert rounds.pending == 1
    assert len(rounds.drain()) == 1 and rounds.pending == 0


# -- the engine ------------------------------------------------------------------

class Engine:
    """One engine ticked by hand; what it sends is recorded; peers[0] speaks for a peer."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        peers = tuple(f"127.0.0.1:{free_port()}" for _ in range(2))
        config = node.ReplicaConfig(raft_addr=f"127.0.0.1:{free_port()}", peers=peers,
                                    data_dir=root, secret=SECRET, shards=4)
        conf = replica._engine_conf(config, Store(4))
        conf.autoTick = False
        self.sent: list[tuple[str, dict[str, Any]]] = []
        monkeypatch.setattr(pysyncobj.transport.TCPTransport, "send",
                            lambda _t, peer, msg: self.sent.append((peer.address, msg)) or True)
        self.engine = replica._Engine(config, Store(4), conf)
        nodes = {n.address: n for n in self.engine._SyncObj__otherNodes}
        self.peers = [nodes[a] for a in peers]
        self.answers: Answers = []

    def deliver(self, peer: int, message: dict[str, Any]) -> None:
        self.engine._SyncObj__onMessageReceived(self.peers[peer], message)

    def lead(self, commit: bool = True) -> int:
        """Become leader of term 1; with ``commit``, its no-op is committed and applied."""
        e = self.engine
        e._SyncObj__raftCurrentTerm = 1
        e._SyncObj__onBecomeLeader()
        noop: int = e._SyncObj__raftLog[-1][1]
        if commit:
            self.deliver(0, {"type": "next_node_idx", "next_node_idx": noop + 1, "reset": False,
                             "success": True})
            e._journal.sync()  # the leader's own disk holds it (its syncer's work, done here)
            e.doTick(0.0)
            assert e._SyncObj__raftLastApplied == noop
        return noop

    def read(self, name: str) -> None:
        self.engine.read_index(lambda index, err: self.answers.append((name, index, err)))

    def probes(self) -> list[dict[str, Any]]:
        return [m for _, m in self.sent if m.get("type") == READ_PROBE]

    def close(self) -> None:
        self.engine.destroy()
        if self.engine._snapshot_context.serializer is not None:
            self.engine._snapshot_context.serializer.stop()


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    e = Engine(tmp_path, monkeypatch)
    yield e
    e.close()


def test_the_leader_answers_a_read_once_a_follower_acks_its_round(engine: Engine) -> None:
    noop = engine.lead()
    engine.read("a")
    engine.engine.doTick(0.0)
    probes = engine.probes()
    assert len(probes) == 2 and probes[0] == {"type": READ_PROBE, "term": 1, "seq": 1}
    assert engine.answers == []  # not before a majority
    engine.deliver(1, {"type": READ_ACK, "term": 1, "seq": 1})
    assert engine.answers == [("a", noop, None)]


def test_a_new_leader_sends_no_round_before_its_first_entry_is_committed(engine: Engine) -> None:
    noop = engine.lead(commit=False)
    engine.read("a")
    engine.engine.doTick(0.0)
    assert engine.probes() == [] and engine.answers == []  # waits, not refused
    engine.deliver(0, {"type": "next_node_idx", "next_node_idx": noop + 1, "reset": False,
                       "success": True})
    engine.engine._journal.sync()  # the leader's own disk holds it
    engine.engine.doTick(0.0)  # commits the no-op
    engine.engine.doTick(0.0)  # the round goes out
    assert len(engine.probes()) == 2
    engine.deliver(0, {"type": READ_ACK, "term": 1, "seq": 1})
    assert engine.answers == [("a", noop, None)]


def test_a_follower_is_refused_and_a_deposed_leaders_reads_fail(engine: Engine) -> None:
    engine.read("follower")
    engine.engine.doTick(0.0)
    assert [(n, type(err)) for n, _, err in engine.answers] == [("follower", NotLeader)]
    engine.lead()
    engine.read("deposed")
    engine.engine.doTick(0.0)
    # A leader of term 2 speaks: this one follows it, and its read cannot be confirmed.
    engine.deliver(1, {"type": "append_entries", "term": 2, "commit_index": 0})
    engine.deliver(0, {"type": READ_ACK, "term": 1, "seq": 1})  # late, from term 1
    engine.engine.doTick(0.0)
    assert [(n, type(err)) for n, _, err in engine.answers[1:]] == [("deposed", NotLeader)]


def test_an_unconfirmed_read_times_out(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from raftkv.node import read_index
    engine.lead()
    now = read_index._engine_clock()
    engine.read("a")
    engine.engine.doTick(0.0)
    monkeypatch.setattr(read_index, "_engine_clock", lambda: now + READ_TIMEOUT + 1)
    engine.engine.doTick(0.0)
    assert [(n, type(err)) for n, _, err in engine.answers] == [("a", Timeout)]


def test_a_follower_acks_only_its_leader_in_its_term(engine: Engine) -> None:
    engine.deliver(0, {"type": "append_entries", "term": 3, "commit_index": 0})  # peer 0 leads
    engine.sent.clear()
    engine.deliver(1, {"type": READ_PROBE, "term": 3, "seq": 1})  # not our leader
    engine.deliver(0, {"type": READ_PROBE, "term": 2, "seq": 2})  # a term behind
    engine.deliver(0, {"type": READ_PROBE, "term": 4, "seq": 3})  # a term not yet ours
    assert engine.sent == []
    engine.deliver(0, {"type": READ_PROBE, "term": 3, "seq": 4})
    assert engine.sent == [(engine.peers[0].address, {"type": READ_ACK, "term": 3, "seq": 4})]


def test_reads_skip_the_log_only_while_a_majority_speaks_read_index(engine: Engine) -> None:
    assert not engine.engine.read_index_quorum()  # no hello yet: peers may be old code
    old = [formats.RAFT.oldest, formats.READ_INDEX - 1]
    engine.deliver(0, {"type": prevote.HELLO, "features": [], "raft_formats": old})
    assert not engine.engine.read_index_quorum()
    engine.deliver(1, {"type": prevote.HELLO, "features": [],
                       "raft_formats": formats.announce()})
    assert engine.engine.read_index_quorum()  # itself and one peer: 2 of 3

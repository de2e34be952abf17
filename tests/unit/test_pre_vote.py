"""PreVote (docs/engine-fixes.md, "A rejoining replica deposes the leader").

The decisions of raftkv.prevote on their own, then engines driven by hand as in
tests/_engine.py: no tick thread, messages injected as a peer would send
them, every message an engine sends recorded.  The first engine test runs on
the hardened engine and on the same engine without PreVote, where the leader
must be seen stepping down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pysyncobj.transport
import pytest

from raftkv import formats
from raftkv.node import elections, replica
from raftkv.prevote import HELLO_GRACE, LogEnd, PeerFeatures, PreVoteRound, grants_pre_vote

from .._engine import Harness, variant

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2

# -- the decisions ----------------------------------------------------------------

GRANTED = dict(asked_term=6, asker_log=LogEnd(5, 100), own_term=5, own_log=LogEnd(5, 100),
               is_leader=False, leader_heard_ago=1.0, min_election_timeout=0.4)


def test_a_peer_with_a_log_as_good_that_lost_its_leader_says_yes() -> None:
    assert grants_pre_vote(**GRANTED)
    assert grants_pre_vote(**{**GRANTED, "leader_heard_ago": None})       # never had one
    assert grants_pre_vote(**{**GRANTED, "asker_log": LogEnd(6, 1)})       # a later term wins
    assert grants_pre_vote(**{**GRANTED, "asker_log": LogEnd(5, 101)})     # longer, same term


@pytest.mark.parametrize("change", [
    {"is_leader": True},                         # the leader is alive: it is the asker's leader
    {"leader_heard_ago": 0.1},                   # a leader spoke within the minimum timeout
    {"asker_log": LogEnd(5, 99)},                # the asker is behind: it missed writes
    {"asker_log": LogEnd(4, 500)},               # a longer log of an older term is behind too
    {"asked_term": 5},                           # we are already in that term
], ids=["leader", "leader-heard", "shorter-log", "older-log-term", "same-term"])
def test_a_peer_says_no(change: dict[str, Any]) -> None:
    assert not grants_pre_vote(**{**GRANTED, **change})


def test_a_round_needs_a_majority_counting_the_asker() -> None:
    round_ = PreVoteRound(term=3)
    assert not round_.won(voters=3)
    round_.granted.add("b")
    assert round_.won(voters=3)
    assert not round_.won(voters=5)
    assert round_.won(voters=5, counted_as_yes={"c"})
    assert not round_.won(voters=5, counted_as_yes={"b"})  # one peer is one yes
    assert PreVoteRound(term=1).won(voters=1)              # a group of one


def test_a_peer_connected_past_the_grace_without_hello_predates_pre_vote() -> None:
    peers = PeerFeatures(grace=HELLO_GRACE)
    peers.connected("old", now=0.0)
    peers.connected("new", now=0.0)
    peers.said_hello("new", ["pre_vote"])
    peers.connected("late", now=HELLO_GRACE)
    assert peers.silent_old_peers(now=HELLO_GRACE - 0.1) == set()
    assert peers.silent_old_peers(now=HELLO_GRACE) == {"old"}
    peers.connected("new", now=HELLO_GRACE)   # reconnected: maybe restarted onto old code
    assert peers.silent_old_peers(now=2 * HELLO_GRACE) == {"old", "new", "late"}
    peers.disconnected("old")
    peers.said_hello("late", ["something else"])
    assert peers.silent_old_peers(now=2 * HELLO_GRACE) == {"new", "late"}


# -- engines driven by hand ------------------------------------------------------------

@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every message any engine hands its transport, in order."""
    seen: list[dict[str, Any]] = []
    real_send = pysyncobj.transport.TCPTransport.send

    def send(self: Any, target: Any, message: dict[str, Any]) -> bool:
        seen.append(dict(message))
        return real_send(self, target, message)

    monkeypatch.setattr(pysyncobj.transport.TCPTransport, "send", send)
    return seen


def _follower(root: Path, engine: type = replica._Engine, term: int = 1) -> Harness:
    root.mkdir(parents=True, exist_ok=True)
    h = Harness(root, engine)
    h.engine._SyncObj__raftCurrentTerm = term
    return h


def _tick(h: Harness) -> None:
    # The engine stands only when connected to someone; the peers are not really there
    # (a tick's failed connect marks them gone again).
    h.engine._SyncObj__connectedNodes.add(h.peer)
    h.engine.doTick(0.0)


def _timer_fires(h: Harness) -> None:
    h.engine._SyncObj__raftElectionDeadline = 0
    _tick(h)


def _types(sent: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in sent]


@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_timed_out_follower_does_not_depose_a_live_leader(tmp_path, sent, fixed) -> None:
    engine = variant(None if fixed else elections._PreVote)
    follower = _follower(tmp_path / "f", engine)
    (tmp_path / "l").mkdir()
    leader = Harness(tmp_path / "l", engine)
    try:
        leader.engine._SyncObj__raftCurrentTerm = 1
        leader.engine._SyncObj__onBecomeLeader()
        # The follower was cut off (or restarted): its timer fires, it is behind.
        sent.clear()
        _timer_fires(follower)
        asked = list(sent)
        assert asked, "the follower sent nothing"
        assert (follower.engine._SyncObj__raftCurrentTerm == 1) is fixed
        assert ("request_vote" not in _types(asked)) is fixed
        for message in asked:   # the connection heals: the leader receives what it sent
            leader.deliver(message)
        stayed = (leader.engine._SyncObj__raftState == LEADER
                  and leader.engine._SyncObj__raftCurrentTerm == 1)
        assert stayed is fixed
        if fixed:
            reply = [m for m in sent if m["type"] == "pre_vote_reply"]
            assert reply and not reply[0]["granted"] and reply[0]["voter_term"] == 1
    finally:
        follower.close()
        leader.close()


def test_a_majority_of_yeses_starts_the_real_election(tmp_path, sent) -> None:
    h = _follower(tmp_path)
    try:
        _timer_fires(h)
        assert _types(sent) == ["pre_vote", "pre_vote"]
        assert sent[0]["term"] == 2 and h.engine._SyncObj__raftCurrentTerm == 1
        assert h.engine._SyncObj__raftState == FOLLOWER
        h.deliver({"type": "pre_vote_reply", "term": 1, "granted": True, "voter_term": 1})
        _tick(h)  # an earlier round's yes counts for nothing
        assert "request_vote" not in _types(sent)
        h.deliver({"type": "pre_vote_reply", "term": 2, "granted": True, "voter_term": 1})
        _tick(h)
        assert h.engine._SyncObj__raftState == CANDIDATE
        assert h.engine._SyncObj__raftCurrentTerm == 2
        assert "request_vote" in _types(sent)
    finally:
        h.close()


def test_a_refusal_from_a_later_term_is_adopted(tmp_path, sent) -> None:
    h = _follower(tmp_path)
    try:
        _timer_fires(h)
        h.deliver({"type": "pre_vote_reply", "term": 2, "granted": False, "voter_term": 7})
        _tick(h)
        assert h.engine._SyncObj__raftCurrentTerm == 7
        assert h.engine._SyncObj__raftState == FOLLOWER
        assert "request_vote" not in _types(sent)
    finally:
        h.close()


def test_a_follower_that_hears_its_leader_says_no_and_changes_nothing(tmp_path, sent) -> None:
    h = _follower(tmp_path)
    try:
        ask = {"type": "pre_vote", "term": 2, "last_log_index": 1, "last_log_term": 0}
        h.deliver(ask)   # no leader heard yet, the same log: yes
        h.deliver({"type": "append_entries", "term": 1, "commit_index": 1})  # a heartbeat
        h.deliver(ask)
        assert [m["granted"] for m in sent if m["type"] == "pre_vote_reply"] == [True, False]
        assert h.engine._SyncObj__raftCurrentTerm == 1
        assert h.engine._SyncObj__votedForNodeId is None
        assert h.engine._SyncObj__raftState == FOLLOWER
    finally:
        h.close()


@pytest.mark.parametrize("hello", [False, True], ids=["old-peer", "new-peer"])
def test_a_peer_that_never_said_hello_counts_as_yes(tmp_path, sent, hello) -> None:
    """A mixed group during an upgrade: an old peer never answers a pre_vote, so it must
    not block elections; a peer that said hello must answer."""
    h = _follower(tmp_path)
    try:
        h.engine._peers.grace = 0.0
        h.engine._SyncObj__onNodeConnected(h.peer)
        assert {"type": "hello", "features": ["pre_vote"],
                "raft_formats": formats.announce()} in sent
        if hello:
            h.deliver({"type": "hello", "features": ["pre_vote"]})
        _timer_fires(h)
        stood = "request_vote" in _types(sent)
        assert stood is not hello
    finally:
        h.close()


def test_a_replica_above_the_live_leaders_term_stands_for_real(tmp_path, sent) -> None:
    """Terms never go back, and the engine ignores a leader of a lower term: only a real
    election can bring such a replica back (etcd does the same)."""
    h = _follower(tmp_path, term=5)
    try:
        h.deliver({"type": "append_entries", "term": 3, "commit_index": 1})
        _timer_fires(h)
        assert "request_vote" in _types(sent)
        assert h.engine._SyncObj__raftCurrentTerm == 6
    finally:
        h.close()


def test_a_timer_that_passes_during_a_slow_tick_does_not_make_the_engine_stand(
        tmp_path, sent) -> None:
    """The engine checks its timer after the start of its tick (after loading a snapshot,
    after flushing the journal); PreVote must decide before, and the engine never alone."""
    h = _follower(tmp_path)
    try:
        _tick(h)  # bound and settled
        h.engine._SyncObj__numOneSecondDumps = 0  # the once-a-second flush runs this tick...
        h.log.onOneSecondTimer = lambda: time.sleep(0.1)  # ...and takes 100 ms
        h.engine._SyncObj__raftElectionDeadline = elections._engine_clock() + 0.03  # its clock
        sent.clear()
        _tick(h)
        assert "request_vote" not in _types(sent)
        assert h.engine._SyncObj__raftCurrentTerm == 1
        _tick(h)  # the timer has passed by now: the next tick asks first
        assert _types(sent) == ["pre_vote", "pre_vote"]
    finally:
        h.close()

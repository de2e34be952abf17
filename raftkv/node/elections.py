"""PreVote wired into the engine (docs/engine-fixes.md, "A rejoining replica deposes the
leader"); the decisions are :mod:`raftkv.prevote`'s.
"""

from __future__ import annotations

import math
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.monotonic import monotonic as _engine_clock  # CLOCK_MONOTONIC_RAW, not time.monotonic

from .. import formats, prevote
from ..store import Store
from .config import ReplicaConfig
from .fixes import _EngineBase
from .pinned import _RAFT_STATE


class _PreVote(_EngineBase):
    """A replica asks a majority before it bumps its term (Raft thesis section 9.6).

    pysyncobj's follower, when its election timer fires, bumps its term at once
    and asks for votes; the leader that receives the higher term steps down, even
    when the asker is a replica that was merely cut off or restarted behind and
    cannot win.  Here the timer sends :data:`~raftkv.prevote.PRE_VOTE` instead,
    changing nothing, and the real election runs only after a majority said yes
    (docs/engine-fixes.md, "A rejoining replica deposes the leader").
    """

    _SyncObj__raftElectionDeadline: float  # the engine's election timer (the engine's clock)

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        # Set before the engine starts its tick thread.
        self._round: prevote.PreVoteRound | None = None
        self._pre_vote_won = False
        self._peers = prevote.PeerFeatures()
        self._leader_heard: tuple[Any, int, float] | None = None  # (leader, term, when)
        self._above_live_leader = False   # a leader of a lower term spoke last
        self.longest_leader_gap = 0.0     # seconds between two messages of one leader
        super().__init__(config, store, conf)

    # -- asking -----------------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        if self._election_due() and self._ask_before_standing():
            super()._onTick(timeToWait)  # the engine's real election, this tick
            return
        self._pre_vote_won = False  # a vote or a leader moved the timer since: it is void
        # The engine must not stand on its own: its timer may pass while the tick
        # loads a snapshot or flushes the journal, before it checks.  It sees a
        # timer that never fires; one it sets during the tick (a leader's message,
        # a vote, a hand-over) is kept.
        deadline = self._SyncObj__raftElectionDeadline
        self._SyncObj__raftElectionDeadline = math.inf
        try:
            super()._onTick(timeToWait)
        finally:
            if self._SyncObj__raftElectionDeadline == math.inf:
                self._SyncObj__raftElectionDeadline = deadline

    def _election_due(self) -> bool:
        """The engine's own condition for standing for election (its _onTick)."""
        return (self._SyncObj__raftState != _RAFT_STATE.LEADER
                and self._SyncObj__selfNode is not None
                and self._SyncObj__raftElectionDeadline < _engine_clock()
                and bool(self._SyncObj__connectedToAnyone()))

    def _ask_before_standing(self) -> bool:
        """Whether to stand now; if not, ask the peers and wait another timeout."""
        if self._pre_vote_won or self._SyncObj__transferInProgress or self._above_live_leader:
            # The election asked for, a leader's hand-over, or a term that can never go
            # back down to the live leader's.
            self._pre_vote_won = self._above_live_leader = False
            self._round = None
            return True
        term = self._SyncObj__raftCurrentTerm + 1
        self._round = prevote.PreVoteRound(term)
        if self._round.won(self._voters(), self._peers.silent_old_peers(_engine_clock())):
            self._round = None  # a group of one, or old peers only
            return True
        message = {"type": prevote.PRE_VOTE, "term": term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for peer in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(peer, message)
        self._SyncObj__raftElectionDeadline = _engine_clock() + self._SyncObj__generateRaftTimeout()
        return False

    def _voters(self) -> int:
        return len(self._SyncObj__otherNodes) + 1

    def _count_reply(self, peer: Any, message: dict[str, Any]) -> None:
        round_ = self._round
        if round_ is None or message.get("term") != round_.term:
            return  # an earlier round's answer
        if not message.get("granted"):
            voter_term = message.get("voter_term", 0)
            if voter_term > self._SyncObj__raftCurrentTerm:
                # The peer is in a later term: take it, as any Raft message with a
                # higher term makes a replica do, and ask again from there.
                self._round = None
                self._SyncObj__setCurrentTerm(voter_term, None)
                self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
                self._SyncObj__raftLeader = None  # whoever led before is not that term's leader
            return
        round_.granted.add(peer)
        if round_.won(self._voters(), self._peers.silent_old_peers(_engine_clock())):
            self._round = None
            self._pre_vote_won = True
            self._SyncObj__raftElectionDeadline = 0  # stand at the next tick

    # -- answering ----------------------------------------------------------------

    def _answer(self, peer: Any, message: dict[str, Any]) -> None:
        heard = self._leader_heard
        granted = prevote.grants_pre_vote(
            asked_term=message["term"],
            asker_log=prevote.LogEnd(message["last_log_term"], message["last_log_index"]),
            own_term=self._SyncObj__raftCurrentTerm,
            own_log=prevote.LogEnd(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()),
            is_leader=self._SyncObj__raftState == _RAFT_STATE.LEADER,
            leader_heard_ago=None if heard is None or heard[1] != self._SyncObj__raftCurrentTerm
            else _engine_clock() - heard[2],
            min_election_timeout=self.conf.raftMinTimeout)
        self._SyncObj__transport.send(peer, {"type": prevote.PRE_VOTE_REPLY, "term": message["term"],
                                             "granted": granted,
                                             "voter_term": self._SyncObj__raftCurrentTerm})

    def _heard_from_leader(self, leader: Any, term: int) -> None:
        now = _engine_clock()
        if term < self._SyncObj__raftCurrentTerm:
            self._above_live_leader = True  # the engine ignores it; only an election frees us
            return
        previous = self._leader_heard
        if previous is not None and previous[:2] == (leader, term):
            self.longest_leader_gap = max(self.longest_leader_gap, now - previous[2])
        self._leader_heard = (leader, term, now)
        self._above_live_leader = self._pre_vote_won = False
        self._round = None

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        kind = message.get("type")
        if kind == prevote.PRE_VOTE:
            self._answer(node, message)
        elif kind == prevote.PRE_VOTE_REPLY:
            self._count_reply(node, message)
        elif kind == prevote.HELLO:
            self._peers.said_hello(node, message.get("features", ()))
        else:
            if kind == "append_entries":
                self._heard_from_leader(node, message["term"])
            super()._SyncObj__onMessageReceived(node, message)

    # -- who speaks PreVote ---------------------------------------------------------

    def _SyncObj__onNodeConnected(self, node: Any) -> None:  # noqa: N802
        super()._SyncObj__onNodeConnected(node)
        self._peers.connected(node, _engine_clock())
        self._SyncObj__transport.send(node, {"type": prevote.HELLO, "features": [prevote.PRE_VOTE_FEATURE],
                                             "raft_formats": formats.announce()})

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
        super()._SyncObj__onNodeDisconnected(node)
        self._peers.disconnected(node)

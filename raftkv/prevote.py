"""PreVote (Raft thesis section 9.6): the decisions, free of the engine and its sockets.

A replica whose election timer fires first asks its peers whether they *would*
vote for it in the next term, without changing its own term or vote; only with
a majority of yeses (itself included) does it hold the real election.  A peer
says yes only if the asker's log is at least as up to date as its own and it has
not heard from a current leader within the minimum election timeout.  So a
replica that was cut off, or restarted behind, can no longer depose a healthy
leader by bumping the term.  raftkv/node/elections.py wires these decisions into the
engine (docs/engine-fixes.md, "A rejoining replica deposes the leader").
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

# Message types on the Raft port; an engine that predates PreVote ignores them
# (pysyncobj drops a message whose type it does not know).
PRE_VOTE = "pre_vote"              # term (the asker's term + 1), last_log_index, last_log_term
PRE_VOTE_REPLY = "pre_vote_reply"  # term (echoed), granted, voter_term
HELLO = "hello"                    # features: what the sender speaks, sent on every connect
PRE_VOTE_FEATURE = "pre_vote"

# A peer connected this long without a hello predates PreVote: it will never
# answer, and counts as a yes so that an upgrade cannot block elections
# (docs/engine-fixes.md, "A rejoining replica deposes the leader").  Hellos
# arrive one round trip after the connect; this leaves room for a stalled tick.
HELLO_GRACE = 5.0


@dataclass(frozen=True, order=True)
class LogEnd:
    """The last entry of a log; compared as Raft compares logs (section 5.4.1): term, then index."""

    term: int
    index: int


def grants_pre_vote(*, asked_term: int, asker_log: LogEnd, own_term: int, own_log: LogEnd,
                    is_leader: bool, leader_heard_ago: float | None,
                    min_election_timeout: float) -> bool:
    """Whether this replica would vote for the asker in ``asked_term``.

    ``leader_heard_ago`` is the time since a leader of this replica's term last
    spoke to it (None if none has).  Nothing here changes any state.
    """
    if is_leader:
        return False  # a live leader is the leader the asker has lost
    if asked_term <= own_term:
        return False  # we are already in (or past) that term
    if asker_log < own_log:
        return False  # it could not win the real vote (section 5.4.1)
    return leader_heard_ago is None or leader_heard_ago >= min_election_timeout


def is_majority(yes: int, voters: int) -> bool:
    return yes > voters / 2


@dataclass
class PreVoteRound:
    """One round of asking: the term asked for, and who said yes."""

    term: int
    granted: set[Hashable] = field(default_factory=set)

    def won(self, voters: int, counted_as_yes: Iterable[Hashable] = ()) -> bool:
        """A majority of ``voters``: this replica, the peers that said yes and ``counted_as_yes``."""
        return is_majority(1 + len(self.granted | set(counted_as_yes)), voters)


@dataclass
class PeerFeatures:
    """Which connected peers said they speak PreVote, and since when each is connected."""

    grace: float = HELLO_GRACE
    _connected_at: dict[Hashable, float] = field(default_factory=dict)
    _speaks: set[Hashable] = field(default_factory=set)

    def connected(self, peer: Hashable, now: float) -> None:
        # A reconnect may be a restart onto other code: what it speaks is asked afresh.
        self._connected_at[peer] = now
        self._speaks.discard(peer)

    def disconnected(self, peer: Hashable) -> None:
        self._connected_at.pop(peer, None)
        self._speaks.discard(peer)

    def said_hello(self, peer: Hashable, features: Iterable[str]) -> None:
        if PRE_VOTE_FEATURE in features:
            self._speaks.add(peer)

    def silent_old_peers(self, now: float) -> set[Hashable]:
        """Connected peers that never said hello within the grace: they predate PreVote."""
        return {peer for peer, since in self._connected_at.items()
                if peer not in self._speaks and now - since >= self.grace}

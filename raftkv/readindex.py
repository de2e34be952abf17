"""ReadIndex (Raft thesis section 6.4): the leader's bookkeeping of confirmation rounds,
free of the engine and its sockets.

A linearizable read need not be a log entry.  The leader notes its commit
index, proves it is still the leader by hearing from a majority *after* the
read arrived, and answers from its store once it has applied up to the noted
index.  raftkv/node/read_index.py wires these decisions into the engine
(docs/engine-fixes.md, "Reads without a log entry").

Rounds: the leader sends ``read_probe {term, seq}`` to every peer; a follower
whose current term is ``term`` and whose leader is the sender answers
``read_ack {term, seq}``.  Every read waiting when a round is sent rides on it,
so many reads cost one round.  A round ``s`` is confirmed once a majority of
voters, the leader counting itself, acknowledged ``s`` *or a later round*: a
later round was sent later still, so its ack proves leadership at a moment
after every read of ``s`` arrived.  An ack of an earlier round proves nothing
about a read that arrived after that round was sent, and never confirms it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .errors import RaftKVError
from .prevote import is_majority

# Message types on the Raft port (Raft format 4, raftkv/formats.py); an engine that
# predates them drops them, and the leader counts it as a peer that does not ack.
READ_PROBE = "read_probe"  # term, seq: the leader asks "am I still your leader?"
READ_ACK = "read_ack"      # term, seq (echoed): "yes, in that term"

# A round unanswered this long is sent again (a probe lost with a dropped connection);
# the acks of the new round confirm the reads of the old one too.
ROUND_RETRY = 0.1
# A read not confirmed in this long fails with Timeout, like a log entry that was
# never committed; a cut-off leader steps down sooner (LEADER_FALLBACK) and fails
# its reads with NotLeader then.
READ_TIMEOUT = 5.0

# What a waiting read is told: the index to read at once the store has applied it,
# or why it cannot be served.
Done = Callable[[int | None, RaftKVError | None], None]


@dataclass
class Read:
    """One read waiting for the leader to confirm itself."""

    done: Done
    deadline: float
    index: int = 0  # the commit index noted when its round was sent


@dataclass
class Round:
    seq: int
    sent_at: float
    reads: list[Read] = field(default_factory=list)


@dataclass
class ReadRounds:
    """The reads of one leader's term, and the rounds that confirm them.

    ``voters`` is the group's size, the leader included.  Nothing here sends or
    calls back: the engine sends what :meth:`start_round` returns and calls
    back the reads :meth:`ack` and :meth:`expired` return.
    """

    term: int
    voters: int
    _waiting: list[Read] = field(default_factory=list)   # not yet in a round
    _rounds: list[Round] = field(default_factory=list)   # sent, unconfirmed, oldest first
    _acked: dict[Hashable, int] = field(default_factory=dict)  # peer -> highest seq acked
    _seq: int = 0

    def add(self, read: Read) -> None:
        self._waiting.append(read)

    @property
    def pending(self) -> int:
        return len(self._waiting) + sum(len(r.reads) for r in self._rounds)

    def round_due(self, now: float) -> bool:
        """Whether to send a round now: reads wait for one and none is in flight,
        or the newest in flight is older than :data:`ROUND_RETRY` while reads wait."""
        if not self.pending:
            return False
        if not self._rounds:
            return True
        return now - self._rounds[-1].sent_at >= ROUND_RETRY

    def start_round(self, commit_index: int, now: float) -> tuple[int, list[Read]]:
        """Begin a round carrying every waiting read, each noting ``commit_index``; its
        seq, to send to every peer, and the reads already confirmed (a group of one)."""
        self._seq += 1
        round_ = Round(self._seq, now, self._waiting)
        self._waiting = []
        for read in round_.reads:
            read.index = commit_index
        self._rounds.append(round_)
        return self._seq, self._confirmed()

    def ack(self, peer: Hashable, term: int, seq: int) -> list[Read]:
        """A peer's ``read_ack``; the reads it confirms (none for another term's ack)."""
        if term != self.term or seq > self._seq:
            return []
        if seq > self._acked.get(peer, 0):
            self._acked[peer] = seq
        return self._confirmed()

    def _confirmed(self) -> list[Read]:
        done: list[Read] = []
        while self._rounds:
            seq = self._rounds[0].seq
            yes = 1 + sum(1 for acked in self._acked.values() if acked >= seq)
            if not is_majority(yes, self.voters):
                break
            done.extend(self._rounds.pop(0).reads)
        return done

    def expired(self, now: float) -> list[Read]:
        """The reads past their deadline, removed."""
        late = [r for r in self._waiting if r.deadline <= now]
        self._waiting = [r for r in self._waiting if r.deadline > now]
        for round_ in self._rounds:
            late += [r for r in round_.reads if r.deadline <= now]
            round_.reads = [r for r in round_.reads if r.deadline > now]
        self._rounds = [r for r in self._rounds if r.reads]
        return late

    def drain(self) -> list[Read]:
        """Every read still waiting, removed (the leader lost its term)."""
        reads = self._waiting + [r for round_ in self._rounds for r in round_.reads]
        self._waiting, self._rounds = [], []
        return reads

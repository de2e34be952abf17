"""ReadIndex wired into the engine (docs/engine-fixes.md, "Reads without a log entry");
the round bookkeeping is :mod:`raftkv.readindex`'s.
"""

from __future__ import annotations

import collections
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.monotonic import monotonic as _engine_clock  # CLOCK_MONOTONIC_RAW, not time.monotonic

from .. import formats
from ..errors import NotLeader, RaftKVError, Timeout
from ..prevote import is_majority
from ..readindex import READ_ACK, READ_PROBE, READ_TIMEOUT, Done, Read, ReadRounds
from ..store import Store
from .config import ReplicaConfig
from .fixes import _EngineBase
from .pinned import _RAFT_STATE


class _ServesReadIndex(_EngineBase):
    """Linearizable reads without a log entry (ReadIndex, Raft thesis section 6.4).

    pysyncobj offers only the log: every read was an entry, with its fsyncs.
    Here :meth:`read_index` asks the leader for an index to read at; once it
    has one, the caller reads the store in a read transaction.

    On the tick thread, the leader (1) waits until it has committed an entry
    of its own term (the no-op it appended on election); (2) notes its commit
    index when it sends the next confirmation round (``read_probe``), which
    carries every read waiting then; (3) counts ``read_ack`` answers of that
    round or a later one, from followers in its term that take it as their
    leader, itself included; (4) with a majority, hands each read its noted
    index once the store has committed every entry up to it.  A read that is
    not confirmed within :data:`~raftkv.readindex.READ_TIMEOUT`, or whose
    leader loses its term first, fails (Timeout, NotLeader) as a log entry
    would.

    Why that is linearizable.  Take a read R that arrives at leader L of term
    t, and any write W acknowledged to its client before R arrived; R must see
    W.  (a) If W was committed in a term t' > t, its leader was elected by a
    majority that had moved to term t' (terms are on disk, and never go
    down) before W was acknowledged, so before R arrived and before R's round
    was sent.  R's round was acknowledged by a majority in term t, each after
    the round was sent.  The two majorities share a replica, which would have
    gone from t' back to t: impossible.  So no such W exists while R is
    confirmed.  (b) If W was committed in term t or earlier, it is in L's log
    (Leader Completeness), and at or below L's commit index once L has
    committed an entry of term t: every entry before that one is committed
    too.  The index noted when R's round was sent is that commit index, at
    or after R's arrival; R reads a state that has applied at least up to it,
    so it sees W.  (c) R sees only committed writes: the leader applies
    committed entries only.  Whatever R sees was committed by the time R is
    answered, and everything acknowledged before R arrived is in it: R can
    be placed between its arrival and its answer.  No clock is involved.

    An ack of an earlier round confirms no read of a later one: a follower may
    have acknowledged round 3 before a new leader was elected, and round 4's
    reads arrived after that.  A peer on code older than Raft format 4 never
    acks; the server sends reads through the log when fewer than a majority of
    voters speak it (:meth:`read_index_quorum`), so a rolling upgrade keeps
    working.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        # Appended by any thread, taken by the tick thread (deque operations are atomic).
        self._read_queue: collections.deque[Read] = collections.deque()
        self._reads: ReadRounds | None = None  # this leader term's, on the tick thread
        self._applying: list[Read] = []        # confirmed, their index not yet applied
        super().__init__(config, store, conf)

    # -- any thread ---------------------------------------------------------------

    def read_index(self, done: Done) -> None:
        """Ask for an index to read at; ``done(index, None)`` runs on the tick thread once
        the store has committed every entry up to ``index``, ``done(None, error)`` if
        this replica cannot confirm it leads."""
        self._read_queue.append(Read(done, _engine_clock() + READ_TIMEOUT))
        try:
            self._SyncObj__pipeNotifier.notify()  # out of poll(), into the next tick
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending already

    def read_index_quorum(self) -> bool:
        """Whether a majority of voters, this replica included, speak ReadIndex."""
        known = self.peer_raft_formats
        speaking = sum(1 for peer in list(self._SyncObj__otherNodes)
                       if formats.READ_INDEX in known.get(peer, range(0)))
        return is_majority(1 + speaking, len(self._SyncObj__otherNodes) + 1)

    peer_raft_formats: dict[Any, range]  # _SpeaksFormats

    # -- the tick thread ----------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        self._serve_reads()
        super()._onTick(timeToWait)

    def _serve_reads(self) -> None:
        leading = self._SyncObj__raftState == _RAFT_STATE.LEADER
        term = self._SyncObj__raftCurrentTerm
        reads = self._reads
        if reads is not None and (not leading or reads.term != term):
            self._fail(reads.drain() + self._take_applying(), self._lost())
            self._reads = reads = None
        if not leading:
            self._fail(self._take_queue(), self._lost())
            return
        if not self._read_queue and (reads is None or not reads.pending):
            return
        if reads is None:
            self._reads = reads = ReadRounds(term, len(self._SyncObj__otherNodes) + 1)
        for read in self._take_queue():
            reads.add(read)
        now = _engine_clock()
        self._fail(reads.expired(now), Timeout("the leader could not confirm it leads in time"))
        if self._term_committed() and reads.round_due(now):
            seq, confirmed = reads.start_round(self._SyncObj__raftCommitIndex, now)
            probe = {"type": READ_PROBE, "term": term, "seq": seq}
            for peer in self._SyncObj__otherNodes:
                self._SyncObj__transport.send(peer, probe)
            self._release(confirmed)

    def _term_committed(self) -> bool:
        """Whether this leader has committed the no-op of its term (until then its
        commit index may lie below entries earlier leaders committed)."""
        start = self._term_start
        return (start is not None and start[0] == self._SyncObj__raftCurrentTerm
                and self._SyncObj__raftCommitIndex >= start[1])

    _term_start: tuple[int, int] | None  # _SpeaksFormats

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        kind = message.get("type")
        if kind == READ_PROBE:
            if (message.get("term") == self._SyncObj__raftCurrentTerm
                    and self._SyncObj__raftState == _RAFT_STATE.FOLLOWER
                    and self._SyncObj__raftLeader == node):
                self._SyncObj__transport.send(node, {"type": READ_ACK, "term": message["term"],
                                                     "seq": message.get("seq")})
            return
        if kind == READ_ACK:
            reads = self._reads
            term, seq = message.get("term"), message.get("seq")
            if (reads is not None and self._SyncObj__raftState == _RAFT_STATE.LEADER
                    and isinstance(term, int) and isinstance(seq, int)
                    and term == self._SyncObj__raftCurrentTerm):
                self._release(reads.ack(node, term, seq))
            return
        super()._SyncObj__onMessageReceived(node, message)

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - pysyncobj's name
        applied = bool(super()._SyncObj__applyLogEntries())  # and committed to the store
        if self._applying:
            self._release(self._take_applying())
        return applied

    def _release(self, confirmed: list[Read]) -> None:
        """Answer the confirmed reads whose index the store has committed; keep the rest
        for the next pass of applying.  Called outside a pass, so every entry up to
        ``raftLastApplied`` is in the store's last commit."""
        applied = self._SyncObj__raftLastApplied
        for read in confirmed:
            if read.index <= applied:
                read.done(read.index, None)
            else:
                self._applying.append(read)

    def _take_queue(self) -> list[Read]:
        taken = []
        while self._read_queue:
            taken.append(self._read_queue.popleft())
        return taken

    def _take_applying(self) -> list[Read]:
        taken, self._applying = self._applying, []
        return taken

    def _lost(self) -> NotLeader:
        leader = self._SyncObj__raftLeader
        return NotLeader("not the leader", leader=None if leader is None else leader.address)

    @staticmethod
    def _fail(reads: list[Read], error: RaftKVError) -> None:
        for read in reads:
            read.done(None, error)

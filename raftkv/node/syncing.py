"""The journal synced on a thread of its own, and the two Raft rules that make it safe
(docs/engine-fixes.md, "The journal"): a follower acknowledges only what its disk holds,
a leader counts itself only for what its disk holds.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObjConf

from ..store import Store
from .config import ReplicaConfig
from .disk import _DurableJournal  # and, imported, the engine builds it (docs/engine-fixes.md)
from .fixes import _EngineBase
from .pinned import _RAFT_STATE
from .serializer import _stop_replica

# How long a follower's tick thread waits for the syncer before it goes back to poll() with
# its answer held (docs/engine-fixes.md, "The journal"): far below the 20 ms the tick may
# stall, and long enough for a round on a disk that is not busy (0.1 ms here).
ACK_WAIT = 0.002
# What those waits may add up to between two poll() calls: a burst of appends read in one
# poll() waits for a round each.  Under bench.kv's puts from 16 clients a burst's waits
# passed 2 ms often enough that holding the rest for the syncer's wake-up cost 15% of the
# throughput; 8 ms leaves the tick 12 of its 20 ms (docs/engine-fixes.md, "The journal").
ACK_WAITS_PER_GAP = 0.008


class _SyncsOffTheTickThread(_EngineBase):
    """The journal's syncer (raftkv/node/journal_syncer.py) wakes the tick thread when a round
    ends while something waits for it (held acknowledgements, the leader's count), so it
    goes on at once rather than at the next heartbeat; a round nobody waits for wakes
    nothing (a tick per write cost the leader's CPU).  A failed fsync stops the replica,
    as a failed store does (after a failed fsync the kernel may have dropped the pages: a
    retry would claim entries the disk does not hold)."""

    _journal: _DurableJournal

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        # Set by the tick thread before it reads synced_index, and kept while it waits,
        # so a round that ends after that read sees them (read by the syncer's thread).
        self._acks_wait_for_sync = False
        self._count_waits_for_sync = False
        super().__init__(config, store, conf)
        self._journal.on_synced = self._wake_tick
        self._journal.on_sync_failed = self._sync_failed

    def _wake_tick(self) -> None:
        if not (self._acks_wait_for_sync or self._count_waits_for_sync):
            return
        try:
            self._SyncObj__pipeNotifier.notify()  # out of poll(), into the next tick
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending already

    @staticmethod
    def _sync_failed(exc: OSError) -> None:
        _stop_replica(f"the journal's fsync failed ({exc})")

    def _checkCommandsToApply(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._checkCommandsToApply()
        # A leader's new entries were appended and sent just now: their fsync runs
        # while the followers receive and write them.  Nothing to do when none were.
        self._journal.request_sync()


@dataclass
class _HeldAck:
    """A ``next_node_idx`` that waits for the journal's syncer."""

    next_index: int
    reset: bool
    success: bool
    term: int        # the follower's term, and the journal's generation, when it was made:
    generation: int  # a new term or a cut since makes it stale (dropped, not sent)


class _FollowerAcksWhatIsSynced(_SyncsOffTheTickThread):
    """A follower's acknowledgement leaves only once its journal's syncer has made the
    entries it claims durable; the tick thread never waits for an fsync.

    The engine answers an append_entries with ``next_node_idx`` (success: "I hold
    every entry before this index, matching yours"), and the leader counts that
    follower for those entries.  Raft counts only entries on stable storage, so
    the answer claims ``synced_index >= next_node_idx - 1``.  The journal fsynced
    inline before any ``next_node_idx`` left; with a disk busy writing snapshots
    that held the tick thread 0.25 s at a time.  Here the answer (and every later
    ``next_node_idx`` to the same peer, so that the leader sees them in order) is
    held, a sync is asked for, and the tick that follows the syncer's round sends
    it.  Most rounds end within a fraction of a millisecond, so the tick thread
    first waits for the round, up to :data:`ACK_WAIT`, and sends the answer at
    once: going back to ``poll()`` and being woken by the syncer cost each write
    another hand-off and a tick.  A wait that ran out means the disk is busy: no
    answer waits again until a round has ended since, so the messages handled in
    one ``poll()`` cost the tick thread one ``ACK_WAIT`` at most while the disk is
    slow, and ``ACK_WAITS_PER_GAP`` in all when each round ends in time.  An answer that
    claims nothing and moves nothing (neither success nor
    reset: the leader only notes that the follower lives, as for a snapshot's
    piece) goes at once; order does not matter for it.

    A held answer is dropped, not sent, if the follower's term changed or its
    journal was cut or cleared since it was made: the entries it names may be
    gone, or belong to another leader's log (a truncation lowers ``synced_index``
    too, so nothing is claimed early either way).  Dropping is safe: the leader
    sends again from its next index at its next heartbeat, and is answered afresh.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._held_acks: dict[Any, collections.deque[_HeldAck]] = {}  # peer -> its answers, in order
        self._slow_since_round = -1  # the journal's round count when a wait last ran out
        self._waits_gap: float | None = None  # the gap (when poll() returned) waited in,
        self._waited = 0.0                     # and how long, summed
        super().__init__(config, store, conf)

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,  # noqa: N802 - pysyncobj's name
                                  nextNodeIdx: int | None = None,  # noqa: N803
                                  success: bool = False) -> None:
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1  # noqa: N806 - as the engine
        if not success and not reset:
            super()._SyncObj__sendNextNodeIdx(node, reset=False, nextNodeIdx=nextNodeIdx,
                                              success=False)
            return
        journal = self._journal
        held = self._held_acks.setdefault(node, collections.deque())
        ack = _HeldAck(nextNodeIdx, reset, success, self._SyncObj__raftCurrentTerm,
                       journal.generation)
        if held and held[-1] == ack:
            return  # the same answer to another heartbeat, while the disk is slow
        held.append(ack)
        self._send_held_acks(node)
        if node in self._held_acks:
            journal.request_sync()
            self._wait_for_the_round(node, ack)

    def _wait_for_the_round(self, node: Any, ack: _HeldAck) -> None:
        """Wait for the round just asked for, then send what it covers; not at all while
        the disk is known to be slow (a wait of ACK_WAIT ran out, no round since).  The
        waits of one gap between two ``poll()`` calls sum to ACK_WAITS_PER_GAP at most: a
        burst of appends read in one ``poll()``, each waiting for its round, held the
        tick thread 20-40 ms (bench.capacity's fill)."""
        journal = self._journal
        if self._slow_since_round == journal.rounds:
            return
        gap = self.tick_watch.away_since()
        if gap != self._waits_gap:
            self._waits_gap, self._waited = gap, 0.0
        wait = min(ACK_WAIT, ACK_WAITS_PER_GAP - self._waited)
        if wait <= 0:
            return  # held: the syncer's round wakes the tick that sends it
        began = time.monotonic()
        synced = journal.wait_synced(ack.next_index - 1, wait)
        self._waited += time.monotonic() - began
        if synced:
            self._send_held_acks(node)
        elif wait == ACK_WAIT:  # not when the gap's allowance cut it short
            self._slow_since_round = journal.rounds

    def _send_held_acks(self, node: Any) -> None:
        """Send ``node``'s held answers, in order, up to the first the disk does not yet hold."""
        held = self._held_acks[node]
        journal = self._journal
        self._acks_wait_for_sync = True
        synced, generation = journal.synced_index, journal.generation
        term = self._SyncObj__raftCurrentTerm
        while held:
            ack = held[0]
            if ack.term == term and ack.generation == generation:
                if ack.success and ack.next_index - 1 > synced:
                    break
                super()._SyncObj__sendNextNodeIdx(node, reset=ack.reset,
                                                  nextNodeIdx=ack.next_index,
                                                  success=ack.success)
            held.popleft()
        if not held:
            del self._held_acks[node]
        self._acks_wait_for_sync = bool(self._held_acks)

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        for node in list(self._held_acks):
            self._send_held_acks(node)
        super()._onTick(timeToWait)


class _LeaderCountsWhatIsSynced(_SyncsOffTheTickThread):
    """The leader counts itself in the commit rule only for entries its journal's syncer
    has made durable; it sends entries before then, and never fsyncs on the tick thread.

    Raft lets a leader send entries before they are on its own disk, as long as it
    does not count itself for them until they are (Raft thesis, section 10.2.1).
    pysyncobj's commit loop, at the start of a tick, counts the leader for every
    entry it holds (``count = 1``); the journal used to be fsynced inline just
    before it, and after the tick appended entries.  Here the syncer fsyncs (asked
    after each tick's appends and sends, so it overlaps the followers' writes), and
    before the loop the leader works out M, the highest index a majority holds
    when the leader counts as holding what ``synced_index`` covers: the
    (N//2 + 1)-th largest of the followers' match indexes and ``synced_index``.
    Only if ``synced_index`` is below the log's end, each follower's match index
    above M is lowered to M for the loop, and put back as soon as the loop is done
    (at the start of applying, before anything reads it).

    Why the loop then commits what the true rule would, no more, no less.  For an
    index c <= M, a follower's lowered value is >= c exactly when its true one is,
    so the loop counts 1 + #{followers >= c}, at least the true count; and the true
    count is a majority, because M is held by a majority and c <= M.  For c > M,
    every follower's value is at most M < c, so the loop counts 1, not a majority
    of N >= 2 voters: it stops, as the true rule does (fewer than a majority hold
    anything above M).  The loop's other checks (an entry of the current term) are
    the engine's.  Between lowering and putting back, no message is handled (that
    happens in ``poll()``, later in the tick), so no answer is lost; they are put
    back with ``max`` only if the term and role did not change (a new leader sets
    them afresh; otherwise they only grow).  A group of one voter has no follower
    to lower and none to overlap with: its leader syncs inline before the loop.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._lowered: dict[Any, int] = {}   # follower -> its true match index, during the loop
        self._lowered_in: tuple[int, int] = (0, 0)  # (term, role) when they were lowered
        super().__init__(config, store, conf)

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            if self._SyncObj__otherNodes:
                self._journal.request_sync()  # the no-op of an election won while polling
                self._lower_match_indexes()
            else:
                self._sync_inline()
        else:
            self._count_waits_for_sync = False
        try:
            super()._onTick(timeToWait)
        finally:
            self._restore_match_indexes()  # if applying was never reached

    def _sync_inline(self) -> None:
        """A group of one's leader syncs its journal before the commit loop counts it.
        A failed fsync stops the replica, as the syncer's does: raised out of the tick,
        the engine's tick thread would log it and tick again (and the journal refuses
        every later round, so nothing would ever commit).  A round that could not begin
        (``SyncDeferred``: no descriptor to spare) is raised out of the tick too, so
        this tick commits nothing; the engine logs it, waits a tick's period and retries."""
        try:
            self._journal.sync()
        except OSError as exc:
            self._sync_failed(exc)
            raise  # _stop_replica does not return; if it did, the tick must not go on

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - pysyncobj's name
        self._restore_match_indexes()  # the commit loop just ran
        return bool(super()._SyncObj__applyLogEntries())

    def _lower_match_indexes(self) -> None:
        self._count_waits_for_sync = True
        synced = self._journal.synced_index
        if synced >= self._SyncObj__getCurrentLogIndex():
            self._count_waits_for_sync = False
            return  # the engine's count of itself is true
        match = self._SyncObj__raftMatchIndex
        followers = list(self._SyncObj__otherNodes)
        held = sorted([match.get(node, 0) for node in followers] + [synced], reverse=True)
        majority_holds = held[(len(followers) + 1) // 2]
        for node in followers:
            if match.get(node, 0) > majority_holds:
                self._lowered[node] = match[node]
                match[node] = majority_holds
        # Only when its own disk holds the count back does the leader wait for the
        # syncer; otherwise the followers' answers, which wake the tick, do.
        self._count_waits_for_sync = bool(self._lowered)
        self._lowered_in = (self._SyncObj__raftCurrentTerm, self._SyncObj__raftState)

    def _restore_match_indexes(self) -> None:
        if not self._lowered:
            return
        lowered, self._lowered = self._lowered, {}
        if self._lowered_in != (self._SyncObj__raftCurrentTerm, self._SyncObj__raftState):
            return
        match = self._SyncObj__raftMatchIndex
        for node, index in lowered.items():
            match[node] = max(match.get(node, 0), index)

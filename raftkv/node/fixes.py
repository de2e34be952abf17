"""The engine carrying our store, and the small fixes mixed into it (docs/engine-fixes.md,
one section each).
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
from pysyncobj import SyncObj, SyncObjConf, replicated

from .. import formats
from ..replica_metrics import APPLY_SECONDS
from ..statedb import StateFailure
from ..store import Store
from .config import ReplicaConfig
from .journal import SegmentJournal
from .network import _GuardedTransport
from .pinned import _RAFT_STATE, _REQUIRED_STATE
from .serializer import _SnapshotContext, _stop_replica
from .stallsites import StallSites
from .tickwatch import TickWatch, watch_poller

# A snapshot copies the whole store: it waits until the journal holds at least this
# share of the store's size (and snapshot_entries or snapshot_bytes), so the copies
# write at most a few times what is stored (_CompactsByBytes).
STORE_SHARE = 4

# -- the replica ----------------------------------------------------------------

class _EngineBase(SyncObj):
    """pysyncobj carrying our store; the fixes below are mixed into :class:`_Engine`."""

    transport_class: type = _GuardedTransport

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._store = store
        self._compact_bytes = config.log_compaction_bytes
        self._compact_entries = config.log_compaction_entries
        self._snapshot_context: _SnapshotContext = conf.serializer
        super().__init__(config.raft_addr, list(config.peers), conf,
                         transportClass=self.transport_class)
        missing = [name for name in _REQUIRED_STATE if not hasattr(self, name)]
        if missing:
            self.destroy()
            raise ImportError(f"pysyncobj 0.3.17 without {', '.join(missing)}: raftkv.node cannot hook it")
        self._journal = self._SyncObj__raftLog
        self.tick_watch: TickWatch = watch_poller(self._poller)
        self.stall_sites = StallSites(self.tick_watch)
        self.stall_sites.start()
        self._snapshot_context.journal_bytes = lambda: self._journal.bytes
        self._snapshot_context.channel = self._SyncObj__transport._connections.get

    def _doDestroy(self) -> None:  # noqa: N802 - pysyncobj's name
        self.stall_sites.stop(timeout=0)
        super()._doDestroy()

    @replicated
    def apply_batch(self, packed: bytes) -> list[dict[str, Any]]:
        """Apply a msgpack-encoded entry (its time, then commands); the results, in order.

        The engine counts an entry applied after this returns, so the entry's
        index is one past its count.  If the disk fails under the store, the
        replica stops here: carrying on would leave it with a state its peers
        do not have, and retrying (what the engine does with an exception) would
        apply the entry again over memory the failed transaction had changed.
        """
        index = self._SyncObj__raftLastApplied + 1
        began = time.perf_counter()
        try:
            results = self._store.apply_entry(msgpack.unpackb(packed, raw=False), index)
        except StateFailure as exc:
            _stop_replica(f"the store on disk failed at entry {index} ({exc})")
        APPLY_SECONDS.observe(time.perf_counter() - began)
        return results


class _AppliesInOneTransaction(_EngineBase):
    """The entries one tick applies share one transaction of the store.

    A commit per entry cost 20 µs of the tick thread and a write of the pages
    every entry touches (the progress record, the sessions' pages); a tick
    under load applies several entries (docs/state-on-disk.md, "The
    store").
    """

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - pysyncobj's name
        try:
            with self._store.applying_entries():
                return bool(super()._SyncObj__applyLogEntries())
        except StateFailure as exc:
            _stop_replica(f"the store on disk failed ({exc})")


class _FollowerAnswersSnapshotPieces(_EngineBase):
    """A follower answers each piece of a snapshot it is sent.

    The engine answers only the last, and drops a connection that sent nothing
    for its connection timeout; a snapshot sent at a bounded rate takes longer
    than that, so the leader dropped the follower and began again, for ever.
    The answer (no success, no reset) only tells the leader the follower lives.
    """

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        super()._SyncObj__onMessageReceived(node, message)
        piece = message.get("serialized") if message.get("type") == "append_entries" else None
        # Only to the leader of our term: an answer carries no term, and one to a
        # deposed leader would make it count us as alive and keep leading.
        if (piece is not None and not piece[2]
                and message.get("term") == self._SyncObj__raftCurrentTerm
                and self._SyncObj__raftLeader == node):
            self._SyncObj__sendNextNodeIdx(node, success=False, reset=False)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
        super()._SyncObj__onNodeDisconnected(node)
        serializer = self._snapshot_context.serializer
        if serializer is not None:
            serializer.cancelTransmisstion(node)  # a new connection starts it over


class _LeaderOffersSnapshotsOnce(_EngineBase):
    """A follower that pulls its snapshot gets one message a round, not a flood.

    The engine's send loop asks the serializer for piece after piece until its
    round (0.1 s) is over, sending whatever it gets, even nothing; it stops early
    only once the follower's next index is past the log.  For a follower that
    pulls its snapshot over the client port (raftkv/snapshot_pull.py) one offer
    a round is enough: the serializer then asks to pause it, its next index is
    moved past the log until the round ends, and put back.  A replica that stops
    leading ends the transfers it offered.
    """

    peer_raft_formats: dict[Any, range]  # _SpeaksFormats

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._paused: dict[Any, int] = {}  # follower -> its next index, during a round
        super().__init__(config, store, conf)
        self._snapshot_context.pause = self._pause
        self._snapshot_context.pulls_from = self._pulls_from

    def _pulls_from(self, node: Any) -> bool:
        speaks = self.peer_raft_formats.get(node)
        return speaks is not None and formats.PULLED_SNAPSHOTS in speaks

    def _pause(self, node: Any) -> None:
        next_index = self._SyncObj__raftNextIndex
        self._paused.setdefault(node, next_index[node])
        next_index[node] = self._SyncObj__getCurrentLogIndex() + 1

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802
        serializer = self._snapshot_context.serializer
        if serializer is not None:
            serializer.begin_round()
        try:
            super()._SyncObj__sendAppendEntries()
        finally:
            next_index = self._SyncObj__raftNextIndex
            for node, index in self._paused.items():
                next_index[node] = index
            self._paused.clear()

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        serializer = self._snapshot_context.serializer
        if (serializer is not None and serializer.sending
                and self._SyncObj__raftState != _RAFT_STATE.LEADER):
            serializer.cancel_all()
        super()._onTick(timeToWait)


class _CompactsByBytes(_EngineBase):
    """A snapshot is due after so many entries or so many bytes of them, both bounds
    growing with the store once it is large.

    The engine counts entries alone (and takes a snapshot every minute besides);
    a journal of large entries reached the disk's limits before the count.  And
    a snapshot copies the whole store: at 2 GB stored, one every 64 MiB of
    entries wrote 37 bytes of snapshot per byte stored, and the disk, busy with
    them, held the journal's fsyncs (on the tick thread) for up to 2.7 s.  So
    once a share of the store (``store / STORE_SHARE``) passes
    ``snapshot_bytes``, both bounds scale with it: the copies write a few times
    what is stored, not tens (docs/state-on-disk.md, "Snapshots").  The journal
    lives on disk (raftkv/node/journal.py): what it holds costs disk and the
    scan at a restart, not memory.
    """

    _compact_bytes: int
    _compact_entries: int

    def compaction_bounds(self) -> tuple[int, int]:
        """(entries, bytes): a journal past either is compacted by a snapshot."""
        share = self._store.db.file_bytes() // STORE_SHARE
        if share <= self._compact_bytes:
            return self._compact_entries, self._compact_bytes
        return int(self._compact_entries * share / self._compact_bytes), share

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        journal = self._journal
        # The bounds are never below the settings: the store's size is looked at (a
        # stat) only once the journal has passed one of them, not every tick.
        if len(journal) > self._compact_entries or journal.bytes > self._compact_bytes:
            entries, size = self.compaction_bounds()
            if len(journal) > entries or journal.bytes > size:
                self._SyncObj__forceLogCompaction = True
        super()._onTick(timeToWait)


class _LeaderKeepsNextIndex(_EngineBase):
    """A late success reply must not move a follower's nextIndex backwards.

    docs/engine-fixes.md, "A late reply moves nextIndex back".
    """

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if message.get("type") == "next_node_idx" and message.get("success") \
                and not message.get("reset"):
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            super()._SyncObj__onMessageReceived(node, message)
            if before is not None and next_index.get(node, 0) < before:
                next_index[node] = before
            return
        super()._SyncObj__onMessageReceived(node, message)


class _FollowerKeepsMatchingEntries(_EngineBase):
    """A follower never truncates entries that match the leader's (Raft section 5.3).

    pysyncobj deletes everything after ``prevLogIdx`` before appending,
    whether or not it conflicts, so a late or short append_entries cuts off
    entries the follower has already acknowledged (docs/engine-fixes.md, "Follower truncation").
    """

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if message.get("type") == "append_entries" and "prevLogIdx" in message \
                and "transmission" not in message:
            rest = self._skip_matching_entries(node, message)
            if rest is None:
                return
            message = rest
        super()._SyncObj__onMessageReceived(node, message)

    def _skip_matching_entries(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """The part of ``message`` still to apply, or None when it was all here already."""
        if message["term"] < self._SyncObj__raftCurrentTerm:
            return message
        entries = message.get("entries") or []
        # Terms only: reading the entries themselves (a pread and a CRC of up to 32 KiB
        # each, the journal's first one at every message) was a tenth of a busy
        # follower's stalls (docs/engine-fixes.md, "How the engine runs").
        journal: SegmentJournal = self._SyncObj__raftLog
        if not len(journal):
            return message
        first_index = journal.first_index
        last_index = first_index + len(journal) - 1
        prev = message["prevLogIdx"]
        if prev < first_index or prev > last_index:
            return message
        if journal.term_of(prev) != message["prevLogTerm"]:
            return message  # a real conflict: let pysyncobj reset the follower
        skipped = 0
        for entry in entries:
            idx = entry[1]
            if idx > last_index or journal.term_of(idx) != entry[2]:
                break
            skipped += 1
        if skipped < len(entries):
            if skipped == 0:
                return message  # the first new entry conflicts or extends: pysyncobj is right
            last = entries[skipped - 1]
            return {**message, "entries": entries[skipped:], "prevLogIdx": last[1],
                    "prevLogTerm": last[2]}
        matched = entries[-1][1] if entries else prev
        if matched == last_index and not entries:
            return message  # a plain heartbeat at our log's end truncates nothing
        # Everything is already here (and maybe more).  Let pysyncobj see a
        # heartbeat (leader, term, commit index) without a log position, then
        # acknowledge what matched ourselves.
        heartbeat = {k: v for k, v in message.items()
                     if k not in ("prevLogIdx", "prevLogTerm", "entries")}
        heartbeat["commit_index"] = min(message["commit_index"], matched)
        super()._SyncObj__onMessageReceived(node, heartbeat)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=matched + 1, success=True)
        return None

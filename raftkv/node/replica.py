"""The engine with every fix, its settings, and :class:`Replica`, what the rest of raftkv sees."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import SyncObjConf
from pysyncobj.config import FAIL_REASON

from .. import formats, snapshots
from ..cluster import derive_key
from ..errors import NoLeader, NotLeader, OutcomeUnknown, RaftKVError, Timeout, UnavailableError
from ..store import Store
from .config import ReplicaConfig
from .elections import _PreVote
from .fixes import (
    _AppliesInOneTransaction,
    _CompactsByBytes,
    _FollowerAnswersSnapshotPieces,
    _FollowerKeepsMatchingEntries,
    _LeaderKeepsNextIndex,
    _LeaderOffersSnapshotsOnce,
)
from .peer_formats import _SpeaksFormats
from .pinned import ENTRY_CAP, LEADER_FALLBACK, RAFT_PASSWORD_PURPOSE
from .read_index import _ServesReadIndex
from .sending import _LeaderSendsOncePerTick
from .serializer import SNAPSHOT_PIECE, _SnapshotContext
from .syncing import _FollowerAcksWhatIsSynced, _LeaderCountsWhatIsSynced

log = logging.getLogger(__name__)

class _Engine(_LeaderSendsOncePerTick, _ServesReadIndex, _LeaderCountsWhatIsSynced,
              _FollowerAcksWhatIsSynced, _CompactsByBytes, _AppliesInOneTransaction, _LeaderKeepsNextIndex,
              _FollowerKeepsMatchingEntries, _FollowerAnswersSnapshotPieces,
              _LeaderOffersSnapshotsOnce, _SpeaksFormats, _PreVote):
    """pysyncobj with every fix; see the package's docstring (raftkv/node/__init__.py)."""


def _engine_conf(config: ReplicaConfig, store: Store,
                 on_ready: Callable[[], None] | None = None) -> SyncObjConf:
    return SyncObjConf(
        password=derive_key(config.secret, RAFT_PASSWORD_PURPOSE).hex(),
        appendEntriesUseBatch=False,         # otherwise every write waits for a heartbeat
        appendEntriesBatchSizeBytes=4 * ENTRY_CAP,  # above the cap: no chunking bug
        journalFile=str(config.data_dir / formats.JOURNAL_FILE),
        fullDumpFile=str(config.data_dir / snapshots.SNAPSHOT_FILE),
        serializer=_SnapshotContext(store, config.snapshot_send_rate,
                                    write_rate=config.snapshot_write_rate,
                                    compact_bytes=config.log_compaction_bytes,
                                    client_addr=config.client_addr, secret=config.secret),
        deserializer=snapshots.load_snapshot,  # the engine insists on both; _Serializer calls it
        logCompactionBatchSize=SNAPSHOT_PIECE,
        useFork=False,
        pollerType="poll",  # raftkv.node.tickwatch watches this one
        raftMinTimeout=config.election_timeout[0],
        raftMaxTimeout=config.election_timeout[1],
        connectionTimeout=max(3.5, config.election_timeout[1]),
        # Only the peer whose address sorts higher dials; a restarted replica below the
        # leader waited up to the engine's 5 s for it to dial again.
        connectionRetryTime=1.0,
        leaderFallbackTimeout=LEADER_FALLBACK,
        # The engine's own triggers (a count, a minute) never fire: _CompactsByBytes decides.
        logCompactionMinEntries=1 << 62,
        logCompactionMinTime=1 << 62,
        dynamicMembershipChange=False,
        onReady=on_ready,
    )


class Replica:
    """One replica of a group: submit command batches, learn roles and status."""

    def __init__(self, config: ReplicaConfig, on_ready: Callable[[], None] | None = None) -> None:
        config.validate()
        # Before the engine opens anything: refuses a format it does not know.
        formats.prepare_data_dir(config.data_dir)
        self.config = config
        self.store = Store(config.shards, managed=config.managed, path=config.data_dir / snapshots.STATE_DIR)
        self._snapshot = config.data_dir / snapshots.SNAPSHOT_FILE
        self._settle_store()
        conf = _engine_conf(config, self.store, on_ready)
        self._context: _SnapshotContext = conf.serializer
        self.snapshot_offers = self._context.offers  # read by the server (snapshot_read)
        self._engine = _Engine(config, self.store, conf)

    def _settle_store(self) -> None:
        """Before the engine replays anything: a store behind the snapshot, or one that
        lived through a crash of the machine (docs/state-on-disk.md, "Power loss"),
        is replaced by the snapshot's copy; with no snapshot, the journal holds every
        entry and an untrusted store starts empty."""
        if self._snapshot.exists():
            snapshots.load_snapshot(self.store, self._snapshot)
        elif not self.store.db.trusted:
            log.warning("the store of %s may be torn by a crash of the machine and there "
                        "is no snapshot: starting it empty, the journal replays", self.config.data_dir)
            self.store.db.reset()
            self.store.reload()

    def submit(self, packed_commands: bytes,
               callback: Callable[[list[dict[str, Any]] | None, RaftKVError | None], None]) -> None:
        """Append an entry (a msgpack list: its time, then commands; see
        :meth:`raftkv.store.Store.apply_entry`) to the log; ``callback`` runs on the Raft thread."""
        if len(packed_commands) > ENTRY_CAP:
            raise ValueError("batch above the entry cap")

        def done(result: Any, reason: int) -> None:
            if reason == FAIL_REASON.SUCCESS:
                callback(result, None)
            else:
                callback(None, _translate_failure(reason, self.leader_hint()))

        self._engine.apply_batch(packed_commands, callback=done)

    def read_index(self, callback: Callable[[int | None, RaftKVError | None], None]) -> None:
        """Ask the leader for an index to read at without a log entry (ReadIndex,
        raftkv/node/read_index.py): ``callback(index, None)`` runs on the Raft thread
        once leadership is confirmed and the store has committed up to ``index`` -- a
        read transaction begun then is linearizable -- or ``callback(None, error)``."""
        self._engine.read_index(callback)

    def serves_read_index(self) -> bool:
        """Whether reads may skip the log: this replica leads, and a majority of the
        group speaks ReadIndex (Raft format 4; otherwise reads go through the log)."""
        return self.is_leader() and self._engine.read_index_quorum()

    def is_leader(self) -> bool:
        return bool(self._engine._isLeader())

    def entry_format(self) -> int | None:
        """The Raft format a leader writes its next entry in (:mod:`raftkv.formats`); None
        while a new leader has not yet applied the entries of earlier terms."""
        return self._engine.entry_format()

    def leader_hint(self) -> str | None:
        """The raft address of the last known leader (possibly stale), or None."""
        leader = self._engine._getLeader()
        return None if leader is None else leader.address

    def status(self) -> dict[str, Any]:
        raw = self._engine.getStatus()
        snapshot = Path(self._engine.conf.fullDumpFile)
        return {
            "role": {0: "follower", 1: "candidate", 2: "leader"}.get(raw["state"], "unknown"),
            "term": raw["raft_term"],
            "leader": None if raw["leader"] is None else raw["leader"].address,
            "commit_index": raw["commit_idx"],
            "applied_index": raw["last_applied"],
            "log_entries": raw["log_len"],
            "snapshot_bytes": snapshot.stat().st_size if snapshot.exists() else 0,
            "snapshot_seconds": round(self._context.last_seconds, 3),  # the last one written
            "snapshot_pulls": self._context.pulls_installed,  # pulled from a leader, installed
            "journal_bytes": self._engine._journal.bytes,
            # when the next snapshot is due: past either (docs/state-on-disk.md, "Snapshots")
            "snapshot_due": dict(zip(("entries", "bytes"), self._engine.compaction_bounds(),
                                     strict=True)),
            "has_quorum": raw["has_quorum"],
            # docs/engine-fixes.md, "A rejoining replica deposes the leader"
            "longest_leader_gap": round(self._engine.longest_leader_gap, 3),
            # docs/engine-fixes.md, "How the engine runs"
            "tick_stalls": self._engine.tick_watch.snapshot(),
            "tick_stall_sites": self._engine.stall_sites.snapshot(),
            # docs/store-promises.md, "Formats and upgrades"
            "raft_formats": formats.announce(), "entry_format": self._engine.entry_format(),
            "data_format": formats.DATA.newest,
            **self.store.stats(),
        }

    def destroy(self, timeout: float = 5.0) -> None:
        """Stop the engine; once its thread is gone, close the store cleanly."""
        self._engine.destroy()
        deadline = time.monotonic() + timeout
        while self._engine.tick_thread_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._engine.tick_thread_alive():
            return  # still applying: the store stays open; its next open replays
        if self._context.serializer is not None:
            self._context.serializer.stop()
        self.store.close()


def _translate_failure(reason: int, leader: str | None) -> RaftKVError:
    if reason in (FAIL_REASON.NOT_LEADER, FAIL_REASON.LEADER_CHANGED):
        return NotLeader("leadership changed", leader=leader)
    if reason == FAIL_REASON.MISSING_LEADER:
        return NoLeader("no leader")
    if reason == FAIL_REASON.DISCARDED:
        # The entry was overwritten by a new leader's log: it was not applied.
        return NotLeader("entry discarded by a new leader", leader=leader)
    if reason == FAIL_REASON.UNKNOWN_OUTCOME:
        return OutcomeUnknown("the engine lost track of the entry")
    if reason == FAIL_REASON.QUEUE_FULL:
        return UnavailableError("replica overloaded")
    return Timeout(f"raft failure {reason}")

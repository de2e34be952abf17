"""The one module that imports pysyncobj: a Raft replica of a :class:`~raftkv.store.Store`.

pysyncobj 0.3.17 is pinned and hardened here from the outside (docs/engine-fixes.md
explains each defect and its test):

* the cluster secret is mandatory, so no stranger's bytes reach ``pickle.loads``
  (the engine's password is a key derived from it for the Raft port alone);
* a connection that has not authenticated within :data:`RAFT_AUTH_DEADLINE` is
  closed, and at most :data:`MAX_RAFT_UNAUTHENTICATED` wait at once;
* the journal, metadata and snapshots are 0600 whatever the umask;
* the pickle protocol is 5 (smaller entries), entries stay under :data:`ENTRY_CAP`;
* the journal is fsynced before the leader counts itself and before a follower
  acknowledges, and term/vote metadata is fsynced before it is used;
* snapshots are our own: a copy of the store's LMDB file written on a thread
  of its own (the engine's serializer ran on its tick thread and stopped its
  heartbeats), fsynced before the journal is compacted, sent to a lagging
  follower at a bounded rate; the journal is compacted by bytes as well as
  by entries, and is always paired with a snapshot;
* a follower never truncates entries that match the leader's (Raft section 5.3),
  and the leader never moves a follower's next index backwards on a late reply;
* a leader cut off from its majority steps down after :data:`LEADER_FALLBACK`;
* a replica asks its peers (PreVote, :mod:`raftkv.prevote`) before it bumps its
  term, so one that was cut off or restarted behind does not depose the leader;
* peers announce the Raft formats they speak (:mod:`raftkv.formats`): one that
  shares none is refused, and the leader writes entries every voter applies.

Everything above this module sees :class:`Replica` and our own errors only.
"""

from __future__ import annotations

import logging
import math
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import msgpack
import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as _engine_clock  # CLOCK_MONOTONIC_RAW, not time.monotonic

from . import formats, prevote, snapshots
from .cluster import derive_key
from .errors import ConfigError, NoLeader, NotLeader, OutcomeUnknown, RaftKVError, Timeout, UnavailableError
from .statedb import StateFailure
from .store import Store

log = logging.getLogger(__name__)

ENTRY_CAP = 32 * 1024     # hard cap on one serialized Raft entry (docs/engine-fixes.md, "Entry size")
# docs/engine-fixes.md, "A cut-off leader":
LEADER_FALLBACK = 2.0     # seconds without a majority before a leader steps down
# Largest frame a Raft port reads.  Legitimate frames carry at most
# appendEntriesBatchSizeBytes (4 x ENTRY_CAP) of entries or a 64 KiB snapshot
# chunk, pickled, compressed and Fernet-encrypted (base64: x 4/3).
MAX_RAFT_FRAME = 1 << 20
# A connection to the Raft port must prove the password (its first frames) this
# soon after it was accepted; peers take a round trip.  The engine's own timeout
# runs only when a socket has an event, so a silent stranger was never closed.
RAFT_AUTH_DEADLINE = 5.0
# Connections not yet authenticated at once; a new one pushes out the oldest, so
# strangers cannot keep a peer that reconnects from getting in.
MAX_RAFT_UNAUTHENTICATED = 64
LISTEN_BACKLOG = 128  # connections the Raft port's listener queues (and accepts per poll)
RAFT_PASSWORD_PURPOSE = "raft"  # derive_key purpose of the engine's password
PRIVATE_FILE = 0o600
STATE_FAILURE_EXIT = 75  # the replica stopped because its store's disk failed

# The private methods we hook or call; fail loudly at import if the pinned engine changes.
_REQUIRED = ("_SyncObj__onMessageReceived", "_SyncObj__sendNextNodeIdx", "_onTick",
             # PreVote (_PreVote below)
             "_SyncObj__onNodeConnected", "_SyncObj__onNodeDisconnected",
             "_SyncObj__connectedToAnyone", "_SyncObj__generateRaftTimeout",
             "_SyncObj__getCurrentLogIndex", "_SyncObj__getCurrentLogTerm",
             "_SyncObj__setCurrentTerm", "_SyncObj__setState",
             # the leader's first entry of its term (_SpeaksFormats below)
             "_SyncObj__onBecomeLeader")
# The engine's private attributes we read or set; checked once an engine is built.
_REQUIRED_STATE = ("_SyncObj__raftLog", "_SyncObj__transport", "_SyncObj__raftNextIndex",
                   "_SyncObj__raftCurrentTerm", "_SyncObj__raftState", "_SyncObj__raftLeader",
                   "_SyncObj__raftElectionDeadline", "_SyncObj__transferInProgress",
                   "_SyncObj__selfNode", "_SyncObj__otherNodes", "_SyncObj__noopIDx",
                   "_SyncObj__raftLastApplied", "_SyncObj__forceLogCompaction")
_Connection = pysyncobj.tcp_connection.TcpConnection
_RAFT_STATE = pysyncobj.syncobj._RAFT_STATE
if (pysyncobj.syncobj.VERSION != "0.3.17" or not all(hasattr(SyncObj, n) for n in _REQUIRED)
        or not hasattr(_Connection, "_TcpConnection__processRead")
        or (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE, _RAFT_STATE.LEADER) != (0, 1, 2)):
    raise ImportError("raftkv.node is written for pysyncobj 0.3.17 exactly")

# pysyncobj.pickle ignores its protocol argument and reads a module global named
# literally "__protocol" (docs/engine-fixes.md, "The pickle protocol"); protocol 5
# stores bytes without inflation.
setattr(pysyncobj.pickle, "__protocol", 5)


@dataclass(frozen=True)
class ReplicaConfig:
    """What one replica needs to join its group."""

    raft_addr: str                       # host:port its peers dial
    peers: tuple[str, ...]               # the other voters' raft addresses
    data_dir: Path                       # journal, metadata and snapshot live here
    secret: bytes                        # cluster secret: pysyncobj's ``password``
    shards: int = 64                     # shard count, for the store
    managed: bool = False                # a config group assigns its shards (ownership.py)
    election_timeout: tuple[float, float] = (0.4, 1.4)
    log_compaction_entries: int = 5000   # take a snapshot after this many entries
    log_compaction_bytes: int = 64 << 20  # or this many bytes of entries
    snapshot_send_rate: float = 256e6    # bytes a second sent to a follower that needs a snapshot

    def validate(self) -> None:
        if not self.secret:
            raise ConfigError("the cluster secret is mandatory: without it a Raft port runs pickles")
        if self.raft_addr in self.peers:
            raise ConfigError("raft_addr must not be listed in peers")


# -- durable journal and metadata ---------------------------------------------

class _DurableMetaStorer(pysyncobj.journal.MetaStorer):
    """Term and vote: written to a temp file, fsynced, renamed, directory fsynced."""

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - pysyncobj's name
        path = self.getPath()
        tmp = path + ".tmp"
        with _create_private(tmp) as f:
            f.write(pysyncobj.pickle.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))


class _DurableJournal(pysyncobj.journal.FileJournal):
    """FileJournal that knows when it has unsynced appends, and can sync them."""

    def __init__(self, journal_file: str) -> None:
        self._dirty = False
        super().__init__(journal_file)
        os.chmod(journal_file, PRIVATE_FILE)  # the engine creates it with the process umask
        self.bytes = self._count_bytes()  # of the entries it holds: when to compact

    def _count_bytes(self) -> int:
        return sum(len(entry[0]) for entry in self)

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.bytes += len(command)
        self._dirty = True

    def deleteEntriesFrom(self, pos: int) -> None:  # noqa: N802
        super().deleteEntriesFrom(pos)
        self.bytes = self._count_bytes()
        self._dirty = True

    def deleteEntriesTo(self, pos: int) -> None:  # noqa: N802
        super().deleteEntriesTo(pos)
        self.bytes = self._count_bytes()

    def clear(self) -> None:
        super().clear()
        self.bytes = 0

    def sync(self) -> None:
        if not self._dirty:
            return
        resizable = self._FileJournal__journalFile
        resizable.flush()  # msync of the mmap
        os.fsync(resizable._ResizableFile__f.fileno())
        self._dirty = False


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is None:
        raise ConfigError("a replica always keeps a journal on disk")
    return _DurableJournal(journal_file)


def _create_private(path: str) -> Any:
    """Open ``path`` for writing, truncated, readable by this user only."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb")


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# pysyncobj looks both names up at construction time (docs/engine-fixes.md,
# "The journal" and "Term and vote").
pysyncobj.syncobj.createJournal = _create_journal
pysyncobj.journal.MetaStorer = _DurableMetaStorer


class _GuardedTransport(pysyncobj.syncobj.TCPTransport):
    """Strangers' connections to the Raft port cost little and do not last.

    pysyncobj keeps every accepted connection until it authenticates, with no
    bound on how many, and its inactivity timeout runs only when a socket has
    an event: a silent connection stayed for ever.  Here a connection has
    :data:`RAFT_AUTH_DEADLINE` to authenticate (the tick closes late ones), and
    at most :data:`MAX_RAFT_UNAUTHENTICATED` wait at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Unauthenticated connections, oldest first -> when they were accepted.
        self._accepted_at: dict[Any, float] = {}
        self._next_report = 0.0
        super().__init__(*args, **kwargs)

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        waiting = [c for c in self._accepted_at if c in self._unknownConnections]
        if len(waiting) >= MAX_RAFT_UNAUTHENTICATED:
            now = time.monotonic()
            if now >= self._next_report:  # a flood must not flood the log too
                self._next_report = now + 10.0
                log.warning("the Raft port holds %d connections not yet authenticated: "
                            "closing the oldest for each new one", len(waiting))
            waiting[0].disconnect()
        self._accepted_at[conn] = time.monotonic()
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        if not self._accepted_at:
            return
        now = time.monotonic()
        for conn, accepted in list(self._accepted_at.items()):
            if conn not in self._unknownConnections:
                del self._accepted_at[conn]  # authenticated, or gone
            elif now - accepted > RAFT_AUTH_DEADLINE:
                del self._accepted_at[conn]
                conn.disconnect()


class _SyncingTransport(_GuardedTransport):
    """Syncs the journal before a follower acknowledges entries (next_node_idx)."""

    journal: _DurableJournal | None = None

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        if message.get("type") == "next_node_idx" and self.journal is not None:
            self.journal.sync()
        sent: bool = super().send(node, message)
        return sent


class _BoundedConnection(pysyncobj.tcp_connection.TcpConnection):
    """A Raft-port connection that never buffers more than one frame's worth.

    pysyncobj reads until the socket is drained and only then looks at the
    4-byte length header, so a stranger claiming gigabytes fills memory before
    authentication ever runs, and the quadratic buffer append stalls the tick
    thread until the leader loses its role (docs/engine-fixes.md, "Huge frame headers").  Here an
    impossible length closes the connection at once, and reading pauses while
    a whole frame is already buffered.
    """

    def _TcpConnection__processRead(self) -> bool:  # noqa: N802 - pysyncobj's name
        buffered = self._TcpConnection__readBuffer
        if len(buffered) > MAX_RAFT_FRAME + 4:
            return False  # let the parser consume what is there first
        if not _Connection._TcpConnection__processRead(self):
            return False
        buffered = self._TcpConnection__readBuffer
        if len(buffered) >= 4:
            (length,) = struct.unpack("i", buffered[:4])  # pysyncobj's native signed header
            if not 0 < length <= MAX_RAFT_FRAME:
                log.warning("closing a Raft connection that announced a %d-byte frame", length)
                self.disconnect()
                return False
        return True


# Both the listening side and the dialling side construct connections by this name.
pysyncobj.tcp_server.TcpConnection = _BoundedConnection
pysyncobj.transport.TcpConnection = _BoundedConnection


class _PromptServer(pysyncobj.tcp_server.TcpServer):
    """The Raft port's listener: a queue of :data:`LISTEN_BACKLOG` connections, all
    accepted at each poll.  The engine listens with a queue of 5 and accepts one
    connection per tick, so a burst of strangers' connects filled the queue and a
    peer's connect was dropped and retried for seconds."""

    def bind(self) -> None:
        super().bind()
        self._TcpServer__socket.listen(LISTEN_BACKLOG)

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:  # noqa: N802
        accept_one = pysyncobj.tcp_server.TcpServer._TcpServer__onNewConnection
        waiting = select.poll()  # select.select fails on descriptors above 1023
        waiting.register(descr, select.POLLIN)
        for _ in range(LISTEN_BACKLOG):
            accept_one(self, descr, event)
            if self._TcpServer__fileno is None or not waiting.poll(0):
                return


pysyncobj.transport.TcpServer = _PromptServer


# -- snapshots ------------------------------------------------------------------

SNAPSHOT_PIECE = 256 * 1024  # bytes of a snapshot per message: well under MAX_RAFT_FRAME


@dataclass
class _SnapshotContext:
    """What the serializer needs that the engine does not give it: passed as its
    ``serializer`` setting (the engine hands that to the Serializer it builds)."""

    store: Store
    send_rate: float
    journal_bytes: Callable[[], int] = lambda: 0
    compact_bytes: int = 64 << 20
    last_seconds: float = 0.0  # how long the last snapshot took to write
    serializer: _Serializer | None = None  # the one the engine built


class _Serializer:
    """Takes the place of pysyncobj's Serializer (the engine builds it by this name).

    The engine calls :meth:`serialize` on its tick thread when the journal is
    long enough and polls :meth:`checkSerializing` each tick; on success it
    compacts the journal up to the entry it named.  Here the copy runs on a
    thread of its own (docs/state-on-disk.md, "Snapshots"), the tick thread's
    part is a pickle of two entries.  Sending and receiving go in pieces of
    :data:`SNAPSHOT_PIECE`, at most ``send_rate`` bytes a second per follower.
    """

    def __init__(self, file_name: str, piece: int, try_use_fork: bool,
                 context: _SnapshotContext, deserializer: Any, serialize_checker: Any) -> None:
        # The engine passes its settings in this order: fullDumpFile,
        # logCompactionBatchSize, useFork, serializer (our context), and two unused.
        self._path = Path(file_name)
        self._context = context
        context.serializer = self
        self._piece = piece
        self._writing: snapshots.BackgroundSnapshot | None = None
        self._id: int | None = None
        self._outgoing: dict[Any, snapshots.Outgoing] = {}
        self._incoming: snapshots.Incoming | None = None  # a snapshot from the leader

    def checkSerializing(self) -> tuple[int, int | None]:  # noqa: N802 - the engine's names
        writing = self._writing
        if writing is None:
            return _SERIALIZER.NOT_SERIALIZING, None
        if not writing.done():
            return _SERIALIZER.SERIALIZING, self._id
        self._writing = None
        self._context.last_seconds = writing.seconds
        if not writing.ok:
            return _SERIALIZER.FAILED, self._id
        # A follower in the middle of the old snapshot starts again with the new one:
        # the journal is about to lose the entries that would follow the old one.
        for outgoing in self._outgoing.values():
            outgoing.close()
        self._outgoing.clear()
        return _SERIALIZER.SUCCESS, self._id

    def serialize(self, data: tuple[Any, ...], id: int) -> None:  # noqa: A002 - the engine's name
        if self._writing is not None:
            return
        self._drop_stale_transfers()
        if self._outgoing and self._context.journal_bytes() < 4 * self._context.compact_bytes:
            return  # a follower is being sent the snapshot: a new one would start it over
        self._id = id
        bookkeeping = pysyncobj.pickle.dumps(data[1:])  # (last applied, the one before, nodes)
        self._writing = snapshots.BackgroundSnapshot(self._path, bookkeeping,
                                                     self._context.store.copy_image)

    def _drop_stale_transfers(self) -> None:
        """Transfers nobody asked for in a while: to a follower gone, or begun while this
        replica led (the engine cancels them only as leader)."""
        now = time.monotonic()
        for node, outgoing in list(self._outgoing.items()):
            if now - outgoing.last_used > snapshots.STALE_TRANSFER:
                self.cancelTransmisstion(node)

    def deserialize(self) -> tuple[Any, ...]:
        try:
            return (None, *snapshots.load_snapshot(self._context.store, self._path))
        except Exception as exc:  # noqa: BLE001 - the engine would log it and carry on
            # ... and acknowledge the snapshot, with neither its state nor a journal
            # that matches: a Raft voter that says it holds what it does not.
            _stop_replica(f"the snapshot {self._path} could not be loaded ({exc!r})")

    def getTransmissionData(self, node: Any) -> tuple[bytes, bool, bool, int] | None:  # noqa: N802
        outgoing = self._outgoing.get(node)
        if outgoing is None:
            try:
                outgoing = self._outgoing[node] = snapshots.Outgoing(
                    self._path, self._piece, self._context.send_rate)
            except OSError:
                log.exception("cannot open the snapshot to send it")
                return None
        piece = outgoing.next_piece()
        if piece is not None and piece[2]:
            outgoing.close()
            del self._outgoing[node]
        return piece

    def setTransmissionData(self, data: tuple[Any, ...] | None) -> bool:  # noqa: N802
        """Write a piece from the leader; True once the whole snapshot is in place.

        A piece that does not follow the last one (lost with a broken connection)
        drops the transfer: the leader, finding us behind again, starts it over.
        A failure of our own disk stops the replica.
        """
        if data is None:
            return False
        piece, first, last = data[:3]
        offset = data[3] if len(data) > 3 else None  # older code sent no offsets
        try:
            if first:
                if self._incoming is not None:
                    self._incoming.abandon()
                self._incoming = snapshots.Incoming(
                    self._path.with_name(self._path.name + ".incoming"))
            if self._incoming is None:
                return False  # a piece of a transfer whose beginning we did not see
            if not self._incoming.add(piece, offset):
                log.warning("a piece of the leader's snapshot was lost; waiting for it again")
                self._incoming.abandon()
                self._incoming = None
                return False
            if not last:
                return False
            incoming, self._incoming = self._incoming, None
            incoming.finish()
            self._wait_for_own_snapshot()
            os.replace(incoming.path, self._path)
            _fsync_dir(str(self._path.parent))
        except OSError as exc:
            _stop_replica(f"receiving the leader's snapshot failed ({exc!r})")
        return True  # the engine now calls deserialize, which installs it

    def _wait_for_own_snapshot(self) -> None:
        """A snapshot of our own still being written is dropped: it would copy a store
        about to be replaced, and land over the leader's."""
        writing = self._writing
        if writing is not None:
            writing.wait()
            self._writing = None

    def stop(self) -> None:
        """Wait for a snapshot being written (it reads the store, about to close), and
        drop transfers in either direction."""
        if self._writing is not None:
            self._writing.wait()
        if self._incoming is not None:
            self._incoming.abandon()
            self._incoming = None
        for node in list(self._outgoing):
            self.cancelTransmisstion(node)

    def cancelTransmisstion(self, node: Any) -> None:  # noqa: N802 - the engine's spelling
        outgoing = self._outgoing.pop(node, None)
        if outgoing is not None:
            outgoing.close()


def _stop_replica(reason: str) -> NoReturn:
    """Stop the process: this replica's own disk or state failed, and going on could
    leave it with a state, or a claim in Raft, that its peers do not share."""
    log.critical("stopping this replica: %s; fix the disk, then start it again", reason)
    logging.shutdown()
    os._exit(STATE_FAILURE_EXIT)


_SERIALIZER = pysyncobj.serializer.SERIALIZER_STATE
# The engine looks the name up when it is built, like the journal's.
pysyncobj.syncobj.Serializer = _Serializer


# -- the replica ----------------------------------------------------------------

class _EngineBase(SyncObj):
    """pysyncobj carrying our store; the fixes below are mixed into :class:`_Engine`."""

    transport_class: type = _SyncingTransport

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._store = store
        self._compact_bytes = config.log_compaction_bytes
        self._snapshot_context: _SnapshotContext = conf.serializer
        super().__init__(config.raft_addr, list(config.peers), conf,
                         transportClass=self.transport_class)
        missing = [name for name in _REQUIRED_STATE if not hasattr(self, name)]
        if missing:
            self.destroy()
            raise ImportError(f"pysyncobj 0.3.17 without {', '.join(missing)}: raftkv.node cannot hook it")
        self._journal = self._SyncObj__raftLog
        self._SyncObj__transport.journal = self._journal
        self._snapshot_context.journal_bytes = lambda: self._journal.bytes

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
        try:
            return self._store.apply_entry(msgpack.unpackb(packed, raw=False), index)
        except StateFailure as exc:
            _stop_replica(f"the store on disk failed at entry {index} ({exc})")


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


class _CompactsByBytes(_EngineBase):
    """A snapshot is due after so many bytes of entries, not only so many entries:
    a journal of large entries would otherwise fill memory (the engine keeps its
    entries in a list) and the disk before it reached the count."""

    _compact_bytes: int

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        if self._journal.bytes > self._compact_bytes:
            self._SyncObj__forceLogCompaction = True
        super()._onTick(timeToWait)


class _LeaderSyncsBeforeCounting(_EngineBase):
    """The leader counts itself in the commit rule at the start of a tick.

    docs/engine-fixes.md, "The journal".
    """

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        self._journal.sync()  # its own entries must be on disk before they count
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
        log_entries = self._SyncObj__raftLog
        first_index = log_entries[0][1]
        last_index = log_entries[-1][1]
        prev = message["prevLogIdx"]
        if prev < first_index or prev > last_index:
            return message
        if log_entries[prev - first_index][2] != message["prevLogTerm"]:
            return message  # a real conflict: let pysyncobj reset the follower
        skipped = 0
        for entry in entries:
            idx = entry[1]
            if idx > last_index or log_entries[idx - first_index][2] != entry[2]:
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


class _SpeaksFormats(_EngineBase):
    """What each connected peer said it speaks; a peer that shares no Raft format is refused.

    The hello (sent on every connect, see :class:`_PreVote`) carries the range of
    Raft formats the sender speaks (:mod:`raftkv.formats`).  A peer whose range
    does not overlap ours is disconnected at its hello, every time it connects:
    it could neither apply our entries nor we its.  A reconnect may be a restart
    onto other code, so what a peer speaks is forgotten when it disconnects.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self.peer_raft_formats: dict[Any, range] = {}  # read by other threads: replaced, never edited
        self._refusals_logged: set[tuple[Any, range]] = set()
        # (term, index) of the no-op this replica appended when it last became leader;
        # read by other threads: replaced, never edited.
        self._term_start: tuple[int, int] | None = None
        super().__init__(config, store, conf)

    def _SyncObj__onBecomeLeader(self) -> None:  # noqa: N802
        super()._SyncObj__onBecomeLeader()
        self._term_start = (self._SyncObj__raftCurrentTerm, self._SyncObj__noopIDx)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if message.get("type") == prevote.HELLO:
            theirs = formats.peer_raft_formats(message)
            if not formats.overlaps(theirs):
                self._refuse(node, theirs)
                return
            self.peer_raft_formats = {**self.peer_raft_formats, node: theirs}
        super()._SyncObj__onMessageReceived(node, message)

    def _refuse(self, node: Any, theirs: range) -> None:
        ours = formats.RAFT.speaks
        if (node, theirs) not in self._refusals_logged:  # it redials every few seconds
            self._refusals_logged.add((node, theirs))
            log.error("refusing Raft peer %s: it speaks Raft formats %d to %d, this replica "
                      "%d to %d; run code that shares a format (docs/store-promises.md, "
                      "\"Formats and upgrades\")", node.address, theirs.start, theirs.stop - 1,
                      ours.start, ours.stop - 1)
        self._forget(node)
        conn = self._SyncObj__transport._connections.get(node)
        if conn is not None:
            conn.disconnect()

    def _forget(self, node: Any) -> None:
        if node in self.peer_raft_formats:
            self.peer_raft_formats = {n: r for n, r in self.peer_raft_formats.items() if n != node}

    def _SyncObj__onNodeConnected(self, node: Any) -> None:  # noqa: N802
        self._forget(node)
        super()._SyncObj__onNodeConnected(node)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
        self._forget(node)
        super()._SyncObj__onNodeDisconnected(node)

    def entry_format(self) -> int | None:
        """The Raft format to write entries in now (:func:`raftkv.formats.entry_format`), or
        None on a leader that has not yet applied its term's first entry.

        The group's format is the store's (``Store.raft_format``, a function of the
        log applied).  A new leader may hold entries of earlier terms it has not
        applied, which may be of the old format; once it has applied the no-op it
        appended on election it has applied all of them, and its decision is the
        one every replica reaches from the same log (docs/store-promises.md,
        "Formats and upgrades").
        """
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            start = self._term_start
            if (start is None or start[0] != self._SyncObj__raftCurrentTerm
                    or self.raftLastApplied < start[1]):
                return None
        known = self.peer_raft_formats
        voters = [known.get(peer) for peer in list(self._SyncObj__otherNodes)]
        return formats.entry_format(voters, self._store.raft_format)


class _Engine(_LeaderSyncsBeforeCounting, _CompactsByBytes, _LeaderKeepsNextIndex,
              _FollowerKeepsMatchingEntries, _FollowerAnswersSnapshotPieces, _SpeaksFormats,
              _PreVote):
    """pysyncobj with every fix; see the module docstring."""


def _engine_conf(config: ReplicaConfig, store: Store,
                 on_ready: Callable[[], None] | None = None) -> SyncObjConf:
    return SyncObjConf(
        password=derive_key(config.secret, RAFT_PASSWORD_PURPOSE).hex(),
        appendEntriesUseBatch=False,         # otherwise every write waits for a heartbeat
        appendEntriesBatchSizeBytes=4 * ENTRY_CAP,  # above the cap: no chunking bug
        journalFile=str(config.data_dir / "raft.journal"),
        fullDumpFile=str(config.data_dir / snapshots.SNAPSHOT_FILE),
        serializer=_SnapshotContext(store, config.snapshot_send_rate,
                                    compact_bytes=config.log_compaction_bytes),
        deserializer=snapshots.load_snapshot,  # the engine insists on both; _Serializer calls it
        logCompactionBatchSize=SNAPSHOT_PIECE,
        useFork=False,
        raftMinTimeout=config.election_timeout[0],
        raftMaxTimeout=config.election_timeout[1],
        connectionTimeout=max(3.5, config.election_timeout[1]),
        leaderFallbackTimeout=LEADER_FALLBACK,
        logCompactionMinEntries=config.log_compaction_entries,
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
            "journal_bytes": self._engine._journal.bytes,
            "has_quorum": raw["has_quorum"],
            # docs/engine-fixes.md, "A rejoining replica deposes the leader"
            "longest_leader_gap": round(self._engine.longest_leader_gap, 3),
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


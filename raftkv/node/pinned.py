"""The engine this package is written for, checked at import, and the limits every part shares."""

from __future__ import annotations

import logging

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport
from pysyncobj import SyncObj

log = logging.getLogger(__name__)

ENTRY_CAP = 32 * 1024     # hard cap on one serialized Raft entry (docs/engine-fixes.md, "Entry size")
# docs/engine-fixes.md, "A cut-off leader":
LEADER_FALLBACK = 2.0     # seconds without a majority before a leader steps down
# Largest frame a Raft port reads.  Legitimate frames carry at most
# appendEntriesBatchSizeBytes (4 x ENTRY_CAP) of entries or a 256 KiB snapshot
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
STATE_FAILURE_EXIT = 75  # the replica stopped because its store's disk failed

# The private methods we hook or call; fail loudly at import if the pinned engine changes.
_REQUIRED = ("_SyncObj__onMessageReceived", "_SyncObj__sendNextNodeIdx", "_onTick",
             # PreVote (_PreVote below)
             "_SyncObj__onNodeConnected", "_SyncObj__onNodeDisconnected",
             "_SyncObj__connectedToAnyone", "_SyncObj__generateRaftTimeout",
             "_SyncObj__getCurrentLogIndex", "_SyncObj__getCurrentLogTerm",
             "_SyncObj__setCurrentTerm", "_SyncObj__setState",
             # the leader's first entry of its term (_SpeaksFormats below)
             "_SyncObj__onBecomeLeader",
             # one transaction per pass of applying (_AppliesInOneTransaction)
             "_SyncObj__applyLogEntries",
             # one snapshot offer per round (_LeaderOffersSnapshotsOnce)
             "_SyncObj__sendAppendEntries")
# The engine's private attributes we read or set; checked once an engine is built.
_REQUIRED_STATE = ("_SyncObj__raftLog", "_SyncObj__transport", "_SyncObj__raftNextIndex",
                   "_SyncObj__raftCurrentTerm", "_SyncObj__raftState", "_SyncObj__raftLeader",
                   "_SyncObj__raftElectionDeadline", "_SyncObj__transferInProgress",
                   "_SyncObj__selfNode", "_SyncObj__otherNodes", "_SyncObj__noopIDx",
                   "_SyncObj__raftLastApplied", "_SyncObj__forceLogCompaction",
                   # ReadIndex (_ServesReadIndex): the commit index, and the tick's wake-up
                   "_SyncObj__raftCommitIndex", "_SyncObj__pipeNotifier",
                   # the leader counts itself only for what is synced (_LeaderCountsWhatIsSynced)
                   "_SyncObj__raftMatchIndex")
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

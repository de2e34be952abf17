"""The one package that imports pysyncobj: a Raft replica of a :class:`~raftkv.store.Store`.

pysyncobj 0.3.17 is pinned and hardened here from the outside (docs/engine-fixes.md
explains each defect and its test):

* the cluster secret is mandatory, so no stranger's bytes reach ``pickle.loads``
  (the engine's password is a key derived from it for the Raft port alone);
* a connection that has not authenticated within :data:`RAFT_AUTH_DEADLINE` is
  closed, and at most :data:`MAX_RAFT_UNAUTHENTICATED` wait at once;
* the journal, metadata and snapshots are 0600 whatever the umask;
* the pickle protocol is 5 (smaller entries), entries stay under :data:`ENTRY_CAP`;
* the journal is fsynced by a thread of its own, not the tick thread: a follower
  acknowledges, and the leader counts itself, only for entries it has synced;
  term/vote metadata is fsynced before it is used;
* snapshots are our own: a copy of the store's LMDB file written on a thread
  of its own (the engine's serializer ran on its tick thread and stopped its
  heartbeats), fsynced before the journal is compacted, pulled by a lagging
  follower over the leader's client port (:mod:`raftkv.snapshot_pull`; sent in
  pieces to one on older code) at a bounded rate; the journal is compacted by bytes as well as
  by entries, and is always paired with a snapshot;
* a follower never truncates entries that match the leader's (Raft section 5.3),
  and the leader never moves a follower's next index backwards on a late reply;
* a leader cut off from its majority steps down after :data:`LEADER_FALLBACK`;
* a replica asks its peers (PreVote, :mod:`raftkv.prevote`) before it bumps its
  term, so one that was cut off or restarted behind does not depose the leader;
* peers announce the Raft formats they speak (:mod:`raftkv.formats`): one that
  shares none is refused, and the leader writes entries every voter applies;
* a linearizable read needs no log entry: the leader answers it once a majority
  confirmed it still leads after the read arrived (ReadIndex, :mod:`raftkv.readindex`).

Its modules: :mod:`.pinned` (the engine checked at import, shared limits),
:mod:`.config`, :mod:`.disk` (journal and term/vote), :mod:`.network` (the
Raft port), :mod:`.serializer` (snapshots), :mod:`.fixes`, :mod:`.elections`
(PreVote), :mod:`.peer_formats`, :mod:`.read_index` and :mod:`.syncing` (mixins of the
engine), :mod:`.replica`.
Everything above this package sees :class:`Replica` and our own errors only.
"""

from .config import ReplicaConfig
from .pinned import (
    ENTRY_CAP,
    LEADER_FALLBACK,
    MAX_RAFT_FRAME,
    MAX_RAFT_UNAUTHENTICATED,
    RAFT_AUTH_DEADLINE,
    RAFT_PASSWORD_PURPOSE,
    STATE_FAILURE_EXIT,
)
from .replica import Replica

__all__ = ["ENTRY_CAP", "LEADER_FALLBACK", "MAX_RAFT_FRAME", "MAX_RAFT_UNAUTHENTICATED",
           "RAFT_AUTH_DEADLINE", "RAFT_PASSWORD_PURPOSE", "STATE_FAILURE_EXIT", "Replica",
           "ReplicaConfig"]

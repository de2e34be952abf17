"""What one replica needs to join its group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


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
    snapshot_write_rate: float = 64e6    # bytes a second a snapshot is written at
    client_addr: str | None = None       # its client port, where followers pull snapshots from

    def validate(self) -> None:
        if not self.secret:
            raise ConfigError("the cluster secret is mandatory: without it a Raft port runs pickles")
        if self.raft_addr in self.peers:
            raise ConfigError("raft_addr must not be listed in peers")

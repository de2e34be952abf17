"""Which group serves which shard.

Without a config group the map is static: it is derived from the cluster file,
the same way on every process, spreading the shards evenly over the groups.
With one, this static map is configuration 1, and later maps come from the
stored configurations (:mod:`shards.config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.cluster import ClusterConfig
from raftkv.errors import ConfigError


@dataclass(frozen=True)
class ShardMap:
    num: int                      # configuration number; grows with every change
    owners: tuple[int, ...]       # owners[shard] = group id

    @classmethod
    def static(cls, cluster: ClusterConfig) -> ShardMap:
        """Shards spread round-robin over the cluster file's groups, in id order."""
        group_ids = sorted(g.id for g in cluster.groups)
        if not group_ids:
            raise ConfigError("no storage groups")
        # Number 0: any stored configuration, even the first (this map again, or
        # one from before a group was added to the file), is newer.
        return cls(num=0, owners=tuple(group_ids[s % len(group_ids)]
                                       for s in range(cluster.shards)))

    def group_of(self, shard: int) -> int:
        return self.owners[shard]

"""``shards.Client``: the store as the apps see it -- every group behind one object."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import raftkv
from raftkv.client import Cell
from raftkv.cluster import ClusterConfig
from raftkv.keys import shard_of

from .shardmap import ShardMap


class Client:
    """Route each request to the group that owns its row's shard.

    Thread-safe.  Create one per process, after any fork (it owns sockets and
    threads).  Methods and errors are those of :class:`raftkv.Client`.
    """

    def __init__(self, cluster: ClusterConfig, *, timeout: float = 10.0) -> None:
        self.cluster = cluster
        self.shard_map = ShardMap.static(cluster)
        self._groups = {g.id: raftkv.Client(g.client_addrs, cluster.secret, timeout=timeout)
                        for g in cluster.all_groups()}

    def shard_of(self, row: str) -> int:
        return shard_of(row, self.cluster.shards)

    def _for_row(self, row: str) -> raftkv.Client:
        return self._groups[self.shard_map.group_of(self.shard_of(row))]

    def get(self, row: str, col: str, *, consistency: str = "linearizable") -> Cell | None:
        return self._for_row(row).get(row, col, consistency=consistency)

    def put(self, row: str, col: str, value: bytes) -> int:
        return self._for_row(row).put(row, col, value)

    def put_stream(self, row: str, col: str, stream: BinaryIO | bytes) -> int:
        return self._for_row(row).put_stream(row, col, stream)

    def get_stream(self, row: str, col: str) -> tuple[int, Iterator[bytes]] | None:
        return self._for_row(row).get_stream(row, col)

    def get_into(self, row: str, col: str, out: BinaryIO) -> int | None:
        return self._for_row(row).get_into(row, col, out)

    def delete(self, row: str, col: str) -> bool:
        return self._for_row(row).delete(row, col)

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None) -> int:
        return self._for_row(row).cput(row, col, new, old=old, if_version=if_version)

    def mutate_row(self, row: str, conditions: Sequence[tuple[Any, ...]],
                   mutations: Sequence[tuple[Any, ...]]) -> dict[str, int]:
        return self._for_row(row).mutate_row(row, conditions, mutations)

    def get_row(self, row: str, prefix: str = "", *,
                consistency: str = "linearizable") -> dict[str, Cell]:
        return self._for_row(row).get_row(row, prefix, consistency=consistency)

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: str = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        group = self._groups[self.shard_map.group_of(shard)]
        return group.scan(shard, after_row, limit, consistency=consistency)

    def config_group(self) -> raftkv.Client | None:
        """The config group's client (configurations, node registry), if there is one."""
        if self.cluster.config_group is None:
            return None
        return self._groups[self.cluster.config_group.id]

    def status(self) -> list[dict[str, Any]]:
        """Every replica's status (the config group's as group 0), named as in the cluster file."""
        out = []
        for group in self.cluster.all_groups():
            for replica, status in zip(group.replicas, self._groups[group.id].status(), strict=True):
                out.append({**status, "name": replica.name, "group": group.id,
                            "addr": replica.client})
        return out

    def close(self) -> None:
        for group in self._groups.values():
            group.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Changing the configuration: the coordinator that moves shards between groups.

``raftkv-ctl join|leave|move`` computes the next configuration
(:mod:`shards.config`), moves every shard whose owner changes with the steps of
:mod:`raftkv.ownership` -- freeze at the source, export, copy its blob chunks,
import at the destination through its log, adopt, drop at the source -- and
only then stores the configuration in the config group, where clients find it
when a group answers ``WrongShard``.  Shards that do not move are served
throughout; a moving shard is unavailable only while it is copied.  A change
interrupted half-way leaves its shard frozen at the source (nothing is lost,
and nothing is served twice); finishing it by hand is still to be built.

The first change bootstraps: configuration 1 is the static map of the cluster
file, and each group is told which shards it owns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgpack

from raftkv.blobs import data_chunks, parse_manifest
from raftkv.errors import ConfigError

from .config import Config, ConfigStore
from .shardmap import ShardMap

if TYPE_CHECKING:
    import raftkv

    from .client import Client

IMPORT_BYTES = 16 * 1024  # one import command's cells: half of a Raft entry's cap

Progress = Callable[[str], None]


class Migrator:
    """Drives configuration changes for one cluster through a :class:`shards.Client`."""

    def __init__(self, client: Client, progress: Progress | None = None) -> None:
        config_group = client.config_group()
        if config_group is None:
            raise ConfigError("the cluster file has no [config_group]: shards cannot move")
        self.client = client
        self.store = ConfigStore(config_group, client.cluster.shards)
        self.progress = progress or (lambda message: None)

    def current(self) -> Config:
        """The latest configuration, bootstrapping configuration 1 when there is none."""
        config = self.store.query()
        if config.num > 0:
            return config
        cluster = self.client.cluster
        first = Config(1, ShardMap.static(cluster).owners,
                       {g.id: tuple(g.client_addrs) for g in cluster.groups})
        for gid in first.groups:
            self._group(gid).execute({"op": "set_owned", "config": 1,
                                      "shards": first.shards_of(gid)}, write=True)
        return self._store(first)

    def reconfigure(self, step: Callable[[Config], Config]) -> Config:
        """Apply ``step(current)``: move what moves, then publish the configuration."""
        current = self.current()
        target = step(current)
        moving = [s for s in range(len(target.owners)) if target.owners[s] != current.owners[s]]
        for done, shard in enumerate(moving, start=1):
            self.move_shard(shard, current.owners[shard], target.owners[shard], target.num)
            self.progress(f"shard {shard}: group {current.owners[shard]} -> "
                          f"{target.owners[shard]} ({done}/{len(moving)})")
        return self._store(target)

    def move_shard(self, shard: int, source: int, dest: int, num: int) -> None:
        src, dst = self._group(source), self._group(dest)
        src.execute({"op": "freeze_shard", "config": num, "shard": shard}, write=True)
        after = ""
        while True:
            page = src.execute({"op": "export_shard", "shard": shard, "after": after,
                                "limit": 200}, write=False)
            for batch in _batches(page["rows"]):
                for _row, cells in batch:
                    for _col, _version, value, is_blob in cells:
                        if is_blob:
                            self._copy_chunks(src, dst, value)
                dst.execute({"op": "import_shard", "config": num, "shard": shard,
                             "rows": batch, "counter": page["counter"]}, write=True)
            if not page["more"] or not page["rows"]:
                break
            after = page["rows"][-1][0]
        # Nothing moved yet at all (an empty shard) still carries its counter over.
        dst.execute({"op": "import_shard", "config": num, "shard": shard, "rows": [],
                     "counter": page["counter"]}, write=True)
        dst.execute({"op": "adopt_shard", "config": num, "shard": shard}, write=True)
        src.execute({"op": "drop_shard", "config": num, "shard": shard}, write=True)

    @staticmethod
    def _copy_chunks(src: raftkv.Client, dst: raftkv.Client, manifest: bytes) -> None:
        parsed = parse_manifest(manifest)
        for name in [*parsed.index, *data_chunks(parsed, src.fetch_chunk)]:
            dst.put_chunk(name, src.fetch_chunk(name))

    def _group(self, gid: int) -> raftkv.Client:
        return self.client.group_client(gid)

    def _store(self, config: Config) -> Config:
        def step(latest: Config) -> Config:
            if latest.num >= config.num:
                raise ConfigError(f"configuration {latest.num} appeared meanwhile; run again")
            return config
        stored = self.store.change(step)
        self.client.use_config(stored)
        return stored


def _batches(rows: list) -> list[list]:
    """Rows split into import commands of at most about IMPORT_BYTES each (cells may split)."""
    batches: list[list] = []
    batch: list = []
    size = 0
    for row, cells in rows:
        for cell in cells:
            cell_size = len(msgpack.packb(cell, use_bin_type=True)) + len(row)
            if batch and size + cell_size > IMPORT_BYTES:
                batches.append(batch)
                batch, size = [], 0
            if batch and batch[-1][0] == row:
                batch[-1][1].append(cell)
            else:
                batch.append([row, [cell]])
            size += cell_size
    if batch:
        batches.append(batch)
    return batches

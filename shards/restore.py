"""Build a new cluster's data directories from a backup file.

The cluster file says where the new cluster's replicas live; each group of the
backup becomes the group of the same id there (its addresses may all differ).
The configuration the backup holds names the old addresses, so the restored
config group gets one more configuration: the same owners, the new addresses.
Each group was saved settled in the configuration before it, so its
reconfigurer steps into the new one with nothing to move, and clients find the
groups at their new addresses.

Nothing is put in place until the whole file has been read and proved intact,
and every chunk the cells name is in it; a refused file leaves no directory
behind.  Existing directories are never overwritten.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from raftkv.backupfile import (
    BackupCell,
    BackupDamaged,
    BackupReader,
    Chunk,
    ClusterHeader,
    End,
    GroupHeader,
    secret_check,
)
from raftkv.cluster import CONFIG_GROUP_ID, ClusterConfig
from raftkv.keys import shard_of
from raftkv.restore import GroupSeed

from .config import Config, ConfigStore

WORK_DIR = ".restoring"


class RestoreRefused(Exception):
    """The backup cannot be restored into this cluster file or data directory."""


@dataclass
class Restored:
    groups: int
    cells: int
    chunks: int
    config_num: int | None   # the configuration the restored cluster starts in


def restore_backup(stream: IO[bytes], cluster: ClusterConfig, data_dir: Path, *,
                   new_secret: bool = False) -> Restored:
    """Read the backup in ``stream`` and write every replica's directory under ``data_dir``
    (``data_dir / <replica name>``, as ``raftcloud up --data-dir`` expects).

    The cluster's secret must be the one the backup was saved with, unless
    ``new_secret``: app passwords are checked with a key derived from it."""
    groups = {g.id: g for g in cluster.all_groups()}
    targets = [data_dir / r.name for g in groups.values() for r in g.replicas]
    taken = [str(t) for t in targets if t.exists()]
    if taken:
        raise RestoreRefused(f"{', '.join(taken)} already exist: restore into a new data directory")
    work = data_dir / WORK_DIR
    if work.exists():
        shutil.rmtree(work)  # a restore that died before
    work.mkdir(parents=True, mode=0o700)
    seeds: dict[int, GroupSeed] = {}
    try:
        restored = _read(BackupReader(stream), cluster, work, seeds, new_secret)
        for gid, seed in seeds.items():
            missing = seed.missing_chunks()
            if missing:
                raise BackupDamaged(f"group {gid}'s cells name {len(missing)} chunks the backup "
                                    f"does not hold (the first: {missing[0][:12]})")
        for gid, seed in seeds.items():
            seed.place([data_dir / r.name for r in groups[gid].replicas])
        # A storage group of the cluster file that the backup does not hold starts empty.
    except BaseException:
        for seed in seeds.values():
            seed.close()
        for target in targets:
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return restored


def _read(reader: BackupReader, cluster: ClusterConfig, work: Path,
          seeds: dict[int, GroupSeed], new_secret: bool) -> Restored:
    header: ClusterHeader | None = None
    group: GroupHeader | None = None
    configs = _ConfigCells(cluster.shards)
    chunks = 0
    for record in reader:
        if isinstance(record, ClusterHeader):
            header = record
            _check_fits(record, cluster, new_secret)
        elif isinstance(record, GroupHeader):
            _finish(group, seeds, configs, cluster)
            group = record
            seeds[record.gid] = GroupSeed(
                work / str(record.gid), cluster.shards,
                managed=cluster.config_group is not None and record.gid != CONFIG_GROUP_ID)
        elif isinstance(record, list):
            assert group is not None
            seeds[group.gid].add_cells(record)
            if group.gid == CONFIG_GROUP_ID:
                configs.note(record)
        elif isinstance(record, Chunk):
            assert group is not None
            seeds[group.gid].add_chunk(record.name, record.data)
            chunks += 1
        elif isinstance(record, End):
            _finish(group, seeds, configs, cluster)
            assert header is not None
            return Restored(record.groups, record.cells, chunks, configs.new_num)
    raise BackupDamaged("the backup file has no end")


def _check_fits(header: ClusterHeader, cluster: ClusterConfig, new_secret: bool) -> None:
    if header.secret_check != secret_check(cluster.secret) and not new_secret:
        raise RestoreRefused("the backup was saved by a cluster with another secret: restore "
                             "with that one (say, RAFTCLOUD_SECRET_FILE), or the app passwords "
                             "in it stop working; --new-secret accepts that")
    if header.shards != cluster.shards:
        raise RestoreRefused(f"the backup has {header.shards} shards and the cluster file "
                             f"{cluster.shards}: a row's shard depends on the count")
    have = {g.id for g in cluster.all_groups()}
    missing = sorted(set(header.groups) - have)
    if missing:
        raise RestoreRefused(f"the backup holds groups {missing} that the cluster file does "
                             "not have: restore into a cluster file with the same group ids")


def _finish(group: GroupHeader | None, seeds: dict[int, GroupSeed], configs: _ConfigCells,
            cluster: ClusterConfig) -> None:
    """The group's own state, once all its cells are in."""
    if group is None:
        return
    seed = seeds[group.gid]
    counters = dict(group.counters)
    ownership = None
    if group.gid == CONFIG_GROUP_ID:
        extra = configs.next_config(cluster, counters)
        if extra:
            seed.add_cells(extra)
    elif cluster.config_group is not None:
        ownership = {"config_num": group.config_num,
                     "owned": None if group.owned is None else sorted(group.owned),
                     "incoming": [], "frozen": []}
    seed.finish_state(clock=group.clock, counters=counters, ownership=ownership)


class _ConfigCells:
    """The configuration cells seen in the config group's pages, and the one to add."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.cells: dict[str, BackupCell] = {}   # column -> cell of the configurations' row
        self.new_num: int | None = None

    def note(self, cells: list[BackupCell]) -> None:
        for cell in cells:
            if cell.row == ConfigStore.ROW:
                self.cells[cell.col] = cell

    def next_config(self, cluster: ClusterConfig, counters: dict[int, int]) -> list[BackupCell]:
        """Configuration latest + 1: the latest one's owners at the cluster file's addresses."""
        latest_cell = self.cells.get(ConfigStore.LATEST)
        if latest_cell is None:
            return []  # never configured: the cluster bootstraps as a new one
        num = int(latest_cell.value)
        stored = self.cells.get(ConfigStore.column(num))
        if stored is None:
            raise BackupDamaged(f"the backup's latest configuration {num} is not in it")
        latest = Config.unpack(stored.value)
        addresses = {g.id: tuple(g.client_addrs) for g in cluster.groups}
        missing = sorted(set(latest.groups) - set(addresses))
        if missing:
            raise RestoreRefused(f"configuration {num} has groups {missing} that the cluster "
                                 "file does not")
        new = Config(num + 1, latest.owners, {g: addresses[g] for g in latest.groups})
        shard = shard_of(ConfigStore.ROW, self.shards)
        version = counters.get(shard, 0)
        counters[shard] = version + 2
        self.new_num = new.num
        return [BackupCell(shard, ConfigStore.ROW, ConfigStore.column(new.num), version + 1, False, None,
                           new.pack()),
                BackupCell(shard, ConfigStore.ROW, ConfigStore.LATEST, version + 2, False, None,
                           str(new.num).encode())]

"""Build a group's replica data directories from a backup's records.

:class:`GroupSeed` writes the group's cells, version counters, clock and shard
ownership into a new store (in pages, so memory stays bounded whatever the
size), and its chunks into a blob directory of its own; :meth:`GroupSeed.place`
then gives every replica of the group the same snapshot of that store
(:mod:`raftkv.node.seed` says why a snapshot and at which index) and a copy of
every chunk.  Nothing here reads the backup file: the caller hands over records
that :mod:`raftkv.backupfile` has checked, and puts the directories in place only
once the whole file has proved intact.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from . import formats, snapshots
from .backupfile import BackupCell
from .blobs import BlobStore, parse_manifest, read_index
from .diskkeys import CellValue
from .formats import NO_COMMANDS
from .node.seed import SEED_INDEX, seed_bookkeeping
from .store import Store
from .tables import Tables


class GroupSeed:
    """One group's restored state, built once in ``work`` and then copied to each replica."""

    def __init__(self, work: Path, shards: int, *, managed: bool) -> None:
        self.work = work
        self.store = Store(shards, managed=managed, path=work / "state")
        self.blobs = BlobStore(work / "blobs")
        self.referenced: set[str] = set()  # chunks the cells' manifests name directly
        self.index_chunks: set[str] = set()  # of those, the index chunks of large values
        self.cells = 0
        self._closed = False

    def add_cells(self, cells: list[BackupCell]) -> None:
        """Write a page of cells in one transaction."""
        with self.store.db.begin_write() as txn:
            tables = Tables(txn, self.store.db.tables)
            for cell in cells:
                tables.put_cell(cell.key(), CellValue(cell.version, cell.value, cell.is_blob,
                                                      cell.expires))
                if cell.is_blob:
                    manifest = parse_manifest(cell.value)
                    self.referenced.update(manifest.chunks)
                    self.referenced.update(manifest.index)
                    self.index_chunks.update(manifest.index)
        self.cells += len(cells)

    def add_chunk(self, name: str, data: bytes) -> None:
        self.blobs.put(name, data)

    def missing_chunks(self) -> list[str]:
        """Chunks the cells need that the backup did not hold (a large value's data
        chunks are named in its index chunks, read here)."""
        needed = set(self.referenced)
        for name in self.index_chunks:
            data = self.blobs.get(name)
            if data is not None:
                needed.update(read_index(data))
        return sorted(name for name in needed if not self.blobs.has(name))

    def finish_state(self, *, clock: float, counters: dict[int, int],
                     ownership: dict[str, Any] | None) -> None:
        """Write the store's own state: at :data:`SEED_INDEX`, with no command applied
        yet in this cluster (so the group writes the newest entry format)."""
        if not math.isfinite(clock):
            raise ValueError("a group's clock is a finite time")
        with self.store.db.begin_write() as txn:
            tables = Tables(txn, self.store.db.tables)
            tables.put_meta("progress", [SEED_INDEX, 0, clock, NO_COMMANDS, 0])
            tables.put_meta("counters", counters)
            if ownership is not None:
                tables.put_meta("ownership", ownership)
        self.store.reload()

    def place(self, replica_dirs: list[Path]) -> None:
        """Give each replica (a node's ``--data-dir``) the snapshot and the chunks."""
        snapshot = self.work / snapshots.SNAPSHOT_FILE
        snapshots.write_snapshot(snapshot, seed_bookkeeping(), self.store.copy_image,
                                 rate=math.inf)
        self.close()
        for replica in replica_dirs:
            raft = replica / "raft"
            formats.prepare_data_dir(raft)  # new: records the newest data format
            shutil.copyfile(snapshot, raft / snapshots.SNAPSHOT_FILE)
            (raft / snapshots.SNAPSHOT_FILE).chmod(0o600)
        # Each chunk read (and checked against its name) once, written to every replica.
        targets = [BlobStore(replica / "blobs") for replica in replica_dirs]
        for chunk in self.blobs.files():
            data = None if chunk.temporary else self.blobs.get(chunk.name)
            if data is not None:
                for target in targets:
                    target.put(chunk.name, data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.store.close()

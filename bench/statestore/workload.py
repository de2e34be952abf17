"""Our workload's shapes, and the measurements, the same for every engine.

The data set is made of users, 128 cells each, like a mailbox: one wide row of
50 small columns (an index, read whole by ``get_row``) and 39 narrow rows of a
small header ``h`` and a body ``b``, large for a share of them.  The ``{user}``
hash tag keeps a user's rows in one shard, as the apps do; a replica holds
``shards`` shards.  Everything is derived from a cell's number, so a child
process picks random cells without a list of keys in its memory.
"""

from __future__ import annotations

import random
import statistics
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from raftkv import diskkeys
from raftkv.keys import shard_of

from .engines import Engine, Reader, WriteTxn, disk_bytes

WIDE_COLUMNS = 50
NARROW_ROWS = 39
CELLS_PER_USER = WIDE_COLUMNS + 2 * NARROW_ROWS
CLIENT = 1 << 40                 # the exactly-once table's client id of the bench's writer
WINDOW = 64                      # its answers kept: the client acknowledges 64 behind
APPLIED = b"applied"
WITNESS_SHARD = 2**32 - 1        # cells the crash probe writes, outside every data shard
PAYLOAD = random.Random(15).randbytes(1 << 20)


@dataclass(frozen=True)
class Shape:
    cells: int = 200_000
    small: int = 100            # bytes of a small value
    large: int = 10 * 1024      # bytes of a large one
    large_share: float = 0.15   # of all cells (at most 39/128, every body)
    shards: int = 16            # shards this replica holds

    @property
    def users(self) -> int:
        return -(-self.cells // CELLS_PER_USER)

    def row_col(self, i: int) -> tuple[str, str, bool]:
        """Cell ``i``'s row, column and whether its value is large."""
        user, k = divmod(i, CELLS_PER_USER)
        if k < WIDE_COLUMNS:
            return f"{{u{user}}}/index", f"m{k:03d}", False
        message, body = divmod(k - WIDE_COLUMNS, 2)
        row = f"{{u{user}}}/msg{message:02d}"
        share = min(1.0, self.large_share * CELLS_PER_USER / NARROW_ROWS)
        return row, "hb"[body], bool(body) and zlib.crc32(row.encode()) < share * 2**32

    def key(self, i: int) -> tuple[bytes, bool]:
        row, col, large = self.row_col(i)
        return diskkeys.cell_key(shard_of(row, self.shards), row, col), large

    def logical_bytes(self) -> int:
        """Bytes of keys and values the data set holds, before any engine's overhead."""
        return sum(len(key) + diskkeys.CELL_HEADER.size + (self.large if large else self.small)
                   for key, large in map(self.key, range(self.cells)))

    def row_key(self, user: int) -> tuple[int, str]:
        row = f"{{u{user}}}/index"
        return shard_of(row, self.shards), row

    def pick(self, rng: random.Random, large: bool) -> bytes:
        """A random cell's key, of the size asked for."""
        for _ in range(10_000):
            key, is_large = self.key(rng.randrange(self.cells))
            if is_large == large:
                return key
        raise ValueError("the data set has no cells of that size")

    def value(self, large: bool, version: int) -> bytes:
        size = self.large if large else self.small
        start = (version * 7919) % (len(PAYLOAD) - size)
        return diskkeys.pack_cell(version, PAYLOAD[start:start + size], False)


# -- writing ------------------------------------------------------------------------

Command = tuple[str, bytes, bool]  # "put" or "cput", key, large


class Applier:
    """Applies batches as the replica will: one transaction each, with every command's
    answer in the exactly-once table and the applied index."""

    def __init__(self, engine: Engine, shape: Shape, applied: int = 0) -> None:
        self.engine, self.shape, self.applied = engine, shape, applied

    def apply(self, batch: list[Command]) -> None:
        with self.engine.write() as txn:
            for op, key, large in batch:
                self.applied += 1
                if op == "cput":  # read, compare the version (the client's, here), then write
                    old = txn.get("cells", key)
                    if old is None or diskkeys.unpack_cell(old).version >= self.applied:
                        raise RuntimeError("a cput's condition failed")
                self._answer(txn, {"version": self.applied})
                txn.put("cells", key, self.shape.value(large, self.applied))
            txn.put("meta", APPLIED, struct.pack(">Q", self.applied))

    def _answer(self, txn: WriteTxn, result: dict[str, Any]) -> None:
        txn.put("results", diskkeys.result_key(CLIENT, self.applied), msgpack.packb(result))
        if self.applied > WINDOW:
            txn.delete("results", diskkeys.result_key(CLIENT, self.applied - WINDOW))


def load(engine: Engine, shape: Shape, per_txn: int = 4096) -> float:
    """Write the data set, ``per_txn`` cells a transaction (keys sorted within each); seconds."""
    start = time.perf_counter()
    for first in range(0, shape.cells, per_txn):
        cells = sorted(shape.key(i) for i in range(first, min(first + per_txn, shape.cells)))
        with engine.write() as txn:
            for key, large in cells:
                txn.put("cells", key, shape.value(large, 1))
    with engine.write() as txn:
        txn.put("meta", APPLIED, struct.pack(">Q", 0))
    return time.perf_counter() - start


def commands(shape: Shape, rng: random.Random, op: str, large: bool, count: int) -> list[Command]:
    return [(op, shape.pick(rng, large), large) for _ in range(count)]


def apply_rate(applier: Applier, op: str, large: bool, batch: int, seconds: float,
               limit: int, seed: int) -> dict[str, float]:
    """Commands per second applied in batches of ``batch``, and each batch's latency."""
    rng = random.Random(seed)
    batches = [commands(applier.shape, rng, op, large, batch) for _ in range(max(1, limit // batch))]
    took: list[float] = []
    start = time.perf_counter()
    for commands_ in batches:
        began = time.perf_counter()
        applier.apply(commands_)
        took.append(time.perf_counter() - began)
        if began + took[-1] - start > seconds:
            break
    elapsed = time.perf_counter() - start
    return {"per_s": len(took) * batch / elapsed, "p99_ms": percentile(took, 0.99) * 1e3,
            "max_ms": max(took) * 1e3}


class PacedWriter(threading.Thread):
    """Applies batches of 16 small puts at ``rate`` commands a second, as a busy group
    would, until stopped or ``limit`` seconds have passed; notes how late each batch
    finished against its schedule: the longest is the writer's (the tick thread's) stall."""

    def __init__(self, applier: Applier, rate: float, limit: float = 300.0, batch: int = 16) -> None:
        super().__init__(name="paced-writer", daemon=True)
        self.applier, self.interval, self.limit, self.batch = applier, batch / rate, limit, batch
        self.stop = threading.Event()
        self.stalls: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        start = due = time.perf_counter()
        try:
            while not self.stop.is_set() and due - start < self.limit:
                batch = commands(self.applier.shape, rng, "put", False, self.batch)
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                self.applier.apply(batch)
                self.stalls.append(max(0.0, time.perf_counter() - due))
                due += self.interval
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError("the writer failed") from self.error
        return {"writer_max_ms": max(self.stalls, default=0.0) * 1e3,
                "writer_p99_ms": percentile(self.stalls, 0.99) * 1e3,
                "writer_batches": float(len(self.stalls))}


# -- reading ------------------------------------------------------------------------


def read_rate(engine: Engine, shape: Shape, kind: str, seconds: float, scan_rows: int,
              seed: int) -> dict[str, float]:
    """Reads of one kind from this thread, back to back for ``seconds``."""
    rng = random.Random(seed)
    reader = engine.reader()
    took: list[float] = []
    read: Callable[[], int] = {
        "get": lambda: read_cell(reader, shape, rng),
        "get_row": lambda: read_row(reader, shape, rng),
        "scan": lambda: read_page(reader, shape, rng, scan_rows),
    }[kind]
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            if read() == 0:
                raise RuntimeError(f"{kind} found nothing")
            took.append(time.perf_counter() - began)
    finally:
        reader.close()
    return {"per_s": len(took) / sum(took), "p50_ms": percentile(took, 0.5) * 1e3,
            "p99_ms": percentile(took, 0.99) * 1e3}


def read_cell(reader: Reader, shape: Shape, rng: random.Random) -> int:
    value = reader.get(shape.key(rng.randrange(shape.cells))[0])
    return 0 if value is None else len(diskkeys.unpack_cell(value).value)


def read_row(reader: Reader, shape: Shape, rng: random.Random) -> int:
    start, end = diskkeys.columns_range(*shape.row_key(rng.randrange(shape.users)))
    return len([diskkeys.unpack_cell(v) for _, v in reader.cells(start, end)])


def read_page(reader: Reader, shape: Shape, rng: random.Random, rows: int) -> int:
    """A page of ``rows`` rows of a random shard, from its first row (``scan``'s cursor "")."""
    start, end = diskkeys.rows_range(rng.randrange(shape.shards))
    page: dict[str, list[Any]] = {}
    cells = reader.cells(start, end)
    try:
        for key, value in cells:
            _, row, col = diskkeys.decode_cell_key(key)
            if row not in page and len(page) == rows:
                break
            page.setdefault(row, []).append((col, diskkeys.unpack_cell(value)))
    finally:
        cells.close()
    return len(page)


# -- snapshots ----------------------------------------------------------------------


def snapshot_under_load(engine: Engine, method: Callable[[Path], int], dest: Path,
                        applier: Applier, rate: float) -> dict[str, float]:
    """Copy the store on a background thread while a paced writer applies: the copy's
    time per GB, and the writer's stalls meanwhile."""
    before = disk_bytes(engine.path)
    writer = PacedWriter(applier, rate)
    writer.start()
    time.sleep(0.2)  # the writer's rhythm before the copy begins
    result: dict[str, float] = {}

    def copy() -> None:
        began = time.perf_counter()
        result["bytes"] = method(dest)
        result["seconds"] = time.perf_counter() - began
    copier = threading.Thread(target=copy, name="snapshot")
    copier.start()
    copier.join(600)
    time.sleep(0.1)
    stalls = writer.finish()
    if "seconds" not in result:
        raise RuntimeError("the snapshot failed or took over 10 minutes")
    return {"s_per_gb": result["seconds"] / (result["bytes"] / 1e9), "mb": result["bytes"] / 1e6,
            "grew_mb": (disk_bytes(engine.path) - before) / 1e6, **stalls}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def median(values: list[float]) -> float:
    return statistics.median(values)

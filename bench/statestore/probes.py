"""Measurements that need a fresh process: memory, open time, and kill -9.

Each runs in a child started with ``spawn``, so the child's memory holds only
the store and the interpreter, and an open really is a restart's open.
"""

from __future__ import annotations

import multiprocessing
import random
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from raftkv import diskkeys

from .engines import open_engine
from .workload import WITNESS_SHARD, Applier, Shape, commands

WITNESSES = 8
CONTEXT = multiprocessing.get_context("spawn")


def status_mib(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status (``RssAnon``: heap and other anonymous pages; ``RssFile``:
    mapped file pages, which are the kernel's cache) in MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in fields:
                values[name] = int(rest.split()[0]) / 1024
    return values


def in_child(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a fresh spawned process: its result."""
    with ProcessPoolExecutor(1, mp_context=CONTEXT) as pool:
        return pool.submit(function, *args).result(timeout=600)


def open_time(engine: str, path: Path, shape: Shape, cache: int) -> dict[str, float]:
    """Milliseconds from nothing open to the answer of one random get: a restart."""
    key = shape.key(random.Random(3).randrange(shape.cells))[0]
    began = time.perf_counter()
    store = open_engine(engine, path, cache)
    reader = store.reader()
    if reader.get(key) is None:
        raise RuntimeError("the reopened store lost a cell")
    took = time.perf_counter() - began
    reader.close()
    store.close()
    return {"open_ms": took * 1e3}


def memory(engine: str, path: Path, shape: Shape, cache: int) -> dict[str, float]:
    """RssAnon (MiB) above the bare interpreter's after opening the store, after reading
    every cell, after random reads, and after writes; RssFile at the end."""
    base = status_mib("RssAnon")["RssAnon"]
    store = open_engine(engine, path, cache)
    seen = {"open": status_mib("RssAnon")["RssAnon"] - base}
    reader = store.reader()
    for _ in reader.cells(b"", diskkeys.prefix_end(b"")):
        pass
    seen["full read"] = status_mib("RssAnon")["RssAnon"] - base
    rng = random.Random(5)
    for _ in range(20_000):
        reader.get(shape.key(rng.randrange(shape.cells))[0])
    for _ in range(500):
        start, end = diskkeys.columns_range(*shape.row_key(rng.randrange(shape.users)))
        list(reader.cells(start, end))
    seen["random reads"] = status_mib("RssAnon")["RssAnon"] - base
    applier = Applier(store, shape, applied=10**9)
    for large in (False, True):
        for _ in range(200):
            applier.apply(commands(shape, rng, "put", large, 16))
    seen["writes"] = status_mib("RssAnon")["RssAnon"] - base
    after = status_mib("RssAnon", "RssFile")
    reader.close()
    store.close()
    return {"anon_max_mib": max(seen.values()), "anon_base_mib": base,
            "file_mib": after["RssFile"], **{f"anon {k} mib": v for k, v in seen.items()}}


def _witness(j: int) -> bytes:
    return diskkeys.cell_key(WITNESS_SHARD, "witness", str(j))


def crash_writer(engine: str, path: Path, shape: Shape, cache: int, started: Any) -> None:
    """Apply transactions back to back until killed: each sets every witness cell, small and
    large alternately, to its own number and records that number in ``meta``."""
    store = open_engine(engine, path, cache)
    number = 0
    while True:
        number += 1
        with store.write() as txn:
            for j in range(WITNESSES):
                txn.put("cells", _witness(j), shape.value(j % 2 == 1, number))
            txn.put("meta", b"witness", struct.pack(">Q", number))
        if number == 50:
            started.set()


def crash_check(engine: str, path: Path, cache: int) -> dict[str, float]:
    """After the writer was killed: open, and see whether the store holds exactly the last
    committed transaction (every witness at the number ``meta`` records)."""
    began = time.perf_counter()
    store = open_engine(engine, path, cache)
    with store.write() as txn:
        recorded = txn.get("meta", b"witness")
        number = struct.unpack(">Q", recorded)[0] if recorded else 0
        versions = [txn.get("cells", _witness(j)) for j in range(WITNESSES)]
    took = time.perf_counter() - began
    store.close()
    consistent = all(v is not None and diskkeys.unpack_cell(v).version == number for v in versions)
    return {"reopen_ms": took * 1e3, "consistent": float(consistent), "transactions": float(number)}


def kill_during_writes(engine: str, path: Path, cache: int, shape: Shape, seed: int) -> dict[str, float]:
    """kill -9 a process in the middle of its writes, at a random moment, then check."""
    started = CONTEXT.Event()
    writer = CONTEXT.Process(target=crash_writer, args=(engine, path, shape, cache, started))
    writer.start()
    try:
        if not started.wait(60):
            raise RuntimeError("the crash writer did not start")
        time.sleep(random.Random(seed).uniform(0.1, 0.5))
    finally:
        writer.kill()
        writer.join(30)
    return in_child(crash_check, engine, path, cache)

"""Large values for tests and benchmarks, made and checked without holding them in memory.

:class:`RandomStream` yields a value of any size, the same for the same seed,
built from a small random pool so that it costs little CPU, with every
CHUNK_SIZE-aligned megabyte distinct (content addressing must not deduplicate
it).  :class:`Checker` is a file-like sink that compares what is written to it
with the stream.  ``python -m tests.blobwork`` moves one value through a real
cluster in a process of its own and reports its timings and peak memory as JSON.
"""

from __future__ import annotations

import io
import json
import random
import sys
import time

import click

BLOCK = 1024 * 1024  # = raftkv.blobs.CHUNK_SIZE: blocks line up with chunks
_POOL_SIZE = 4 * BLOCK


_pool: list[bytes] = []


def _random_pool() -> bytes:
    if not _pool:
        _pool.append(random.Random(20240611).randbytes(_POOL_SIZE))
    return _pool[0]


class RandomStream(io.RawIOBase):
    """``size`` deterministic random bytes (a file-like object, read once)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._seed = seed
        self._pool = _random_pool()
        self._pos = 0
        self._block_no = -1
        self._block = b""

    def readable(self) -> bool:
        return True

    def _block_at(self, number: int) -> bytes:
        if number != self._block_no:
            start = ((self._seed * 1_000_003 + number) * 7919 * 64) % (_POOL_SIZE - BLOCK)
            tag = b"%d:%d|" % (self._seed, number)
            self._block = tag + self._pool[start + len(tag):start + BLOCK]
            self._block_no = number
        return self._block

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        size = min(size, self.size - self._pos)
        parts = []
        while size > 0:
            number, offset = divmod(self._pos, BLOCK)
            block = self._block_at(number)
            end = min(BLOCK, offset + size, self.size - number * BLOCK)
            parts.append(block[offset:end])
            size -= end - offset
            self._pos += end - offset
        return b"".join(parts)


class _Stalling(RandomStream):
    def __init__(self, size: int, seed: int, stall_after: int) -> None:
        super().__init__(size, seed)
        self._stall_after = stall_after

    def read(self, size: int | None = -1) -> bytes:
        if self._pos >= self._stall_after:
            time.sleep(60)
        return super().read(size)


class Checker(io.RawIOBase):
    """A sink that checks each byte written against :class:`RandomStream`."""

    def __init__(self, size: int, seed: int) -> None:
        self._expected = RandomStream(size, seed)
        self.size = size
        self.written = 0
        self.mismatch_at: int | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.mismatch_at is None and self._expected.read(len(data)) != data:
            self.mismatch_at = self.written
        self.written += len(data)
        return len(data)

    @property
    def ok(self) -> bool:
        return self.mismatch_at is None and self.written == self.size


def peak_rss(pid: int | str = "self") -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds the process has used."""
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@click.command()
@click.option("--config", "config_path", required=True, help="The cluster file.")
@click.option("--row", required=True)
@click.option("--col", default="data", show_default=True)
@click.option("--size", type=int, required=True, help="Value size in bytes.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Write (and read) this many values: seeds seed, seed+1, ... in columns "
                   "COL, COL-1, COL-2, ...")
@click.option("--op", type=click.Choice(["put", "get", "both"]), default="both")
@click.option("--lease", type=float, default=None, help="Upload lease in seconds.")
@click.option("--stall-after", type=int, default=None,
              help="Stop reading the value after this many bytes, for a minute (tests kill it).")
def main(config_path: str, row: str, col: str, size: int, seed: int, repeat: int, op: str,
         lease: float | None, stall_after: int | None) -> None:
    """Move values through the cluster; print timings and peak memory as JSON."""
    import shards
    from raftkv.cluster import load_cluster

    client = shards.Client(load_cluster(config_path), timeout=30.0)
    if lease is not None:
        for group in client._groups.values():
            group.upload_lease = lease
    # Warm up: connect to every replica before the clock and the memory baseline.
    client.put(row, "warm-up", b"x")
    client.status()
    report: dict[str, object] = {"rss_start": peak_rss(), "put_s": [], "get_s": [],
                                 "cpu_put_s": 0.0, "cpu_get_s": 0.0, "ok": True}
    for i in range(repeat):
        column = col if i == 0 else f"{col}-{i}"
        if op in ("put", "both"):
            cpu, start = time.process_time(), time.perf_counter()
            stream = RandomStream(size, seed + i) if stall_after is None else \
                _Stalling(size, seed + i, stall_after)
            report["version"] = client.put_stream(row, column, stream)
            report["put_s"].append(time.perf_counter() - start)  # type: ignore[attr-defined]
            report["cpu_put_s"] += time.process_time() - cpu  # type: ignore[operator]
        if op in ("get", "both"):
            sink = Checker(size, seed + i)
            cpu, start = time.process_time(), time.perf_counter()
            client.get_into(row, column, sink)
            report["get_s"].append(time.perf_counter() - start)  # type: ignore[attr-defined]
            report["cpu_get_s"] += time.process_time() - cpu  # type: ignore[operator]
            report["ok"] = report["ok"] and sink.ok
    report["rss_end"] = peak_rss()
    client.close()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()

"""Large values: raftkv blobs against etcd's 1 MiB puts and this disk, in one run.

    python -m bench.blobs [--sizes 1,10,100] [--volume 200] [--etcd-puts 100] [--json]

Measures, one after the other on the same machine and in the same temporary
directory:

* the disk's sequential write rate: 256 MB written in 1 MiB pieces, then one
  fsync (what ``dd conv=fsync`` reports);
* raftkv, 3 replicas on loopback: for each size, ``--volume`` MB of values of
  that size written one after the other by a client process of its own
  (``python -m tests.blobwork``, streaming from a generator and reading into a
  checking sink), then read back; MB/s of each phase and the CPU seconds each
  process spent on it;
* etcd, 3 members on loopback (Debian's ``etcd-server``): 1 MiB puts from 1 and
  from 8 client threads, and 1 MiB linearizable gets, through its JSON gateway;
* the peak RSS (VmHWM) of every process.

Every phase is bounded by its volume, and etcd's by ``--etcd-puts`` operations.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from tests.blobwork import cpu_seconds, peak_rss
from tests.cluster import KVCluster

from .common import stop_cleanly_on_sigterm
from .etcd import EtcdClient, EtcdCluster, etcd_binary

MB = 1_000_000
MiB = 1024 * 1024
DISK_TEST_BYTES = 256 * MiB
ETCD_VALUE = 1 * MiB
ROOT = Path(__file__).resolve().parents[1]


def disk_write_rate(directory: Path) -> float:
    """MB/s of a sequential 256 MB write in 1 MiB pieces followed by one fsync."""
    block = os.urandom(MiB)
    path = directory / "disk-test"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(DISK_TEST_BYTES // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return DISK_TEST_BYTES / MB / elapsed


def _node_cpu(cluster: KVCluster) -> dict[str, float]:
    return {name: cpu_seconds(proc.popen.pid) for name, proc in cluster.procs.items()
            if proc.popen is not None}


def raftkv_phase(cluster: KVCluster, size_mb: int, volume_mb: int, op: str) -> dict[str, Any]:
    """One client process moving ``volume_mb`` of ``size_mb`` values; MB/s and CPU."""
    size = size_mb * MB
    repeat = max(1, volume_mb // size_mb)
    before = _node_cpu(cluster)
    out = subprocess.run(
        [sys.executable, "-m", "tests.blobwork", "--config", str(cluster.path),
         "--row", f"{{bench}}/{size_mb}", "--size", str(size), "--seed", str(size_mb),
         "--repeat", str(repeat), "--op", op],
        cwd=ROOT, capture_output=True, timeout=600, check=True).stdout
    report = json.loads(out)
    nodes = {name: cpu - before[name] for name, cpu in _node_cpu(cluster).items()}
    seconds = report[f"{op}_s"]
    if op == "get" and not report["ok"]:
        raise click.ClickException(f"raftkv returned wrong bytes for {size_mb} MB values")
    return {"system": "raftkv", "op": op, "size_mb": size_mb, "count": repeat,
            "mb_per_s": repeat * size / MB / sum(seconds),
            "median_op_s": statistics.median(seconds),
            "client_cpu_s": report[f"cpu_{op}_s"], "node_cpu_s": nodes,
            "client_peak_rss": report["rss_end"]}


def etcd_phase(client: EtcdClient, op: str, threads: int, count: int) -> dict[str, Any]:
    """``count`` 1 MiB puts or gets spread over ``threads`` threads; MB/s."""
    value = os.urandom(ETCD_VALUE)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(t, count, threads):
                key = f"bench/{i % 32}"
                if op == "put":
                    client.put(key, value)
                elif client.get(key) is None:
                    raise RuntimeError(f"etcd lost {key}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    elapsed = time.perf_counter() - start
    if errors:
        raise click.ClickException(f"etcd {op}: {errors[0]!r}")
    return {"system": "etcd", "op": op, "size_mb": ETCD_VALUE / MB, "count": count,
            "threads": threads, "mb_per_s": count * ETCD_VALUE / MB / elapsed}


def _rss(procs: dict[str, int]) -> dict[str, int]:
    return {name: peak_rss(pid) for name, pid in procs.items()}



def report_table(disk: float, rows: list[dict[str, Any]], rss: dict[str, int]) -> str:
    etcd_puts = [r["mb_per_s"] for r in rows if r["system"] == "etcd" and r["op"] == "put"]
    best_etcd = max(etcd_puts) if etcd_puts else None
    lines = ["| workload | MB/s | × etcd best 1 MiB put | × disk seq. write "
             "| client CPU s | replica CPU s (3 summed) | wall s |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if r["system"] == "raftkv":
            name = f"raftkv {r['op']} {r['size_mb']} MB values (×{r['count']}, sequential)"
            wall = r["count"] * r["size_mb"] * MB / MB / r["mb_per_s"]
            cpu = [f"{r['client_cpu_s']:.2f}", f"{sum(r['node_cpu_s'].values()):.2f}",
                   f"{wall:.2f}"]
        else:
            threads = f"{r['threads']} client thread" + ("s" if r["threads"] > 1 else "")
            name = f"etcd {r['op']} 1 MiB (×{r['count']}, {threads})"
            cpu = ["–", "–", "–"]
        vs_etcd = f"{r['mb_per_s'] / best_etcd:.2f}" if best_etcd else "–"
        lines.append(f"| {name} | {r['mb_per_s']:.0f} | {vs_etcd} | {r['mb_per_s'] / disk:.2f} | "
                     + " | ".join(cpu) + " |")
    lines.append(f"| disk: 256 MB sequential write + fsync | {disk:.0f} | "
                 f"{disk / best_etcd:.2f} | 1.00 | – | – | – |" if best_etcd else
                 f"| disk: 256 MB sequential write + fsync | {disk:.0f} | – | 1.00 | – | – | – |")
    lines += ["", "| process | peak RSS (VmHWM) MiB |", "|---|--:|"]
    lines += [f"| {name} | {value / MiB:.0f} |" for name, value in rss.items()]
    return "\n".join(lines)


@click.command()
@click.option("--sizes", default="1,10,100", show_default=True,
              help="Value sizes in MB, comma-separated.")
@click.option("--volume", default=200, show_default=True, type=click.IntRange(min=1),
              help="MB written (and read) per size: e.g. 200 x 1 MB, 20 x 10 MB, 2 x 100 MB.")
@click.option("--etcd-puts", default=100, show_default=True, type=click.IntRange(min=1),
              help="1 MiB operations per etcd workload.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
def main(sizes: str, volume: int, etcd_puts: int, as_json: bool) -> None:
    """Measure raftkv's large values against etcd and the disk, in one run."""
    stop_cleanly_on_sigterm()
    size_list = [int(s) for s in sizes.split(",") if s]
    binary = etcd_binary()
    rows: list[dict[str, Any]] = []
    rss: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-blobs-", dir=os.environ.get("BENCH_DIR")) \
            as tmp, ExitStack() as stack:
        root = Path(tmp)
        disk = disk_write_rate(root)
        click.echo(f"disk: {disk:.0f} MB/s", err=True)
        cluster = KVCluster(root / "raftkv")
        stack.callback(cluster.stop)
        cluster.start()
        cluster.leader()
        for size in size_list:
            for op in ("put", "get"):
                row = raftkv_phase(cluster, size, volume, op)
                rows.append(row)
                rss[f"raftkv client ({size} MB values, {op})"] = row["client_peak_rss"]
                click.echo(f"raftkv {op} {size} MB: {row['mb_per_s']:.0f} MB/s", err=True)
        rss.update(_rss({f"raftkv replica {n}": p.popen.pid for n, p in cluster.procs.items()
                         if p.popen is not None}))
        cluster.stop()
        if binary is not None:
            etcd = EtcdCluster(root / "etcd", binary)
            stack.callback(etcd.stop)
            etcd.start()
            client = EtcdClient(etcd.leader_port(), timeout=30.0)
            for op, threads in (("put", 1), ("put", 8), ("get", 1)):
                row = etcd_phase(client, op, threads, etcd_puts)
                rows.append(row)
                click.echo(f"etcd {op} x{threads}: {row['mb_per_s']:.0f} MB/s", err=True)
            rss.update(_rss({f"etcd member {p.name}": p.popen.pid for p in etcd.procs
                             if p.popen is not None}))
        else:
            click.echo("etcd not found on PATH: measuring raftkv alone", err=True)
    if as_json:
        click.echo(json.dumps({"disk_mb_per_s": disk, "rows": rows, "peak_rss": rss}, indent=2))
        return
    click.echo(report_table(disk, rows, rss))
    click.echo(f"\n{volume} MB per raftkv size and phase, one value at a time, by a client "
               f"process streaming from a generator; etcd: {etcd_puts} x 1 MiB per workload. "
               "MB = 10^6 bytes.  CPU columns: seconds of CPU each side spent on the phase "
               f"(2 cores: {os.cpu_count()} CPUs seen).")


if __name__ == "__main__":
    main()

"""Store throughput and latency on this machine: a 3-replica group on loopback.

    python -m bench.kv [--ops 2000] [--clients 1,16,64]

Reports median (p50) and p99 latency and operations per second for 100-byte
puts and linearizable gets.  (The side-by-side run against etcd is still to come:
see the README's benchmark section.)
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

from tests.cluster import KVCluster


def _run(client, op: str, clients: int, ops: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, ops // clients)
    value = b"x" * 100

    def worker(t: int) -> None:
        mine = []
        for i in range(per_thread):
            key = f"bench-{t}-{i % 512}"
            start = time.perf_counter()
            if op == "put":
                client.put(key, "v", value)
            else:
                client.get(key, "v")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


@click.command()
@click.option("--ops", default=2000, show_default=True, help="Operations per measurement.")
@click.option("--clients", default="1,16,64", show_default=True, help="Concurrent client threads.")
def main(ops: int, clients: str) -> None:
    """Measure raftkv puts and gets."""
    with tempfile.TemporaryDirectory() as root:
        cluster = KVCluster(Path(root))
        cluster.start()
        try:
            cluster.leader()
            with cluster.client() as client:
                click.echo(f"{'operation':10} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
                for op in ("put", "get"):
                    for n in (int(c) for c in clients.split(",")):
                        rate, p50, p99 = _run(client, op, n, ops)
                        click.echo(f"{op:10} {n:>7} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()

"""Sharding: throughput with 1, 2 and 3 storage groups, and the time to move a 100 MB shard.

    python -m bench.shards [--part throughput|migration|all] [--groups 1,2,3] [--clients 64]
                           [--ops 10000] [--repeat 1] [--time-limit 30] [--migrate-mb 100] [--json]

Part 1, throughput: for each group count, a cluster of that many storage groups
(3 replicas each, on loopback, the static shard map, no config group) runs the
same workloads: ``--clients`` threads sharing one :class:`shards.Client` put
100-byte values, then read them back with linearizable gets, over rows spread
evenly over every shard (so over every group).  The table gives ops/s, p50/p99
latency, the ratio against 1 group, and ops per CPU-second: operations divided
by the CPU time (utime + stime from ``/proc/<pid>/stat``) that all replica
processes used during the workload.  On a machine with fewer cores than
replicas -- the 2-core development machine runs 9 replicas for 3 groups, plus
the clients -- more groups share the same cores, so ops/s cannot grow with the
group count; the figure that says what sharding buys is ops per CPU-second, and
the cores the replicas kept busy.  Clusters run one at a time (idle replicas
would take CPU from the measured ones), started afresh for each of ``--repeat``
runs, in alternating order; the table shows medians.

Part 2, migration: 2 storage groups and a config group.  ``--migrate-mb`` MB
go into one shard (``--value-mb`` values under one hash tag), then
``Migrator.reconfigure`` moves that shard to the other group, timed; MB/s and
the replicas' CPU seconds.  Afterwards every value is read back from the
destination group and compared with the SHA-256 of what was written, the source
group must refuse the shard, and one value is read through the routing client.
Wrong or missing data, or a move that fails, is reported and the exit status
is non-zero.

Every workload stops after ``--ops`` operations or ``--time-limit`` seconds,
whichever comes first; writing the shard and moving it stop after
``--migration-timeout`` seconds each.  /proc reports CPU time in ticks
(USER_HZ, 1/100 s) per process, so a workload should last seconds for its CPU
figures to mean much: hence the larger default ``--ops`` than bench.kv's.
MB = 10^6 bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

import raftkv
import shards
from raftkv.errors import RaftKVError, WrongShard
from raftkv.keys import shard_of
from shards.config import move
from shards.migrate import Migrator
from tests.blobwork import BLOCK, RandomStream, cpu_seconds
from tests.cluster import KVCluster, running

from .common import closed_loop, medians, stop_cleanly_on_sigterm

MB = 1_000_000
ROWS_PER_SHARD = 4
READ_COL, WRITE_COL = "r", "w"   # gets read what the preload wrote; puts never touch it
READ_VALUE = b"r" * 100
IDLE_SECONDS = 1.0               # how long the replicas' idle CPU is sampled
MIGRATION_TAG = "{bench}"        # every row of the moving shard carries this hash tag
MIGRATION_COL = "data"


@dataclass(frozen=True)
class Workload:
    name: str          # the table's row label
    op: str            # "put" or "get"
    size: int = 100    # value bytes (puts)


WORKLOADS = (Workload("put 100 B", "put"), Workload("linearizable get", "get"))


@dataclass(frozen=True)
class Result:
    ops: int              # operations that succeeded
    errors: int           # operations that raised
    wrong: int            # gets that found nothing, or other bytes than the preload wrote
    seconds: float        # wall time of the workload
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    replica_cpu_s: float  # CPU seconds all replica processes used during the workload
    ops_per_cpu_s: float  # ops / replica_cpu_s
    client_cpu_s: float   # CPU seconds of this process (every client thread)


def spread_rows(shard_count: int, per_shard: int = ROWS_PER_SHARD) -> list[str]:
    """``per_shard`` rows in every shard, ordered so that neighbours lie in different shards."""
    buckets: list[list[str]] = [[] for _ in range(shard_count)]
    for i in range(shard_count * per_shard * 100):  # crc32 spreads names evenly: ends far sooner
        row = f"bench/{i}"
        bucket = buckets[shard_of(row, shard_count)]
        if len(bucket) < per_shard:
            bucket.append(row)
        if min(map(len, buckets)) == per_shard:
            return [b[k] for k in range(per_shard) for b in buckets]
    raise RuntimeError(f"could not find {per_shard} rows for each of {shard_count} shards")


def replica_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) the replica processes have used so far."""
    return sum(cpu_seconds(pid) for pid in pids)


def replica_pids(cluster: KVCluster) -> list[int]:
    return [proc.popen.pid for proc in cluster.procs.values() if proc.popen is not None]


def measure(client: shards.Client, rows: list[str], work: Workload, clients: int, ops: int,
            time_limit: float, pids: Sequence[int]) -> Result:
    """Run ``work`` with ``clients`` threads until ``ops`` operations or ``time_limit``."""
    value = b"x" * work.size

    def op(t: int, i: int) -> bool:
        row = rows[(t + i * clients) % len(rows)]  # at any moment the threads hit many shards
        if work.op == "put":
            client.put(row, WRITE_COL, value)
            return True
        cell = client.get(row, READ_COL)
        return cell is not None and cell.value == READ_VALUE

    before: dict[str, float] = {}
    run = closed_loop(op, clients, ops, time_limit, straggler=client.timeout + 5,
                      on_start=lambda: before.update(cpu=replica_cpu(pids),
                                                     client=time.process_time()))
    cpu = replica_cpu(pids) - before["cpu"]
    client_cpu = time.process_time() - before["client"]
    n = len(run.latencies)
    return Result(n, run.errors, run.wrong, run.elapsed, run.ops_per_s,
                  run.percentile_ms(0.5), run.percentile_ms(0.99), cpu,
                  n / cpu if n and cpu > 0 else (0.0 if not n else math.nan), client_cpu)


def preload(client: shards.Client, rows: list[str], time_limit: float) -> None:
    """Write the values that the gets read."""
    deadline = time.monotonic() + time_limit
    for row in rows:
        if time.monotonic() > deadline:
            raise click.ClickException(f"preloading {len(rows)} rows took over {time_limit:g} s")
        client.put(row, READ_COL, READ_VALUE)


def idle_cores(pids: Sequence[int]) -> float:
    """Cores the replicas keep busy with no requests (heartbeats, timers)."""
    before, start = replica_cpu(pids), time.perf_counter()
    time.sleep(IDLE_SECONDS)
    return (replica_cpu(pids) - before) / (time.perf_counter() - start)


def throughput(root: Path, group_counts: list[int], clients: int, ops: int, repeat: int,
               time_limit: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every workload on a fresh cluster of each size, ``repeat`` times: (runs, idle samples)."""
    runs, idle = [], []
    for run in range(repeat):
        # Alternate the order, so drift on a shared machine hits every size alike.
        for groups in group_counts if run % 2 == 0 else group_counts[::-1]:
            cluster = KVCluster(root / f"run{run}-groups{groups}", groups=groups)
            with running(cluster), cluster.client() as client:
                pids = replica_pids(cluster)
                rows = spread_rows(cluster.cluster.shards)
                preload(client, rows, time_limit)
                idle.append({"run": run, "groups": groups, "idle_replica_cores": idle_cores(pids)})
                for work in WORKLOADS:
                    result = measure(client, rows, work, clients, ops, time_limit, pids)
                    runs.append({"run": run, "groups": groups, "workload": work.name,
                                 "op": work.op, "clients": clients, "replicas": len(pids),
                                 **asdict(result)})
                    click.echo(f"run {run + 1}/{repeat} {groups} group(s) {work.name}: "
                               f"{result.ops_per_s:,.0f} ops/s, "
                               f"{result.ops_per_cpu_s:,.0f} ops per replica CPU-s", err=True)
    return runs, idle



def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base and not math.isnan(value) else "–"


def throughput_table(summary: dict[int, dict[str, Result]]) -> str:
    lines = ["| groups | workload | ops/s | × 1 group | p50 ms | p99 ms | replica CPU s "
             "| replica cores busy | ops per replica CPU-s | × 1 group | client cores busy |",
             "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    base = summary.get(1, {})
    for work in WORKLOADS:
        one = base.get(work.name)
        for groups in sorted(summary):
            r = summary[groups].get(work.name)
            if r is None:
                continue
            seconds = r.seconds or math.nan
            lines.append(
                f"| {groups} | {work.name} | {r.ops_per_s:,.0f} | "
                f"{_ratio(r.ops_per_s, one.ops_per_s if one else None)} | {r.p50_ms:.2f} | "
                f"{r.p99_ms:.2f} | {r.replica_cpu_s:.2f} | {r.replica_cpu_s / seconds:.2f} | "
                f"{r.ops_per_cpu_s:,.0f} | "
                f"{_ratio(r.ops_per_cpu_s, one.ops_per_cpu_s if one else None)} | "
                f"{r.client_cpu_s / seconds:.2f} |")
    return "\n".join(lines)


def _digest_of_stream(size: int, seed: int) -> str:
    stream, digest = RandomStream(size, seed), hashlib.sha256()
    while piece := stream.read(BLOCK):
        digest.update(piece)
    return digest.hexdigest()


def _stored_digest(reader: raftkv.Client | shards.Client, row: str) -> str | None:
    found = reader.get_stream(row, MIGRATION_COL)
    if found is None:
        return None
    digest = hashlib.sha256()
    for chunk in found[1]:
        digest.update(chunk)
    return digest.hexdigest()


def _progress(done: int, total: int) -> None:
    click.echo(f"migration: {done}/{total} shards moved", err=True)


def _timed_reconfigure(migrator: Migrator, shard: int, dest: int,
                       timeout: float) -> tuple[float, Any, BaseException | None]:
    """Run the move in a thread, so that a move that hangs cannot hang the benchmark."""
    box: dict[str, Any] = {}

    def run() -> None:
        start = time.perf_counter()
        try:
            box["config"] = migrator.reconfigure(lambda c: move(c, shard, dest))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        box["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=run, name="reconfigure", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return math.nan, None, TimeoutError(f"the move did not finish in {timeout:g} s")
    return box["seconds"], box.get("config"), box.get("error")


def _migrate(cluster: KVCluster, client: shards.Client, total_mb: int, value_mb: int,
             timeout: float, out: dict[str, Any]) -> None:
    """Fill one shard, move it, check it; fills ``out`` and its list of failures."""
    failures: list[str] = out["failures"]
    migrator = Migrator(client, progress=_progress)
    config = migrator.current()
    shard = client.shard_of(f"{MIGRATION_TAG}/0")
    source = config.owners[shard]
    dest = next(g for g in sorted(config.groups) if g != source)
    size, count = value_mb * MB, math.ceil(total_mb / value_mb)
    rows = [f"{MIGRATION_TAG}/{i}" for i in range(count)]
    out.update(shard=shard, source=source, dest=dest, values=count, value_bytes=size,
               mb=count * size / MB, config_before=config.num)
    if any(client.shard_of(row) != shard for row in rows):
        raise RuntimeError(f"rows tagged {MIGRATION_TAG} are not all in shard {shard}")
    deadline, start = time.monotonic() + timeout, time.perf_counter()
    for i, row in enumerate(rows):
        if time.monotonic() > deadline:
            raise TimeoutError(f"writing {count} values took over {timeout:g} s")
        client.put_stream(row, MIGRATION_COL, RandomStream(size, seed=i + 1))
    out["write_mb_per_s"] = count * size / MB / (time.perf_counter() - start)
    click.echo(f"migration: {out['mb']:.0f} MB in shard {shard} of group {source}, "
               f"moving it to group {dest}", err=True)

    pids = replica_pids(cluster)
    cpu = replica_cpu(pids)
    seconds, moved, error = _timed_reconfigure(migrator, shard, dest, timeout)
    out["replica_cpu_s"] = replica_cpu(pids) - cpu
    if error is not None:
        out.update(seconds=math.nan, mb_per_s=math.nan, failed_after_s=seconds)
        failures.append(f"the move failed: {type(error).__name__}: {error}")
        return
    out.update(seconds=seconds, mb_per_s=out["mb"] / seconds)
    out["config_after"] = moved.num
    if moved.owners[shard] != dest:
        failures.append(f"configuration {moved.num} gives shard {shard} to group "
                        f"{moved.owners[shard]}, not {dest}")
    _verify(client, rows, size, source, dest, deadline=time.monotonic() + timeout, out=out)


def _verify(client: shards.Client, rows: list[str], size: int, source: int, dest: int, *,
            deadline: float, out: dict[str, Any]) -> None:
    """Every value intact at the destination, the source refusing, the routing client reading."""
    failures: list[str] = out["failures"]
    try:
        client.group_client(source).get(rows[0], MIGRATION_COL)
        failures.append(f"group {source} still serves the shard after the move")
    except WrongShard:
        pass
    except RaftKVError as exc:
        failures.append(f"group {source} answered {type(exc).__name__} ({exc}), not WrongShard")
    intact = 0
    for i, row in enumerate(rows):
        if time.monotonic() > deadline:
            failures.append(f"reading back took too long: {intact} of {len(rows)} values checked")
            break
        try:
            stored = _stored_digest(client.group_client(dest), row)
        except RaftKVError as exc:
            failures.append(f"{row} at group {dest}: {type(exc).__name__}: {exc}")
            continue
        if stored == _digest_of_stream(size, seed=i + 1):
            intact += 1
        else:
            failures.append(f"{row} at group {dest}: " + ("missing" if stored is None else
                                                         "other bytes than were written"))
    out["intact"] = intact
    if _stored_digest(client, rows[0]) != _digest_of_stream(size, seed=1):
        failures.append(f"{rows[0]} read through shards.Client: not what was written")


def migration(root: Path, total_mb: int, value_mb: int, timeout: float) -> dict[str, Any]:
    """Move a shard holding ``total_mb`` MB between two groups; what happened, as a dict."""
    out: dict[str, Any] = {"failures": []}
    cluster = KVCluster(root / "migration", groups=2, config_group=True)
    with running(cluster):
        cluster.leader(0)  # the config group (running() waits for the storage groups only)
        with cluster.client(timeout=30.0) as client:
            try:
                _migrate(cluster, client, total_mb, value_mb, timeout, out)
            except Exception as exc:  # noqa: BLE001 - reported, with the logs, and exit 1
                out["failures"].append(f"{type(exc).__name__}: {exc}")
            if out["failures"]:
                click.echo(cluster.logs(), err=True)
    return out


def _num(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def migration_table(m: dict[str, Any]) -> str:
    if "replica_cpu_s" not in m:
        return "migration: did not get as far as the move (see FAILED below)"
    state = "FAILED" if m["failures"] else f"{m['intact']}/{m['values']} values intact"
    return "\n".join([
        "| shard moved | data | seconds | MB/s | replica CPU s | written at MB/s | check |",
        "|---|--:|--:|--:|--:|--:|---|",
        f"| {m['shard']}: group {m['source']} → {m['dest']} | {m['mb']:.0f} MB "
        f"({m['values']} × {m['value_bytes'] / MB:g} MB) | {_num(m['seconds'], '.2f')} | "
        f"{_num(m['mb_per_s'], '.1f')} | {m['replica_cpu_s']:.2f} | "
        f"{m['write_mb_per_s']:.0f} | {state} |"])


def _group_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of numbers: {text!r}") from None
    if not counts or any(not 1 <= n <= 8 for n in counts):
        raise click.BadParameter("group counts are between 1 and 8")
    return list(dict.fromkeys(counts))



@click.command()
@click.option("--part", type=click.Choice(["throughput", "migration", "all"]), default="all",
              show_default=True, help="Which part to run.")
@click.option("--groups", "groups_text", default="1,2,3", show_default=True,
              help="Storage group counts to compare, comma-separated.")
@click.option("--clients", default=64, show_default=True, type=click.IntRange(min=1),
              help="Client threads sharing one shards.Client.")
@click.option("--ops", default=10000, show_default=True, type=click.IntRange(min=1),
              help="Operations per workload, group count and run.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs; the table shows medians.")
@click.option("--time-limit", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds per workload and run, whatever --ops says.")
@click.option("--migrate-mb", default=100, show_default=True, type=click.IntRange(min=1),
              help="MB written into the shard that moves.")
@click.option("--value-mb", default=4, show_default=True, type=click.IntRange(min=1),
              help="MB per value in that shard.")
@click.option("--migration-timeout", default=600.0, show_default=True,
              type=click.FloatRange(min=1), help="Seconds for filling the shard, and for moving it.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
def main(part: str, groups_text: str, clients: int, ops: int, repeat: int, time_limit: float,
         migrate_mb: int, value_mb: int, migration_timeout: float, as_json: bool) -> None:
    """Measure what sharding buys: throughput per group count, and moving a shard."""
    stop_cleanly_on_sigterm()
    group_counts = _group_counts(groups_text)
    runs: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    moved: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-shards-", dir=os.environ.get("BENCH_DIR")) \
            as tmp:
        if part in ("throughput", "all"):
            runs, idle = throughput(Path(tmp), group_counts, clients, ops, repeat, time_limit)
        if part in ("migration", "all"):
            moved = migration(Path(tmp), migrate_mb, value_mb, migration_timeout)
    summary = medians(runs, "groups", Result)
    failures = [f"{r['wrong']} gets with {r['groups']} group(s) (run {r['run'] + 1}) found "
                "nothing or other bytes than were written" for r in runs if r["wrong"]]
    failures += moved["failures"] if moved else []
    if as_json:
        click.echo(json.dumps({
            "cores": os.cpu_count(), "clients": clients, "ops": ops, "repeat": repeat,
            "time_limit": time_limit, "runs": runs, "idle": idle,
            "median": {str(g): {w: asdict(r) for w, r in m.items()} for g, m in summary.items()},
            "migration": moved, "ok": not failures}, indent=2, default=str))
    else:
        if runs:
            click.echo(throughput_table(summary))
            idle_text = ", ".join(
                f"{g} group(s) {statistics.median(i['idle_replica_cores'] for i in idle
                                                  if i['groups'] == g):.2f}"
                for g in sorted({i["groups"] for i in idle}))
            errors = sum(r["errors"] for r in runs)
            click.echo(f"\n{ops} ops per workload (or {time_limit:g} s), {clients} client threads "
                       f"sharing one shards.Client, median of {repeat} run(s); {errors} failed "
                       f"operations.  This machine has {os.cpu_count()} cores: more groups share "
                       "them, so compare ops per replica CPU-second.  Cores busy = CPU seconds / "
                       f"wall seconds.  Idle replicas keep busy (cores): {idle_text}.")
        if moved is not None:
            click.echo(("\n" if runs else "") + migration_table(moved))
    for failure in failures:
        click.echo(f"FAILED: {failure}", err=True)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

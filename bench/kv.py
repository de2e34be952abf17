"""raftkv against etcd on this machine: 3 replicas each, on loopback, same workload.

    python -m bench.kv [--ops 2000] [--repeat 1] [--time-limit 30] [--encryption auto] [--json]
                       [--profile [--profile-seconds 10] [--artifacts artifacts]]

Runs each workload against raftkv, then etcd (Debian's ``etcd-server``; the bench
runs raftkv alone if ``etcd`` is not on PATH), and prints a markdown table of
operations per second and p50/p99 latency, with the raftkv/etcd throughput
ratio.  Concurrent clients are threads of this process: for raftkv they share
one pipelined client, for etcd each holds its own HTTP connection to the
leader's JSON gateway.  Every workload stops after ``--ops`` operations or
``--time-limit`` seconds, whichever comes first; with ``--repeat N`` the table
shows medians of N runs.  ``--encryption always`` seals raftkv's frames on
loopback too (``[store] encryption``), as they are between hosts.

``--profile`` then runs the 64-client put workload once more against raftkv,
for as long as it takes py-spy to record the leader replica twice
(``--profile-seconds`` each, see :mod:`bench.profile`), and writes into
``--artifacts``: ``kv-put64-leader.svg`` (the flame graph), ``kv-put64-leader.txt``
(py-spy's raw stacks) and ``kv-put64-leader-summary.md`` (where the time goes, by
thread and by function).  That run's throughput, under the profiler, is printed
but kept out of the table.  Without py-spy, ``--profile`` says how to install it
and exits with status 1 before starting anything.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from tests.cluster import KVCluster

from .common import closed_loop, medians, stop_cleanly_on_sigterm
from .etcd import EtcdClient, EtcdCluster, etcd_binary
from .profile import INSTALL_HINT, ProfileError, Recorded, profile, py_spy_binary


@dataclass(frozen=True)
class Workload:
    name: str          # the table's row label
    op: str            # "put" or "get"
    clients: int       # concurrent client threads
    size: int = 100    # value bytes


WORKLOADS = (
    Workload("put 100 B, 1 client (sequential)", "put", 1),
    Workload("put 100 B, 16 clients", "put", 16),
    Workload("put 100 B, 64 clients", "put", 64),
    Workload("linearizable get, 16 clients", "get", 16),
    Workload("linearizable get, 64 clients", "get", 64),
    Workload("put 8 KiB, 16 clients", "put", 16, 8192),
)
READ_KEYS = 256    # gets read these, written before the first get workload
KEYS_PER_CLIENT = 512
NO_ETCD = "etcd not found on PATH (apt-get install etcd-server etcd-client)"
# --profile records the leader under each: the 64-client put (the flame graph)
# and the sequential put, whose latency is one write's whole path (issue 16, "Writes").
PROFILED = {"kv-put64-leader": WORKLOADS[2], "kv-put1-leader": WORKLOADS[0]}
PROFILE_START = 2.0        # seconds of load before py-spy attaches, and margin at the end
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass(frozen=True)
class Result:
    ops: int           # operations that succeeded
    errors: int        # operations that raised, or gets that found nothing
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # CPU seconds of this (client) process per second of the run


@dataclass(frozen=True)
class Target:
    """One system under test."""

    name: str
    put: Callable[[str, bytes], Any]
    get: Callable[[str], bytes | None]  # None when the key is missing
    leader_pid: Callable[[], int] | None = None  # the process of the leader replica, if ours


def measure(target: Target, work: Workload, ops: int, time_limit: float) -> Result:
    """Run ``work`` with ``work.clients`` threads until ``ops`` operations or ``time_limit``."""
    value = b"x" * work.size

    def op(t: int, i: int) -> bool:
        if work.op == "put":
            target.put(f"bench-{t}-{i % KEYS_PER_CLIENT}", value)
            return True
        return target.get(f"read-{(t * 31 + i) % READ_KEYS}") is not None

    cpu = [0.0]
    run = closed_loop(op, work.clients, ops, time_limit,
                      on_start=lambda: cpu.__setitem__(0, time.process_time()))
    client_cpu = (time.process_time() - cpu[0]) / run.elapsed
    if not run.latencies:
        return Result(0, run.errors + run.wrong, 0.0, math.nan, math.nan, client_cpu)
    return Result(len(run.latencies), run.errors + run.wrong, run.ops_per_s,
                  run.percentile_ms(0.5), run.percentile_ms(0.99), client_cpu)


def preload(target: Target) -> None:
    """Write the keys that the get workloads read."""
    for k in range(READ_KEYS):
        target.put(f"read-{k}", b"r" * 100)


def start_raftkv(stack: ExitStack, root: Path, encryption: str = "auto") -> Target:
    cluster = KVCluster(root, extra=f'\n[store]\nencryption = "{encryption}"\n')
    stack.callback(cluster.stop)
    cluster.start()
    cluster.leader()
    client = stack.enter_context(cluster.client())

    def leader_pid() -> int:
        popen = cluster.procs[cluster.leader()].popen
        assert popen is not None
        return popen.pid

    return Target("raftkv", lambda k, v: client.put(k, "v", v),
                  lambda k: (cell.value if (cell := client.get(k, "v")) else None), leader_pid)


def start_etcd(stack: ExitStack, root: Path, binary: str) -> Target:
    cluster = EtcdCluster(root, binary)
    stack.callback(cluster.stop)
    cluster.start()
    client = EtcdClient(cluster.leader_port())
    return Target("etcd", client.put, client.get)


def _cells(r: Result | None) -> list[str]:
    if r is None:
        return ["–", "–", "–"]
    return [f"{r.ops_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"]


def table(summary: dict[str, dict[str, Result]]) -> str:
    """The markdown table: one row per workload, raftkv and etcd side by side."""
    lines = ["| workload | raftkv ops/s | raftkv p50 ms | raftkv p99 ms "
             "| etcd ops/s | etcd p50 ms | etcd p99 ms | ratio (raftkv/etcd ops/s) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for work in WORKLOADS:
        ours, theirs = summary["raftkv"].get(work.name), summary.get("etcd", {}).get(work.name)
        ratio = (f"{ours.ops_per_s / theirs.ops_per_s:.2f}"
                 if ours and theirs and theirs.ops_per_s else "–")
        lines.append(f"| {work.name} | " + " | ".join(_cells(ours) + _cells(theirs) + [ratio]) + " |")
    return "\n".join(lines)



def run_all(targets: list[Target], ops: int, repeat: int, time_limit: float) -> list[dict[str, Any]]:
    """Every workload against every target, ``repeat`` times; one dict per measurement."""
    runs = []
    for run in range(repeat):
        for work in WORKLOADS:
            # Alternate who goes first, so drift on a shared machine hits both alike.
            for target in targets if run % 2 == 0 else targets[::-1]:
                result = measure(target, work, ops, time_limit)
                runs.append({"run": run, "system": target.name, "workload": work.name,
                             "op": work.op, "clients": work.clients, "size": work.size,
                             **asdict(result)})
                click.echo(f"run {run + 1}/{repeat} {target.name:6} {work.name}: "
                           f"{result.ops_per_s:,.0f} ops/s, client CPU {result.client_cpu:.0%}",
                           err=True)
    return runs



def profile_leader(target: Target, work: Workload, name: str, binary: str, seconds: float,
                   artifacts: Path) -> tuple[Recorded, Result]:
    """py-spy on ``target``'s leader while ``work`` runs; the workload runs from
    before the first recording starts until after the second ends, and no longer."""
    assert target.leader_pid is not None
    pid = target.leader_pid()
    limit = PROFILE_START + 2 * (seconds + PROFILE_START)
    measured: list[Result] = []
    load = threading.Thread(target=lambda: measured.append(
        measure(target, work, ops=10**9, time_limit=limit)), daemon=True)
    load.start()
    time.sleep(PROFILE_START)
    try:
        recorded = profile(binary, pid, artifacts, name, seconds,
                           f"raftkv leader under {work.name} (py-spy, {seconds:g} s)")
    except ProfileError as exc:  # e.g. not permitted to read another process's memory
        raise click.ClickException(str(exc)) from None
    finally:
        load.join(limit + 30)
    if not measured:
        raise click.ClickException("the profiled workload did not finish")
    return recorded, measured[0]


@click.command()
@click.option("--ops", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Operations per workload and run.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs; the table shows medians.")
@click.option("--time-limit", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds per workload and run, whatever --ops says.")
@click.option("--encryption", type=click.Choice(["auto", "always"]), default="auto",
              show_default=True,
              help="raftkv's [store] encryption: always seals frames on loopback too.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
@click.option("--profile", "with_profile", is_flag=True,
              help="Then record the raftkv leader with py-spy under "
                   + " and ".join(repr(w.name) for w in PROFILED.values()) + ".")
@click.option("--profile-seconds", default=10.0, show_default=True,
              type=click.FloatRange(1, 120), help="Seconds of each of the two recordings.")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=ARTIFACTS,
              show_default=True, help="Where --profile writes its files.")
def main(ops: int, repeat: int, time_limit: float, encryption: str, as_json: bool,
         with_profile: bool, profile_seconds: float, artifacts: Path) -> None:
    """Measure raftkv against etcd, 3 replicas each on loopback."""
    stop_cleanly_on_sigterm()
    py_spy = py_spy_binary() if with_profile else None
    if with_profile and py_spy is None:
        raise click.ClickException(INSTALL_HINT)
    recorded: dict[str, tuple[Recorded, Result]] = {}
    binary = etcd_binary()
    if binary is None:
        click.echo(f"{NO_ETCD}: measuring raftkv alone.", err=True)
    with tempfile.TemporaryDirectory(prefix="bench-kv-") as tmp, ExitStack() as stack:
        targets = [start_raftkv(stack, Path(tmp) / "raftkv", encryption)]
        if binary is not None:
            targets.append(start_etcd(stack, Path(tmp) / "etcd", binary))
        for target in targets:
            preload(target)
        runs = run_all(targets, ops, repeat, time_limit)
        if py_spy is not None:
            for name, work in PROFILED.items():
                click.echo(f"profiling the raftkv leader under {work.name}", err=True)
                recorded[work.name] = profile_leader(targets[0], work, name, py_spy,
                                                     profile_seconds, artifacts)
    summary = medians(runs, "system", Result)
    if as_json:
        click.echo(json.dumps({"ops": ops, "repeat": repeat, "time_limit": time_limit,
                               "encryption": encryption, "etcd": binary, "runs": runs,
                               "median": {s: {w: asdict(r) for w, r in m.items()}
                                          for s, m in summary.items()},
                               "profile": {work: {
                                   "flamegraph": str(files.flamegraph),
                                   "raw": str(files.raw),
                                   "summary": str(files.summary),
                                   "seconds": profile_seconds,
                                   "under_profiler": asdict(under)}
                                   for work, (files, under) in recorded.items()}}, indent=2))
        return
    click.echo(table(summary))
    errors = sum(r["errors"] for r in runs)
    click.echo(f"\n{ops} ops per workload (or {time_limit:g} s), median of {repeat} run(s); "
               f"{errors} failed operations.  All clients are threads of one Python process.\n"
               "etcd pays JSON/HTTP through its gRPC gateway; raftkv pays its Python client "
               "and Python replicas." + ("" if binary else f"\n{NO_ETCD}."))
    for work_name, (files, under) in recorded.items():
        click.echo(f"\nProfile of the raftkv leader under {work_name} "
                   f"({under.ops_per_s:,.0f} ops/s, p50 {under.p50_ms:.2f} ms while py-spy "
                   f"sampled): {files.flamegraph}, {files.raw}, {files.summary}\n")
        click.echo(files.text)


if __name__ == "__main__":
    main()

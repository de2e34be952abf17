"""``python -m bench.capacity``: fill one group size by size, measure at each, print."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from raftkv.client import INLINE_LIMIT

from .. import ab
from ..common import stop_cleanly_on_sigterm
from .group import BenchError, Group, Shape
from .probes import parse_sizes
from .report import Result, aims, table
from .steps import catch_up, restart, snapshot, stalls, ticks_of

MAX_SLOWDOWN = 5.0  # percent: the bound on any bench.kv workload


def measure_size(group: Group, shape: Shape, gb: float, filled: int, clients: int,
                 fill_timeout: float, timeout: float, result: Result) -> None:
    """Fill from cell ``filled`` up to ``gb``, then take every measurement into
    ``result`` (which keeps what was measured if a step fails)."""
    end = shape.cells_for(gb)
    result.update(target_gb=gb, cells=end, stored_gb=end * shape.value_size / 1e9)

    def say(what: str) -> None:
        click.echo(f"{gb:g} GB: {what}", err=True)

    ticks = {n: ticks_of(st) for n, st in group.statuses().items()}
    result["fill"] = fill = group.fill(shape, filled, end, clients, fill_timeout)
    say(f"filled {fill['cells']} cells in {fill['seconds']:.1f} s ({fill['mb_per_s']:.1f} MB/s)")
    seen = group.settle(timeout)
    result["stalls_fill"] = {n: stalls(ticks.get(n), ticks_of(st)) for n, st in seen.items()}
    result["memory_after_fill"] = {n: group.memory(n) for n in group.names}
    ticks = {n: ticks_of(st) for n, st in seen.items()}
    result["snapshot"] = shot = snapshot(group, timeout)
    result["stalls_snapshot"] = {n: stalls(ticks.get(n), ticks_of(st))
                                 for n, st in group.statuses().items()}
    say(f"snapshot: {shot['per_replica']}")
    say_sites("fill", result["stalls_fill"])
    say_sites("snapshot", result["stalls_snapshot"])
    result["disk_mb"] = {n: group.disk_mb(n) for n in group.names}
    leader, _ = group.leader(timeout)
    watcher, wiped = group.followers(leader)
    result["restart"] = restarts = {}
    for how in (signal.SIGTERM, signal.SIGKILL):
        restarts[how.name] = restart(group, watcher, how, timeout)
        say(f"restart of {watcher} after {how.name}: {restarts[how.name]['caught_up_s']:.2f} s")
    ticks = {n: ticks_of(st) for n, st in group.statuses().items()}
    result["catch_up"] = caught = catch_up(group, wiped, watcher, timeout)
    seen = group.statuses()
    result["stalls_catch_up"] = {  # the wiped replica's since it started again
        n: stalls(None if n == wiped else ticks.get(n), ticks_of(st)) for n, st in seen.items()}
    say(f"catch-up of {wiped}: {caught['caught_up_s']} s, terms {caught['terms_seen']}")
    say_sites("catch-up", result["stalls_catch_up"])
    if "error" in caught:
        raise BenchError(caught["error"])
    group.settle(timeout)
    result["memory_at_end"] = {n: group.memory(n) for n in group.names}


def say_sites(phase: str, seen: dict[str, dict[str, Any]]) -> None:
    """Where each replica's tick thread was seen stalling in one phase (status
    ``tick_stall_sites``), and how much of those stalls was CPU."""
    for name, got in seen.items():
        click.echo(f"{phase}: {name}: {got['over_aim']} stalls over the aim, "
                   f"{got['over_aim_s']} s, {got['over_aim_cpu_s']} s of it CPU, switches "
                   f"{got['over_aim_switches']}; sampled "
                   f"{got['sampled']}", err=True)
        for stack, samples in got["sites"].items():
            click.echo(f"    {samples:5d}  {stack}", err=True)


def measure(root: Path, shape: Shape, sizes: list[float], clients: int, snapshot_entries: int,
            fill_timeout: float, timeout: float) -> list[Result]:
    """Every size in turn.  A step that fails its bound ends the run (the group is in no
    known state after it): its size keeps what was measured and the error."""
    results: list[Result] = []
    with ExitStack() as stack:
        group = Group(stack, root, snapshot_entries, client_timeout=60.0)
        filled = 0
        for gb in sizes:
            results.append({})
            try:
                measure_size(group, shape, gb, filled, clients, fill_timeout, timeout,
                             results[-1])
            except BenchError as exc:
                click.echo(f"{group.cluster.logs()}\n{gb:g} GB: {exc}", err=True)
                results[-1]["error"] = str(exc)
                break
            filled = results[-1]["cells"]
    return results


def code_label() -> str:
    try:
        return ab.git("rev-parse", "--short", "HEAD") + (
            " + uncommitted changes" if ab.git("status", "--porcelain") else "")
    except ab.ABError:
        return "unknown (not a git checkout)"


@click.command()
@click.option("--sizes", default="0.5,1,2", show_default=True,
              help="GB of values stored (10^9 bytes), increasing; measured at each.")
@click.option("--value-size", default=10 * 1024, show_default=True,
              type=click.IntRange(1, INLINE_LIMIT), help="Bytes of each value (inline: at most 16 KiB).")
@click.option("--columns", default=100, show_default=True, type=click.IntRange(min=1),
              help="Cells to a row.")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Puts in flight while filling.")
@click.option("--snapshot-entries", default=5000, show_default=True, type=click.IntRange(min=10),
              help="The group's [raft] snapshot_entries (the default is the cluster file's).")
@click.option("--step-timeout", default=600.0, show_default=True, type=click.FloatRange(1, 7200),
              help="Seconds any one wait (snapshot, restart, catch-up) may take.")
@click.option("--fill-timeout", default=3600.0, show_default=True,
              type=click.FloatRange(1, 86400), help="Seconds each fill step may take.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where the data directories go (a temporary directory inside it).")
@click.option("--kv-ab", "kv_ab", metavar="REV",
              help="Also run bench.kv on REV and on this tree, interleaved (bench.ab).")
@click.option("--kv-runs", default=5, show_default=True, type=click.IntRange(1, 50),
              help="bench.kv runs per side with --kv-ab.")
@click.option("--kv-ops", default=2000, show_default=True, type=click.IntRange(min=1),
              help="bench.kv --ops with --kv-ab.")
@click.option("--kv-time-limit", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="bench.kv --time-limit with --kv-ab.")
@click.option("--json", "as_json", is_flag=True, help="Print every measurement as JSON instead.")
def main(sizes: str, value_size: int, columns: int, clients: int, snapshot_entries: int,
         step_timeout: float, fill_timeout: float, directory: Path | None, kv_ab: str | None,
         kv_runs: int, kv_ops: int, kv_time_limit: float, as_json: bool) -> None:
    """Measure a 3-replica group's memory, restarts, snapshots and catch-up as it stores more."""
    stop_cleanly_on_sigterm()
    wanted = parse_sizes(sizes)
    shape = Shape(value_size=value_size, columns=columns)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-capacity-", dir=directory) as tmp:
        results = measure(Path(tmp), shape, wanted, clients, snapshot_entries,
                          fill_timeout, step_timeout)
    kv: dict[str, Any] | None = None
    if kv_ab is not None:
        kv_args = ["--ops", str(kv_ops), "--time-limit", str(kv_time_limit)]
        before, after, outputs = ab.interleaved(kv_ab, kv_runs, kv_args, kv_time_limit)
        comparison = ab.compare(outputs, MAX_SLOWDOWN)
        kv = {"before": before.label, "after": after.label, "runs": kv_runs, "kv_args": kv_args,
              "outputs": outputs, "comparison": [asdict(c) for c in comparison],
              "table": ab.render(comparison, before, after, kv_runs, MAX_SLOWDOWN),
              "flagged": [c.workload for c in comparison if c.flagged]}
    settings = {"code": code_label(), "value_size": value_size, "columns": columns,
                "clients": clients, "snapshot_entries": snapshot_entries,
                "seconds": round(time.perf_counter() - began)}
    errors = [f"{r['target_gb']:g} GB: {r['error']}" for r in results if "error" in r]
    if as_json:
        click.echo(json.dumps({"settings": settings, "sizes": results, "kv_ab": kv}, indent=1))
    else:
        report(results, settings, kv)
    if errors:
        raise click.ClickException("a step ran past its bound: " + "; ".join(errors))


def report(results: list[Result], settings: dict[str, Any], kv: dict[str, Any] | None) -> None:
    click.echo(f"One group of 3 replicas on loopback (code {settings['code']}); "
               f"{settings['value_size']} B values, {settings['columns']} to a row, "
               f"{settings['clients']} puts in flight; [raft] snapshot_entries = "
               f"{settings['snapshot_entries']}; {settings['seconds']} s in all.\n")
    click.echo(table(results))
    for r in results:
        if "error" in r:
            click.echo(f"\nAt {r['target_gb']:g} GB: {r['error']}; the run stopped there.")
    if kv is not None:
        click.echo(f"\nbench.kv before and after:\n\n{kv['table']}")
    click.echo("\n" + aims(results, None if kv is None else kv["flagged"]))


if __name__ == "__main__":
    main()

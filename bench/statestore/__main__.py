"""``python -m bench.statestore``: run every measurement on both engines, print the table."""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import lmdb

from ..common import stop_cleanly_on_sigterm
from . import probes
from .engines import Engine, disk_bytes, files, open_engine
from .workload import Applier, PacedWriter, Shape, apply_rate, load, read_rate, snapshot_under_load

MiB = 1024 * 1024
# line -> engine -> samples; a line is (what, unit, "higher" or "lower" is better)
Samples = defaultdict[tuple[str, str, str], defaultdict[str, list[float]]]


def measure_open_store(engine: Engine, applier: Applier, shape: Shape, opts: dict[str, Any],
                       run: int, out: Samples, scratch: Path) -> None:
    name = engine.name
    for op, large, label in (("put", False, f"put {shape.small} B"),
                             ("put", True, f"put {shape.large // 1024} KiB"),
                             ("cput", False, f"cput {shape.small} B")):
        for batch in (1, 16, 64):
            got = apply_rate(applier, op, large, batch, opts["seconds"], opts["apply_commands"],
                             seed=run * 100 + batch)
            out[(f"apply {label}, batch {batch}", "commands/s", "higher")][name].append(got["per_s"])
            out[(f"apply {label}, batch {batch}: p99 batch", "ms", "lower")][name].append(
                got["p99_ms"])
    engine.fsync_each_commit(True)
    try:
        got = apply_rate(applier, "put", False, 16, opts["seconds"], opts["apply_commands"] // 4,
                         seed=run)
    finally:
        engine.fsync_each_commit(False)
    out[(f"apply put {shape.small} B, batch 16, fsync each commit", "commands/s", "higher")][
        name].append(got["per_s"])
    for kind, label in (("get", "get"), ("get_row", "get_row, 50 columns"),
                        ("scan", f"scan page, {opts['scan_rows']} rows")):
        writer = PacedWriter(applier, opts["writer_rate"])
        writer.start()
        try:
            got = read_rate(engine, shape, kind, opts["seconds"], opts["scan_rows"], seed=run)
        finally:
            stalls = writer.finish()
        out[(f"read {label} beside the writer", "ops/s", "higher")][name].append(got["per_s"])
        out[(f"read {label}: p99", "ms", "lower")][name].append(got["p99_ms"])
        out[(f"writer's longest stall during {kind} reads", "ms", "lower")][name].append(
            stalls["writer_max_ms"])
    for method_name, method in engine.snapshots().items():
        dest = scratch / f"snapshot-{name}-{run}"
        got = snapshot_under_load(engine, method, dest, applier, opts["writer_rate"])
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        out[(f"snapshot: {method_name}", "s/GB", "lower")][name].append(got["s_per_gb"])
        out[(f"snapshot: {method_name}: writer's longest stall", "ms", "lower")][name].append(
            got["writer_max_ms"])
        out[(f"snapshot: {method_name}: store grew by", "MB", "lower")][name].append(got["grew_mb"])


def run(opts: dict[str, Any], shape: Shape, engines: list[str], scratch: Path) -> dict[str, Any]:
    out: Samples = defaultdict(lambda: defaultdict(list))
    cache = opts["cache_mb"] * MiB
    stores: dict[str, Engine] = {}
    appliers: dict[str, Applier] = {}
    try:
        for name in engines:
            stores[name] = open_engine(name, scratch / name, cache)
            seconds = load(stores[name], shape)
            loaded = disk_bytes(stores[name].path) / 1e6
            out[("bulk load", "MB/s", "higher")][name].append(loaded / seconds)
            out[("on disk after the load", "MB", "lower")][name].append(loaded)
            appliers[name] = Applier(stores[name], shape)
            click.echo(f"{name}: loaded in {seconds:.1f} s", err=True)
        for repeat in range(opts["repeats"]):
            order = engines if repeat % 2 == 0 else engines[::-1]
            for name in order:
                began = time.perf_counter()
                measure_open_store(stores[name], appliers[name], shape, opts, repeat, out, scratch)
                click.echo(f"{name}: repeat {repeat + 1} in {time.perf_counter() - began:.0f} s",
                           err=True)
    finally:
        for store in stores.values():
            store.close()
    sizes = {name: files(scratch / name) for name in engines}
    for name in engines:
        out[("on disk after every measurement", "MB", "lower")][name].append(disk_bytes(scratch / name) / 1e6)
        for _ in range(opts["repeats"]):
            got = probes.in_child(probes.open_time, name, scratch / name, shape, cache)
            out[("open and answer a get (new process)", "ms", "lower")][name].append(got["open_ms"])
        mem = probes.in_child(probes.memory, name, scratch / name, shape, cache)
        out[("RssAnon above the interpreter, at most", "MiB", "lower")][name].append(mem["anon_max_mib"])
        out[("RssFile (mapped file pages) after", "MiB", "lower")][name].append(mem["file_mib"])
        for repeat in range(opts["repeats"]):
            got = probes.kill_during_writes(name, scratch / name, cache, shape, seed=repeat)
            out[("kill -9 mid-write, then consistent", "share", "higher")][name].append(
                got["consistent"])
            out[("reopen after kill -9 and read", "ms", "lower")][name].append(got["reopen_ms"])
        click.echo(f"{name}: probes done; memory {mem}", err=True)
    return {"lines": [{"line": what, "unit": unit, "better": better,
                       "samples": dict(by_engine),
                       "median": {e: statistics.median(v) for e, v in by_engine.items()}}
                      for (what, unit, better), by_engine in out.items()],
            "files": sizes}


def table(result: dict[str, Any], engines: list[str]) -> str:
    head = "| measurement | unit | " + " | ".join(engines) + " | " + "/".join(engines) + " |"
    rows = [head, "|" + "---|" * (len(engines) + 3)]
    for line in result["lines"]:
        values = [line["median"].get(e, float("nan")) for e in engines]
        ratio = values[0] / values[1] if len(values) == 2 and values[1] else float("nan")
        better = "↑" if line["better"] == "higher" else "↓"
        rows.append(f"| {line['line']} | {line['unit']} {better} | "
                    + " | ".join(_fmt(v) for v in values) + f" | {ratio:.2f} |")
    return "\n".join(rows)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


@click.command()
@click.option("--cells", default=200_000, show_default=True, type=click.IntRange(min=1000),
              help="Cells in the data set.")
@click.option("--value-size", default="100,10240", show_default=True,
              help="Bytes of a small value and of a large one.")
@click.option("--large-share", default=0.15, show_default=True, type=click.FloatRange(0, 0.3),
              help="Share of the cells holding a large value.")
@click.option("--shards", default=16, show_default=True, type=click.IntRange(min=1),
              help="Shards the replica holds.")
@click.option("--cache-mb", default=64, show_default=True, type=click.IntRange(min=1),
              help="The configured cache (SQLite's page cache, per connection; LMDB has none).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--seconds", default=0.5, show_default=True, type=click.FloatRange(0.05, 60),
              help="Longest time of one apply or read line.")
@click.option("--apply-commands", default=4096, show_default=True, type=click.IntRange(min=64),
              help="Most commands one apply line applies.")
@click.option("--writer-rate", default=2000, show_default=True, type=click.IntRange(min=16),
              help="Commands/s the writer applies beside reads and snapshots.")
@click.option("--scan-rows", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--engines", default="lmdb,sqlite", show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where the stores go (a temporary directory inside it; default: the system's).")
@click.option("--json", "as_json", is_flag=True, help="Print every sample as JSON instead.")
def main(cells: int, value_size: str, large_share: float, shards: int, directory: Path | None,
         engines: str, as_json: bool, **opts: Any) -> None:
    """Measure LMDB and SQLite as the state machine's store on our workload."""
    stop_cleanly_on_sigterm()
    small, large = (int(v) for v in value_size.split(","))
    shape = Shape(cells=cells, small=small, large=large, large_share=large_share, shards=shards)
    names = [e.strip() for e in engines.split(",") if e.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="statestore-", dir=directory) as scratch:
        result = run(opts, shape, names, Path(scratch))
    result["settings"] = {"cells": cells, "data_mb": round(shape.logical_bytes() / 1e6),
                          "small": small, "large": large,
                          "large_share": large_share, "shards": shards, **opts,
                          "lmdb": f"py-lmdb {lmdb.__version__}, LMDB {'.'.join(map(str, lmdb.version()))}",
                          "sqlite": sqlite3.sqlite_version,
                          "seconds": round(time.perf_counter() - started)}
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{cells} cells ({large_share:.0%} of {large} B, the rest {small} B; "
               f"{result['settings']['data_mb']} MB of keys and values), "
               f"cache {opts['cache_mb']} MiB, medians of {opts['repeats']}; "
               f"{result['settings']['lmdb']}, SQLite {result['settings']['sqlite']}; "
               f"{result['settings']['seconds']} s")
    click.echo(table(result, names))


if __name__ == "__main__":
    main()

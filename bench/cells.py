"""The reads a page makes: cells of several rows over two groups, and the newest page of a
long row.

    python -m bench.cells [--ops 1000] [--cells 8] [--columns 10000] [--clients 1]
                          [--time-limit 30] [--json]

A cluster of two storage groups (3 replicas each, on loopback, the static shard
map).  ``--cells`` cells, each in its own row, spread over both groups, are read
as a page reads them:

* ``get``, one after another: the page as it was;
* ``get_cells``: one request per group, sent at once;
* ``get_cells``, every version known: a cache validating what it holds (every
  answer ``Unchanged``, no value sent).

Then one row of ``--columns`` columns (ids that sort by arrival, as a mailbox's)
gives its newest 20 with ``get_row(reverse=True, limit=20)``, against the whole
row read and sorted by the caller (what a newest-first page cost before).  Each
workload runs ``--clients`` threads sharing one ``shards.Client`` for ``--ops``
calls or ``--time-limit`` seconds; the table gives calls per second and p50/p99
latency of a call.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

import shards
from raftkv.interface import Cell, Unchanged
from tests.cluster import KVCluster, running

from .common import Run, closed_loop, stop_cleanly_on_sigterm

NEWEST = 20         # the page of a long row
WRITE_BATCH = 200   # columns per mutate_row while filling the long row


def _rows(client: shards.Client, count: int) -> list[str]:
    """``count`` rows of distinct shards' hash tags, alternating between groups 1 and 2."""
    rows: list[str] = []
    for i in range(100_000):
        row = f"{{page{i}}}/row"
        if len(rows) == count:
            return rows
        if client.shard_map.group_of(client.shard_of(row)) == 1 + len(rows) % 2:
            rows.append(row)
    raise click.ClickException("no rows found for both groups")


def workloads(client: shards.Client, cells: int, columns: int
              ) -> dict[str, Callable[[int, int], bool]]:
    rows = _rows(client, cells)
    wanted = [(row, "c") for row in rows]
    versions = [client.put(row, "c", b"v" * 100) for row in rows]
    for start in range(0, columns, WRITE_BATCH):
        client.mutate_row("{long}/row", [], [("put", f"m{i:08}", b"x" * 20)
                                             for i in range(start, min(columns, start + WRITE_BATCH))])
    newest = [f"m{i:08}" for i in range(columns - 1, max(columns - 1 - NEWEST, -1), -1)]

    def gets(_t: int, _i: int) -> bool:
        return all(isinstance(client.get(row, col), Cell) for row, col in wanted)

    def get_cells(_t: int, _i: int) -> bool:
        return all(isinstance(c, Cell) for c in client.get_cells(wanted))

    def validate(_t: int, _i: int) -> bool:
        return all(isinstance(c, Unchanged) for c in client.get_cells(wanted, known=versions))

    def newest_page(_t: int, _i: int) -> bool:
        return list(client.get_row("{long}/row", reverse=True, limit=NEWEST)) == newest

    def whole_row(_t: int, _i: int) -> bool:
        return sorted(client.get_row("{long}/row"), reverse=True)[:NEWEST] == newest

    return {f"{cells} cells: get, one after another": gets,
            f"{cells} cells: get_cells": get_cells,
            f"{cells} cells: get_cells, every version known": validate,
            f"newest {NEWEST} of {columns} columns: get_row reverse, limit": newest_page,
            f"newest {NEWEST} of {columns} columns: whole row, sorted here": whole_row}


def measure(root: Path, ops: int, cells: int, columns: int, clients: int,
            time_limit: float) -> dict[str, Run]:
    with running(KVCluster(root, groups=2)) as cluster, cluster.client() as client:
        return {name: closed_loop(op, clients, ops, time_limit)
                for name, op in workloads(client, cells, columns).items()}


def table(results: dict[str, Run]) -> str:
    lines = ["| workload | calls/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for name, run in results.items():
        lines.append(f"| {name} | {run.ops_per_s:,.0f} | {run.percentile_ms(0.5):.2f} | "
                     f"{run.percentile_ms(0.99):.2f} |")
    return "\n".join(lines)


@click.command()
@click.option("--ops", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Calls per workload.")
@click.option("--cells", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Cells a page reads, each in its own row, over both groups.")
@click.option("--columns", default=10_000, show_default=True, type=click.IntRange(min=NEWEST),
              help="Columns of the long row.")
@click.option("--clients", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads sharing one client.")
@click.option("--time-limit", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds per workload at most.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
def main(ops: int, cells: int, columns: int, clients: int, time_limit: float,
         as_json: bool) -> None:
    """Time the reads of a page: cells of several rows, and a row's newest page."""
    stop_cleanly_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-cells-") as tmp:
        results = measure(Path(tmp) / "kv", ops, cells, columns, clients, time_limit)
    if as_json:
        click.echo(json.dumps({name: {"ops_per_s": r.ops_per_s, "p50_ms": r.percentile_ms(0.5),
                                      "p99_ms": r.percentile_ms(0.99), "errors": r.errors,
                                      "wrong": r.wrong} for name, r in results.items()}))
        return
    click.echo(table(results))
    failed = {name: (r.errors, r.wrong) for name, r in results.items() if r.errors or r.wrong}
    if failed:
        raise click.ClickException(f"calls that failed or answered wrongly: {failed}")


if __name__ == "__main__":
    main()

"""``raftkv-ctl``: look at and change the store from a shell.

Human output by default, ``--json`` for scripts.  Without ``--config`` it finds
the cluster the way :mod:`shards.locate` says (``-v`` shows which); every failure
is one line on stderr and an exit code of :class:`shards.cliopts.ExitCode`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate

import click

from raftkv.errors import AuthenticationFailed, ConfigError, RaftKVError, UnavailableError

from . import config as shard_config
from .backup import save_backup
from .client import Client
from .cliopts import (
    EXIT_CODES_HELP,
    ExitCode,
    GlobalOption,
    ToolError,
    fail,
    global_options,
    with_global_options,
)
from .locate import locate
from .migrate import Migrator
from .model import dkimkeys, registry
from .reach import check_reachable, explain_unavailable
from .site import Site

OPTIONS = (
    GlobalOption(("--config",), "The cluster file [default: $RAFTCLOUD_CONFIG, else the "
                 "deploy/local.toml of the checkout around the current directory].",
                 type=click.Path(dir_okay=False)),
    GlobalOption(("--json", "as_json"), "Machine-readable output.", is_flag=True),
    GlobalOption(("--timeout",), "Seconds per request.", default=10.0, type=float),
    GlobalOption(("--wait",), "Seconds join, leave and move wait for their shards to move "
                 "(they go on).", default=600.0, type=float),
    GlobalOption(("-v", "--verbose"), "Say which cluster file and secret are used.",
                 count=True),
)


def _show_value(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


def _emit(ctx: click.Context, data: Any, human: str) -> None:
    if ctx.obj["as_json"]:
        click.echo(json.dumps(data, sort_keys=True, default=str))
    else:
        click.echo(human)


def _store_command[**P, R](func: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """Give the command a connected client and turn every failure into one line and
    its exit code: the cluster's errors, a wrong secret, nothing listening, no leader."""
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        obj = click.get_current_context().obj
        try:
            located = locate(obj["config"])
            cluster = located.load()
        except ConfigError as exc:
            fail(str(exc), ExitCode.NO_CLUSTER)
        if obj["verbose"]:
            click.echo(f"raftkv-ctl: {located.describe()}", err=True)
        try:
            check_reachable(cluster, located.secret_from)
            with Client(cluster, timeout=obj["timeout"]) as client:
                try:
                    return func(client, *args, **kwargs)
                except UnavailableError as exc:
                    raise explain_unavailable(client.status(), exc) from None
        except ToolError as exc:
            fail(exc.message, exc.code)
        except AuthenticationFailed as exc:
            fail(f"{exc} (secret {located.secret_from})", ExitCode.WRONG_SECRET)
        except RaftKVError as exc:
            fail(f"{type(exc).__name__}: {exc}", ExitCode.FAILED)
    return wrapper


@click.group(epilog=EXIT_CODES_HELP)
@with_global_options(OPTIONS)
def main() -> None:
    """Operate a raftcloud store.  Global options go before or after the command."""


@main.command()
@click.pass_context
@_store_command
def status(client: Client, ctx: click.Context) -> None:
    """Every replica of every group: alive, role, term, commit index, configuration
    (shards served, incoming, frozen), blob chunks (held, missing, being repaired)."""
    replicas = client.status()
    lines = [f"{'name':12} {'group':>5} {'addr':22} {'state':9} {'term':>5} {'commit':>8} "
             f"{'config':>6} {'served':>6} {'in':>3} {'out':>3} "
             f"{'chunks':>7} {'missing':>7} {'repairing':>9}"]
    for r in replicas:
        state = r.get("role", "?") if r["alive"] else "DOWN"
        served = r.get("shards_served", "-")
        lines.append(f"{r['name']:12} {r['group']:>5} {r['addr']:22} {state:9} "
                     f"{r.get('term', '-'):>5} {r.get('commit_index', '-'):>8} "
                     f"{r.get('config_num', '-'):>6} {'all' if served is None else served:>6} "
                     f"{r.get('shards_incoming', '-'):>3} {r.get('shards_frozen', '-'):>3} "
                     f"{r.get('blob_chunks', '-'):>7} {r.get('chunks_missing', '-'):>7} "
                     f"{r.get('chunks_repairing', '-'):>9}")
    _emit(ctx, replicas, "\n".join(lines))


@main.command()
@click.argument("row")
@click.argument("col")
@click.option("--stale", is_flag=True, help="Read any replica's possibly stale copy.")
@click.pass_context
@_store_command
def get(client: Client, ctx: click.Context, row: str, col: str, stale: bool) -> None:
    """Print one cell."""
    cell = client.get(row, col, consistency="stale" if stale else "linearizable")
    if cell is None:
        _emit(ctx, {"found": False}, "(not found)")
        sys.exit(ExitCode.FAILED)
    _emit(ctx, {"found": True, "value": _show_value(cell.value), "version": cell.version},
          f"{_show_value(cell.value)}\t(version {cell.version})")


@main.command()
@click.argument("row")
@click.argument("col")
@click.argument("value")
@click.pass_context
@_store_command
def put(client: Client, ctx: click.Context, row: str, col: str, value: str) -> None:
    """Store VALUE (UTF-8 text; '-' reads bytes from stdin)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8")
    version = client.put(row, col, data)
    _emit(ctx, {"version": version}, f"version {version}")


@main.command()
@click.argument("row")
@click.argument("col")
@click.argument("new")
@click.option("--old", help="Store only if the cell holds this value.")
@click.option("--if-version", type=int, help="Store only if the cell has this version (0: absent).")
@click.pass_context
@_store_command
def cput(client: Client, ctx: click.Context, row: str, col: str, new: str,
         old: str | None, if_version: int | None) -> None:
    """Compare-and-set: store NEW if the cell holds --old (or is absent) or has --if-version."""
    version = client.cput(row, col, new.encode("utf-8"),
                          old=None if old is None else old.encode("utf-8"),
                          if_version=if_version)
    _emit(ctx, {"version": version}, f"version {version}")


@main.command()
@click.argument("row")
@click.argument("col")
@click.pass_context
@_store_command
def delete(client: Client, ctx: click.Context, row: str, col: str) -> None:
    """Delete one cell."""
    existed = client.delete(row, col)
    _emit(ctx, {"deleted": existed}, "deleted" if existed else "(was not there)")


@main.command()
@click.argument("shard", type=int)
@click.option("--after", default="", help="Start after this row.")
@click.option("--limit", default=10, show_default=True)
@click.pass_context
@_store_command
def scan(client: Client, ctx: click.Context, shard: int, after: str, limit: int) -> None:
    """List rows of one shard, in order."""
    rows = client.scan(shard, after, limit)
    data = [{"row": row, "cells": {c: {"value": _show_value(cell.value), "version": cell.version}
                                   for c, cell in cells.items()}} for row, cells in rows]
    human = "\n".join(f"{row}\t{', '.join(sorted(cells))}" for row, cells in rows)
    _emit(ctx, data, human or "(no rows)")


@main.command()
@click.pass_context
@_store_command
def nodes(client: Client, ctx: click.Context) -> None:
    """Every registered process (frontends, smtpd, balancer): address, alive, last beat."""
    now = time.time()
    found = registry.list_nodes(client)
    data = [{"kind": n.kind, "name": n.name, "addr": n.addr, "alive": n.alive,
             "heartbeat_age": round(now - n.heartbeat, 1), "info": n.info} for n in found]
    lines = [f"{'kind':10} {'name':16} {'addr':22} {'state':6} {'beat':>7}"]
    lines += [f"{n['kind']:10} {n['name']:16} {n['addr']:22} "
              f"{'alive' if n['alive'] else 'DOWN':6} {n['heartbeat_age']:>6}s" for n in data]
    _emit(ctx, data, "\n".join(lines))


@main.command()
@click.option("--rows-up-to", default=10_000, show_default=True,
              help="Stop counting a shard's rows here (a bound on the work).")
@click.pass_context
@_store_command
def shards(client: Client, ctx: click.Context, rows_up_to: int) -> None:
    """Each shard: the group that serves it, its rows and their bytes (large values as stored)."""
    client.refresh()
    data = []
    with click.progressbar(range(client.cluster.shards), label="counting", file=sys.stderr,
                           hidden=ctx.obj["as_json"]) as bar:
        for shard in bar:
            rows = size = 0
            after = ""
            while rows < rows_up_to:
                page = client.scan(shard, after, 100, consistency="stale")
                rows += len(page)
                size += sum(len(c.value) for _row, cells in page for c in cells.values())
                if len(page) < 100:
                    break
                after = page[-1][0]
            data.append({"shard": shard, "group": client.shard_map.group_of(shard),
                         "rows": rows, "bytes": size})
    lines = [f"{'shard':>5} {'group':>5} {'rows':>8} {'bytes':>12}"]
    lines += [f"{d['shard']:>5} {d['group']:>5} {d['rows']:>8} {d['bytes']:>12}" for d in data]
    _emit(ctx, data, "\n".join(lines))


@main.command("config")
@click.argument("num", type=int, default=-1)
@click.pass_context
@_store_command
def show_config(client: Client, ctx: click.Context, num: int) -> None:
    """Show configuration NUM (default: the latest): each group's replicas and shards."""
    config_group = client.config_group()
    if config_group is None:
        fail("the cluster file has no [config_group]", ExitCode.FAILED)
    config = shard_config.ConfigStore(config_group, client.cluster.shards).query(num)
    data = {"num": config.num, "owners": list(config.owners),
            "groups": {str(g): list(a) for g, a in sorted(config.groups.items())}}
    lines = [f"configuration {config.num}"]
    lines += [f"group {g}: {len(config.shards_of(g))} shards {config.shards_of(g)} "
              f"on {', '.join(a)}" for g, a in sorted(config.groups.items())]
    _emit(ctx, data, "\n".join(lines))


def _reconfigure(client: Client, ctx: click.Context,
                 step: Callable[[shard_config.Config], shard_config.Config]) -> None:
    """Store the next configuration, and show a progress bar until its shards have moved."""
    bar = click.progressbar(length=0, label="moving shards", file=sys.stderr,
                            hidden=ctx.obj["as_json"], show_pos=True)

    def progress(done: int, total: int) -> None:
        bar.length = total
        bar.update(done - bar.pos)
    with bar:
        config = Migrator(client, progress, wait=ctx.obj["wait"]).reconfigure(step)
    counts = {gid: len(config.shards_of(gid)) for gid in sorted(config.groups)}
    _emit(ctx, {"num": config.num, "owners": list(config.owners), "shards_per_group": counts},
          f"configuration {config.num}: " + ", ".join(f"group {g}: {n} shards"
                                                     for g, n in counts.items()))


@main.command()
@click.argument("group", type=int)
@click.pass_context
@_store_command
def join(client: Client, ctx: click.Context, group: int) -> None:
    """Add a storage group of the cluster file and move shards to it."""
    addrs = client.cluster.group(group).client_addrs
    _reconfigure(client, ctx, lambda c: shard_config.join(c, {group: addrs}))


@main.command()
@click.argument("groups", type=int, nargs=-1, required=True)
@click.pass_context
@_store_command
def leave(client: Client, ctx: click.Context, groups: tuple[int, ...]) -> None:
    """Move every shard off these groups, then forget them."""
    _reconfigure(client, ctx, lambda c: shard_config.leave(c, list(groups)))


@main.command()
@click.argument("shard", type=int)
@click.argument("group", type=int)
@click.pass_context
@_store_command
def move(client: Client, ctx: click.Context, shard: int, group: int) -> None:
    """Move one shard to one group."""
    _reconfigure(client, ctx, lambda c: shard_config.move(c, shard, group))


@main.command("dkim-record")
@click.argument("domains", nargs=-1)
@click.pass_context
@_store_command
def dkim_record(client: Client, ctx: click.Context, domains: tuple[str, ...]) -> None:
    """The DNS TXT record to publish for the DKIM key of each mail domain (every one of
    `[cluster] domains`, or DOMAINS), under `[smtpd] dkim_selector`.  A domain that has
    no key yet gets one now: the one smtpd signs its mail with from then on."""
    cluster = client.cluster
    try:
        ours = Site.of(cluster).domains
        selector = dkimkeys.selector_setting(cluster.table("smtpd"))
    except ConfigError as exc:
        fail(str(exc), ExitCode.NO_CLUSTER)
    unknown = sorted(set(domains) - set(ours))
    if unknown:
        fail(f"not a mail domain of this cluster: {', '.join(unknown)} (its domains: "
             f"{', '.join(ours)})", ExitCode.USAGE)
    seal_key = cluster.derive_key(dkimkeys.KEY_PURPOSE)
    data, lines = [], []
    for domain in domains or ours:
        name, text = dkimkeys.dns_record(dkimkeys.load_or_create(client, seal_key, domain,
                                                                 selector))
        data.append({"domain": domain, "selector": selector, "name": name, "type": "TXT",
                     "value": text})
        lines.append(dkimkeys.zone_line(name, text))
    _emit(ctx, data, "\n".join(lines))


@main.group()
def snapshot() -> None:
    """Back up the whole cluster (`raftcloud restore` builds a new cluster from the file)."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@_store_command
def snapshot_save(client: Client, ctx: click.Context, file: Path) -> None:
    """Save one consistent snapshot of every group, blobs included, into FILE while the
    cluster serves: every write acknowledged before the save began is in it, and no
    write in it depends on one that is not (docs/operations.md, "Backup and restore")."""
    def progress(line: str) -> None:
        if ctx.obj["verbose"]:
            click.echo(f"raftkv-ctl: {line}", err=True)
    try:
        saved = save_backup(client, file, progress=progress)
    except OSError as exc:
        fail(f"cannot write {file}: {exc}", ExitCode.FAILED)
    _emit(ctx, {"file": str(file), **dataclasses.asdict(saved)},
          f"saved {file}: {saved.groups} groups, {saved.cells} cells, {saved.chunks} chunks, "
          f"{saved.bytes} bytes; writes paused {saved.paused_ms:.0f} ms")


global_options(main, OPTIONS)
global_options(snapshot, OPTIONS)

if __name__ == "__main__":
    main()

"""Our WebDAV door beside Apache's mod_dav, through rclone: many small files and one large one.

    python -m bench.dav [--files 1000] [--large-size 1GiB] [--repeats 3] [--only apache,ours]
                        [--transfers 4] [--clients 1] [--seed 20] [--time-limit 1800] [--json]

Starts each server on a loopback port (:mod:`bench.dav_servers`): Debian's
Apache 2 with ``mod_dav_fs`` on a directory under the bench's temporary
directory, and ``/dav/`` of a frontend on a cloud of its own (signed in with an
app password); a server that is not installed is left out with a message.
Debian's ``rclone`` (a WebDAV remote per server, configured by environment
variables only) then, for every server in the same run, ``--repeats`` times,
the servers taking turns at going first:

* ``small-up``: ``rclone copy`` of ``--files`` files (1 to 8 KiB, in 40
  folders two deep, the bytes made from ``--seed``) to a new folder;
* ``small-down``: ``rclone copy`` of that folder to a new local one;
* ``large-up`` and ``large-down``: the same with one file of ``--large-size``.

rclone 1.60's WebDAV client waits 10 ms between the starts of its requests
(its pacer), so one rclone makes at most about 100 a second, whatever the
server: ``--clients N`` copies the small files with N rclone processes at once,
each its share of the top folders, to see past that.

Each step is timed whole (rclone's start, listings and checks included, as a
user waits for them) and checked: rclone's count of transferred files, no
error, and after a download the same bytes under the same names (a digest of
the tree).  The table gives files/s and MB/s per step, medians over the
repeats, each beside its multiple of Apache's, with issue 20's aims under it.
An rclone call may take ``--time-limit`` seconds; a step that fails is reported
and that server skips it (and what depends on it) from then on; the exit
status is then 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from .common import stop_cleanly_on_sigterm
from .dav_servers import (
    NO_APACHE,
    NO_DAV,
    Server,
    ServerError,
    apache_binary,
    dav_importable,
    start_apache,
    start_ours,
)
from .imap_servers import tree_cpu_seconds

SERVERS = ("apache", "ours")   # --only's names, in the table's order
WORKLOADS = ("small-up", "small-down", "large-up", "large-down")
NEEDS = {"small-down": "small-up", "large-down": "large-up"}   # a download needs its upload
MIN_SMALL, MAX_SMALL = 1024, 8192   # bytes of each small file, drawn uniformly
CHUNK = 1 << 20                # bytes written or hashed at a time
AIM_LARGE, AIM_SMALL = 0.5, 0.3    # issue 20: ours over Apache's MB/s, files/s
NO_RCLONE = "rclone not found on PATH (apt-get install rclone)"
SIZE = re.compile(r"(?i)^\s*(\d+)\s*(|b|k|kib|m|mib|g|gib)\s*$")
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
         "g": 1 << 30, "gib": 1 << 30}


def parse_size(_ctx: click.Context | None, _param: click.Parameter | None, value: str) -> int:
    """Bytes from ``1073741824``, ``64MiB``, ``1G`` (binary units)."""
    found = SIZE.match(str(value))
    if not found or int(found.group(1)) < 1:
        raise click.BadParameter(f"a size such as 1GiB, 64MiB or 4096; got {value!r}")
    return int(found.group(1)) * UNITS[found.group(2).lower()]


def small_path(i: int) -> str:
    """Where small file ``i`` lies: 10 folders of 4 folders each (nested a little)."""
    return f"d{i % 10}/s{i // 10 % 4}/f{i:05d}.bin"


def make_small(root: Path, files: int, seed: int) -> None:
    """``files`` small files under ``root``; the same seed, the same bytes."""
    for i in range(files):
        rng = random.Random(f"{seed}:{i}")
        path = root / small_path(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(MIN_SMALL, MAX_SMALL)))


def make_large(path: Path, size: int, seed: int) -> None:
    """One file of ``size`` bytes (random, so nothing on the way can compress it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("wb") as out:
        for start in range(0, size, CHUNK):
            out.write(rng.randbytes(min(CHUNK, size - start)))


@dataclass(frozen=True)
class Tree:
    """What a folder holds: its files, their bytes, and a digest of names and contents."""

    files: int
    size: int
    digest: str


def tree_of(root: Path) -> Tree:
    total, count, names = hashlib.sha256(), 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        content = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                content.update(block)
        total.update(f"{path.relative_to(root).as_posix()}\0{content.hexdigest()}\n".encode())
        count, names = count + 1, names + path.stat().st_size
    return Tree(count, names, total.hexdigest())


class StepError(RuntimeError):
    """An rclone call failed, ran out of time, or moved the wrong bytes."""


@dataclass(frozen=True)
class Rclone:
    """rclone with one WebDAV remote per server, set by environment variables alone (an
    empty config file in the temporary directory: nobody's own remotes are read)."""

    binary: str
    env: dict[str, str]
    flags: tuple[str, ...]
    time_limit: float

    @classmethod
    def for_servers(cls, binary: str, root: Path, servers: list[Server], transfers: int,
                    time_limit: float) -> Rclone:
        config = root / "rclone.conf"
        config.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["RCLONE_CONFIG"] = str(config)
        for server in servers:
            # rclone keeps passwords obscured (reversibly): it reads this one from stdin.
            obscured = subprocess.run([binary, "obscure", "-"], input=server.password,
                                      capture_output=True, text=True, timeout=30, check=True)
            prefix = f"RCLONE_CONFIG_{server.key.upper()}_"
            env.update({f"{prefix}TYPE": "webdav", f"{prefix}URL": server.url,
                        f"{prefix}VENDOR": "other", f"{prefix}USER": server.user,
                        f"{prefix}PASS": obscured.stdout.strip()})
        # One try each: a benchmark reports failures instead of hiding them in retries.
        flags = ("--use-json-log", "-v", "--transfers", str(transfers), "--retries", "1",
                 "--low-level-retries", "1", "--contimeout", "10s", "--timeout", "120s")
        return cls(binary, env, flags, time_limit)

    def run(self, *args: str) -> Call:
        """``rclone *args``, checked: no error in its exit status or its stats.

        :raises StepError: it failed or took longer than ``time_limit``.
        """
        return self.run_all([args])

    def run_all(self, calls: list[tuple[str, ...]]) -> Call:
        """Several rclone processes at once, one per ``calls`` entry, each checked as
        :meth:`run` checks one: their stats summed, the wall time until the last ended."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with ThreadPoolExecutor(len(calls)) as pool:
            done = list(pool.map(self._one, calls))
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats: dict[str, Any] = {}
        for one in done:
            for key, value in one.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    stats[key] = stats.get(key, 0) + value
        return Call(stats, seconds, after.ru_utime + after.ru_stime - before.ru_utime
                    - before.ru_stime, "".join(one.get("out", "") for one in done))

    def _one(self, args: tuple[str, ...]) -> dict[str, Any]:
        try:
            done = subprocess.run([self.binary, *args, *self.flags], env=self.env,
                                  capture_output=True, text=True, timeout=self.time_limit)
        except subprocess.TimeoutExpired:
            raise StepError(f"rclone {args[0]} took more than --time-limit "
                            f"({self.time_limit:g} s)") from None
        stats = _last_stats(done.stderr)
        if done.returncode != 0 or stats.get("errors"):
            raise StepError(f"rclone {args[0]} exited {done.returncode}: "
                            f"{_errors(done.stderr)}"[:600])
        return {**stats, "out": done.stdout}


@dataclass(frozen=True)
class Call:
    """What one rclone call did."""

    stats: dict[str, Any]   # its last JSON stats line: transfers, deletes, checks, errors ...
    seconds: float          # wall time
    cpu_s: float            # rclone's own CPU time (user + system)
    out: str                # its standard output (listings)


def _last_stats(log: str) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for line in log.splitlines():
        try:
            stats = json.loads(line).get("stats", stats)
        except (ValueError, AttributeError):
            continue
    return stats


def _errors(log: str) -> str:
    """The first error rclone logged (it repeats it in its summary lines), or else what it
    printed that is not JSON (a failure before logging began), or else the log's end."""
    plain = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            plain.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            return _one_line(f"{entry.get('object', '')}: {entry.get('msg', '')}").strip(": ")
    return _one_line("; ".join(plain) or log[-300:])


def _one_line(text: str) -> str:
    """An error fit for a table cell: a server's HTML error page as its words, on one line."""
    text = re.sub(r"(?is)<!DOCTYPE[^>]*>|<(head|style|script)\b.*?</\1>|<[^>]+>", " ", text)
    return " ".join(text.split()).replace("|", "/")


@dataclass(frozen=True)
class Data:
    """What the bench moves: a folder of small files and a folder of one large file."""

    small: Path
    large: Path
    trees: dict[str, Tree]   # "small", "large"


def step(rclone: Rclone, server: Server, data: Data, workload: str, remote: str,
         down: Path, clients: int = 1) -> dict[str, Any]:
    """One timed copy of ``workload``, checked; the numbers of it.  The small files go by
    ``clients`` rclone processes at once, each copying its share of the top folders."""
    kind, direction = workload.split("-")
    tree = data.trees[kind]
    local = data.small if kind == "small" else data.large
    target = f"{server.key}:{remote}/{kind}"
    ends = (str(local), target) if direction == "up" else (target, str(down))
    folders = sorted(p.name for p in local.iterdir()) if kind == "small" else []
    shares = [folders[c::clients] for c in range(min(clients, len(folders)))]
    calls: list[tuple[str, ...]] = [("copy", *ends)]
    if len(shares) > 1:
        calls = [("copy", *ends, *(f"--include=/{f}/**" for f in share)) for share in shares]
    served = tree_cpu_seconds(server.pid)
    call = rclone.run_all(calls)
    server_cpu = tree_cpu_seconds(server.pid) - served
    if call.stats.get("transfers") != tree.files:
        raise StepError(f"rclone moved {call.stats.get('transfers')} file(s), not {tree.files}")
    if direction == "down":
        got = tree_of(down)
        shutil.rmtree(down)
        if got != tree:
            raise StepError(f"the files came back different: {got.files} file(s), {got.size:,} "
                            f"bytes, digest {got.digest[:12]}, not {tree.files}, {tree.size:,}, "
                            f"{tree.digest[:12]}")
    return {"workload": workload, "seconds": call.seconds, "files": tree.files,
            "bytes": tree.size, "client_cpu_s": call.cpu_s, "server_cpu_s": server_cpu}


def measure_all(rclone: Rclone, servers: list[Server], data: Data, root: Path, repeats: int,
                workloads: tuple[str, ...], failed: dict[str, dict[str, str]],
                clients: int = 1) -> list[dict[str, Any]]:
    """``repeats`` rounds of every workload on every server, the servers taking turns at going
    first; what a server fails is recorded in ``failed`` and skipped from then on."""
    runs: list[dict[str, Any]] = []
    for run in range(repeats):
        turn = run % len(servers)
        for server in servers[turn:] + servers[:turn]:
            mine = failed.setdefault(server.key, {})
            remote = f"bench-{run}"
            for workload in workloads:
                if workload in mine or NEEDS.get(workload) in mine:
                    mine.setdefault(workload, f"skipped: {NEEDS.get(workload)} failed")
                    continue
                try:
                    result = step(rclone, server, data, workload, remote, root / "down", clients)
                except StepError as exc:
                    mine[workload] = f"run {run + 1}: {exc}"
                    click.echo(f"run {run + 1}/{repeats} {server.key:6} {workload}: {exc}", err=True)
                    continue
                runs.append({"run": run, "server": server.key, **result})
                click.echo(f"run {run + 1}/{repeats} {server.key:6} {workload:10} "
                           f"{result['seconds']:8.2f} s", err=True)
            # Untimed: what this round stored goes, so disk and quota hold every round.
            try:
                rclone.run("purge", f"{server.key}:{remote}")
            except StepError as exc:
                click.echo(f"{server.key}: could not remove {remote}: {exc}", err=True)
    return runs


@dataclass(frozen=True)
class Summary:
    """One server's numbers for one workload: medians over the rounds."""

    label: str
    workload: str
    seconds: float | None = None
    files_per_s: float | None = None
    mb_per_s: float | None = None
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    rounds: int = 0
    problems: list[str] = field(default_factory=list)


def summarize(servers: list[Server], runs: list[dict[str, Any]], workloads: tuple[str, ...],
              failed: dict[str, dict[str, str]]) -> dict[str, dict[str, Summary]]:
    out: dict[str, dict[str, Summary]] = {}
    for server in servers:
        for workload in workloads:
            mine = [r for r in runs if r["server"] == server.key and r["workload"] == workload]
            problem = failed.get(server.key, {}).get(workload)
            summary = Summary(server.label, workload, problems=[problem] if problem else [])
            if mine:
                seconds = statistics.median(r["seconds"] for r in mine)
                summary = Summary(
                    server.label, workload, seconds, mine[0]["files"] / seconds,
                    mine[0]["bytes"] / 1e6 / seconds,
                    statistics.median(r["client_cpu_s"] for r in mine),
                    statistics.median(r["server_cpu_s"] for r in mine), len(mine),
                    summary.problems)
            out.setdefault(server.key, {})[workload] = summary
    return out


def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def ratio(summary: dict[str, dict[str, Summary]], key: str, workload: str) -> float | None:
    """``key``'s rate over Apache's for ``workload`` (above 1 is faster)."""
    mine = summary.get(key, {}).get(workload)
    ref = summary.get("apache", {}).get(workload)
    if mine is None or ref is None or mine.seconds is None or not ref.seconds:
        return None
    return ref.seconds / mine.seconds   # the same bytes: the rates' ratio is the times' inverse


def table(summary: dict[str, dict[str, Summary]]) -> str:
    """The markdown table: a row per server and workload, each rate beside its multiple of
    Apache's."""
    lines = ["| server | workload | median s | files/s | MB/s | × Apache "
             "| CPU s: rclone, server | problems |",
             "|---|---|--:|--:|--:|--:|--:|---|"]
    for key, rows in summary.items():
        for workload, s in rows.items():
            got = ratio(summary, key, workload)
            lines.append(" | ".join([
                f"| {s.label}", workload, _number(s.seconds, ".2f"),
                _number(s.files_per_s, ",.1f"), _number(s.mb_per_s, ",.1f"),
                _number(got, ".2f"),
                f"{_number(s.client_cpu_s, '.1f')}, {_number(s.server_cpu_s, '.1f')}",
                "; ".join(s.problems) or "none"]) + " |")
    return "\n".join(lines)


def aim_lines(summary: dict[str, dict[str, Summary]], files: int, large: int) -> list[str]:
    out = []
    for kind, aim, unit, full in (("large", AIM_LARGE, "MB/s", "1 GiB"),
                                  ("small", AIM_SMALL, "files/s", "1,000 files")):
        got = {d: ratio(summary, "ours", f"{kind}-{d}") for d in ("up", "down")}
        head = f"Aim (issue 20): {kind} files at ≥ {aim:g}× Apache's {unit}:"
        if None in got.values():
            out.append(f"{head} not measured.")
            continue
        met = all(v is not None and v >= aim for v in got.values())
        troubled = any(summary[k][f"{kind}-{d}"].problems for k in summary for d in ("up", "down")
                       if f"{kind}-{d}" in summary[k])
        this, usual = ((f"{large:,} bytes", large == 1 << 30) if kind == "large"
                       else (f"{files:,} files", files == 1000))
        note = "" if usual else f" (the aim is for {full}; this run: {this})"
        out.append(f"{head} up {got['up']:.2f}×, down {got['down']:.2f}×, "
                   f"{'met' if met else '**missed**'}{note}"
                   f"{' (some rounds failed: see problems)' if troubled else ''}.")
    return out


def parse_only(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown or not names:
        raise click.BadParameter(f"name servers among {', '.join(SERVERS)}; got {value!r}")
    return [s for s in SERVERS if s in names]


def start_servers(stack: ExitStack, root: Path, wanted: list[str], max_body: int,
                  skipped: dict[str, str], failed: dict[str, dict[str, str]]) -> list[Server]:
    """Start the wanted servers that are installed; record why the others are not there."""
    started = []
    for key in wanted:
        try:
            if key == "apache":
                binary = apache_binary()
                if binary is None:
                    skipped[key] = NO_APACHE
                else:
                    started.append(start_apache(stack, root / "apache", binary, max_body))
            elif not dav_importable():
                skipped[key] = NO_DAV
            else:
                started.append(start_ours(stack, root / "ours"))
        except ServerError as exc:
            failed[key] = {"start": f"did not start: {exc}"}
        if key in skipped or key in failed:
            click.echo(f"{key}: {skipped.get(key) or failed[key]['start']}", err=True)
    return started


def make_data(root: Path, files: int, large: int, seed: int) -> Data:
    make_small(root / "small", files, seed)
    make_large(root / "large" / "large.bin", large, seed)
    trees = {"small": tree_of(root / "small"), "large": tree_of(root / "large")}
    return Data(root / "small", root / "large", trees)


@click.command()
@click.option("--files", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Small files (1 to 8 KiB) copied up and down.")
@click.option("--large-size", default="1GiB", show_default=True, callback=parse_size,
              help="Bytes of the large file (1GiB, 64MiB, 4096 ...).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Rounds of every step; the table shows medians.")
@click.option("--only", default=",".join(SERVERS), show_default=True, callback=parse_only,
              help="The servers to measure, comma-separated.")
@click.option("--transfers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="rclone's parallel transfers (its default is 4).")
@click.option("--clients", default=1, show_default=True, type=click.IntRange(1, 10),
              help="rclone processes copying the small files at once, each its share of the "
              "10 top folders (one rclone's WebDAV client makes at most ~100 requests/s).")
@click.option("--seed", default=20, show_default=True, type=int,
              help="Makes the files: the same seed, the same bytes.")
@click.option("--time-limit", default=1800.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds one rclone call may take before it is stopped and reported.")
@click.option("--json", "as_json", is_flag=True, help="Print every number as JSON instead.")
def main(files: int, large_size: int, repeats: int, only: list[str], transfers: int,
         clients: int, seed: int, time_limit: float, as_json: bool) -> None:
    """Copy small files and one large file up and down through WebDAV, with rclone, on
    Apache's mod_dav and on ours."""
    stop_cleanly_on_sigterm()
    binary = shutil.which("rclone")
    if binary is None:
        raise click.ClickException(NO_RCLONE)
    skipped: dict[str, str] = {}
    failed: dict[str, dict[str, str]] = {}
    # stdout is for the table or the JSON alone: what the cloud's helpers print on a
    # failure (its processes' logs) goes to stderr with the progress lines.
    with (redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-dav-") as tmp,
          ExitStack() as stack):
        root = Path(tmp)
        root.chmod(0o711)  # Apache's workers (nobody, when we are root) reach their directory
        servers = start_servers(stack, root, only, large_size + (1 << 20), skipped, failed)
        if not servers:
            raise click.ClickException("no server to measure: " + "; ".join(
                f"{k}: {v}" for k, v in {**skipped, **{k: v["start"] for k, v in
                                                       failed.items()}}.items()))
        data = make_data(root / "data", files, large_size, seed)
        rclone = Rclone.for_servers(binary, root, servers, transfers, time_limit)
        runs = measure_all(rclone, servers, data, root, repeats, WORKLOADS, failed, clients)
    failed = {k: v for k, v in failed.items() if v}
    summary = summarize(servers, runs, WORKLOADS, failed)
    if as_json:
        click.echo(json.dumps({
            "files": files, "small_bytes": data.trees["small"].size, "large_size": large_size,
            "repeats": repeats, "seed": seed, "transfers": transfers, "clients": clients,
            "skipped": skipped,
            "failed": failed, "runs": runs,
            "summary": {k: {w: asdict(s) for w, s in rows.items()}
                        for k, rows in summary.items()}}, indent=2))
    else:
        click.echo(table(summary))
        by = "" if clients == 1 else f" ({clients} at once for the small files)"
        click.echo(f"\n{files:,} small files ({data.trees['small'].size / 1e6:,.1f} MB, seed "
                   f"{seed}) and one file of {large_size:,} bytes, each copied up to a new "
                   f"folder and down to a new local one by `rclone copy --transfers "
                   f"{transfers}`{by}: median of {repeats} round(s), rclone's start, listings and "
                   "checks included.  × Apache: the rate over Apache's (below 1 is slower).  "
                   "Every download was compared with what went up (names and a digest).")
        for line in aim_lines(summary, files, large_size):
            click.echo(line)
        for key, why in skipped.items():
            click.echo(f"{key}: {why}")
        for key, steps in failed.items():
            if "start" in steps:
                click.echo(f"{key}: {steps['start']}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

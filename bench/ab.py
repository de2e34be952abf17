"""Before and after: ``bench.kv`` on an older revision and on this tree, runs interleaved.

    python -m bench.ab --before <git-rev> [--runs 5] [--ops 2000] [--time-limit 30]
                       [--encryption auto] [--max-slowdown 5] [--json]

Checks the revision out into a temporary ``git worktree`` (removed at the end),
then runs ``python -m bench.kv --json`` alternately in the old tree and in this
one, ``--runs`` times each (old, new, old, new, ...), so that whatever else
the machine does falls on both sides alike.  Prints, per workload, the median
ops/s and p50 latency of each side, the ratio new/old of the medians, in how
many of the interleaved pairs the new run was the slower, the spread of each
side's ops/s ((max - min) / median: the noise to judge the ratio by), and
flags every workload whose median throughput is more than ``--max-slowdown``
percent below the old one; the exit status is 1 if any is.  "New" is this tree as it is on
disk, uncommitted changes included.

Each side runs with its tree as working directory and first on PYTHONPATH, so
both the bench and the replicas it starts (``python -m shards.node``, which
inherit both) import that tree's code, not the editable install's.  Before the
first run a probe finds, as such a process would, where each side's packages
come from (printed on stderr), and the bench stops if any is outside its tree.

etcd is left out on both sides, also where it is installed: the comparison is
raftkv against itself.  Every run stops after ``--ops`` operations or
``--time-limit`` seconds per workload (bench.kv's own bounds), and is stopped
with SIGTERM, which lets it stop its cluster, if it outlives a deadline
computed from those bounds.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from .common import stop_cleanly_on_sigterm

CURRENT_TREE = Path(__file__).resolve().parents[1]
# Packages whose origin decides what is measured: the bench itself, its cluster helper,
# and what the replicas and the client run.
PROBED = ("bench.kv", "tests.cluster", "raftkv", "shards")
# Finds each module as an import would, without running it.
PROBE = ("import importlib.util, json, sys\n"
         "print(json.dumps({name: importlib.util.find_spec(name).origin "
         "for name in sys.argv[1:]}))\n")
# bench.kv without etcd, whatever the revision: older ones have no flag for it, so the
# launcher hides the binary before running the module as ``python -m bench.kv`` would.
RUN_KV = ("import runpy, sys\n"
          "import bench.etcd\n"
          "bench.etcd.etcd_binary = lambda: None\n"
          "sys.argv[0] = 'bench.kv'\n"
          "runpy.run_module('bench.kv', run_name='__main__', alter_sys=True)\n")
WORKLOAD_BOUND = 20.0   # seconds a workload may add to --time-limit (bench.kv's straggler: 15)
STARTUP_BOUND = 120.0   # seconds to start and stop a cluster and preload it
MAX_WORKLOADS = 12      # bench.kv has 6; the deadline allows for twice as many
SIGTERM_GRACE = 30.0    # seconds a run has to stop its cluster after SIGTERM


class ABError(click.ClickException):
    """The comparison cannot be made: a bad revision, or a run that failed."""


@dataclass(frozen=True)
class Side:
    name: str   # "before" or "after"
    label: str  # which code: a short commit id, with "+ uncommitted changes" if so
    tree: Path


@dataclass(frozen=True)
class Comparison:
    workload: str
    before_ops_per_s: float
    after_ops_per_s: float
    before_p50_ms: float
    after_p50_ms: float
    ratio: float          # median after / median before ops/s
    before_spread: float  # (max - min) / median of the before runs' ops/s: the noise
    after_spread: float
    slower_pairs: int     # interleaved pairs in which the after run had fewer ops/s
    pairs: int
    errors: int           # failed operations over every run of both sides
    flagged: bool         # ratio below 1 - max_slowdown


def git(*args: str, cwd: Path = CURRENT_TREE) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ABError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def worktree_of(revision: str, repo: Path = CURRENT_TREE) -> Iterator[Path]:
    """A temporary checkout of ``revision``, removed (with git's record of it) at the end."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", cwd=repo)
    except ABError:
        raise ABError(f"{revision!r} names no commit of {repo}") from None
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        tree = Path(tmp) / f"before-{commit[:10]}"
        git("worktree", "add", "--detach", str(tree), commit, cwd=repo)
        try:
            yield tree
        finally:
            git("worktree", "remove", "--force", str(tree), cwd=repo)
            git("worktree", "prune", cwd=repo)


def side_env(tree: Path) -> dict[str, str]:
    """The environment that makes Python, and every process it starts, import ``tree``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONSAFEPATH", None)  # it would drop the working directory from sys.path
    return env


def origins(tree: Path, modules: Sequence[str] = PROBED) -> dict[str, str]:
    """Where ``modules`` are imported from by a Python started as the bench starts its own."""
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=tree, env=side_env(tree),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ABError(f"cannot import {', '.join(modules)} in {tree}:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def check_origins(side: Side) -> dict[str, str]:
    """Where ``side``'s probed packages come from; ABError if one is outside its tree."""
    found = origins(side.tree)
    for module, path in found.items():
        if not Path(path).resolve().is_relative_to(side.tree.resolve()):
            raise ABError(f"{side.name}: {module} comes from {path}, not from {side.tree}")
    return found


def run_deadline(time_limit: float) -> float:
    """Seconds one bench.kv run may take, from its --time-limit per workload."""
    return STARTUP_BOUND + MAX_WORKLOADS * (time_limit + WORKLOAD_BOUND)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, which bench.kv turns into stopping its cluster; SIGKILL if that hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=SIGTERM_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def run_kv(side: Side, kv_args: Sequence[str], deadline: float, log: Path) -> dict[str, Any]:
    """One ``bench.kv --json`` run in ``side``'s tree; its stderr goes to ``log``."""
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", RUN_KV, "--json", *kv_args],
                                cwd=side.tree, env=side_env(side.tree),
                                stdout=subprocess.PIPE, stderr=err,
                                # Ctrl-C reaches this process only, which then stops the
                                # run once with SIGTERM (a second signal could cut short
                                # the run's own clean-up and leave replicas behind).
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=deadline)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise ABError(f"bench.kv in the {side.name} tree ran past its deadline "
                          f"({deadline:g} s) and was stopped; its log:\n"
                          f"{log.read_text(errors='replace')[-3000:]}") from None
        except BaseException:  # Ctrl-C or our own SIGTERM: stop its cluster too
            stop(proc)
            raise
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise ABError(f"bench.kv failed in the {side.name} tree (exit {proc.returncode}):\n{tail}")
    return dict(json.loads(out))


def spread(numbers: list[float]) -> float:
    middle = statistics.median(numbers)
    return (max(numbers) - min(numbers)) / middle if middle else float("nan")


def compare(runs: dict[str, list[dict[str, Any]]], max_slowdown: float) -> list[Comparison]:
    """Per workload both sides ran, medians and the new/old ratio, from bench.kv's JSON."""
    def numbers(side: str, workload: str, key: str) -> list[float]:
        return [float(m[key]) for output in runs[side] for m in output["runs"]
                if m["system"] == "raftkv" and m["workload"] == workload]

    names = [m["workload"] for m in runs["after"][0]["runs"] if m["system"] == "raftkv"]
    table = []
    for name in dict.fromkeys(names):
        before, after = numbers("before", name, "ops_per_s"), numbers("after", name, "ops_per_s")
        if not before or not after:
            continue
        ratio = (statistics.median(after) / statistics.median(before)
                 if statistics.median(before) else float("nan"))
        table.append(Comparison(
            workload=name,
            before_ops_per_s=statistics.median(before), after_ops_per_s=statistics.median(after),
            before_p50_ms=statistics.median(numbers("before", name, "p50_ms")),
            after_p50_ms=statistics.median(numbers("after", name, "p50_ms")),
            ratio=ratio, before_spread=spread(before), after_spread=spread(after),
            slower_pairs=sum(a < b for b, a in zip(before, after, strict=False)),
            pairs=min(len(before), len(after)),
            errors=int(sum(numbers("before", name, "errors") + numbers("after", name, "errors"))),
            flagged=not ratio >= 1 - max_slowdown / 100))
    return table


def render(table: list[Comparison], before: Side, after: Side, runs: int,
           max_slowdown: float) -> str:
    lines = [f"old: {before.label}; new: this tree, {after.label}\n",
             "| workload | old ops/s | new ops/s | new/old | new slower in "
             "| old spread | new spread | old p50 ms | new p50 ms | |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for c in table:
        flag = f"**> {max_slowdown:g}% slower**" if c.flagged else ""
        lines.append(f"| {c.workload} | {c.before_ops_per_s:,.0f} | {c.after_ops_per_s:,.0f} "
                     f"| {c.ratio:.3f} | {c.slower_pairs}/{c.pairs} | {c.before_spread:.0%} "
                     f"| {c.after_spread:.0%} | {c.before_p50_ms:.2f} "
                     f"| {c.after_p50_ms:.2f} | {flag} |")
    errors = sum(c.errors for c in table)
    lines.append(f"\nMedians of {runs} interleaved run(s) per side of `python -m bench.kv` "
                 f"(raftkv alone); spread = (max - min) / median of a side's ops/s; "
                 f"{errors} failed operations.")
    return "\n".join(lines)


def interleaved(revision: str, runs: int, kv_args: Sequence[str],
                time_limit: float) -> tuple[Side, Side, dict[str, list[dict[str, Any]]]]:
    """``runs`` runs of bench.kv on ``revision`` and on this tree, taking turns: the two
    sides and each side's outputs (``kv_args`` go to every run; ``time_limit`` is its
    --time-limit, which bounds each run)."""
    dirty = bool(git("status", "--porcelain"))
    after = Side("after", git("rev-parse", "--short", "HEAD")
                 + (" + uncommitted changes" if dirty else ""), CURRENT_TREE)
    with (worktree_of(revision) as old_tree,
          tempfile.TemporaryDirectory(prefix="bench-ab-log-") as logs):
        before = Side("before", git("rev-parse", "--short", "HEAD", cwd=old_tree), old_tree)
        for side in (before, after):
            for module, path in check_origins(side).items():
                click.echo(f"{side.name}: {module} from {path}", err=True)
        outputs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for run in range(runs):
            for side in (before, after):
                click.echo(f"run {run + 1}/{runs}: {side.name} ({side.label})", err=True)
                outputs[side.name].append(run_kv(side, kv_args, run_deadline(time_limit),
                                                 Path(logs) / f"{side.name}.log"))
    return before, after, outputs


@click.command()
@click.option("--before", "revision", required=True,
              help="The git revision to compare this tree with (a commit, branch, HEAD~1...).")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 50),
              help="bench.kv runs per side, interleaved.")
@click.option("--ops", default=2000, show_default=True, type=click.IntRange(min=1),
              help="bench.kv --ops: operations per workload and run.")
@click.option("--time-limit", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="bench.kv --time-limit: seconds per workload and run.")
@click.option("--encryption", type=click.Choice(["auto", "always"]), default="auto",
              show_default=True, help="bench.kv --encryption.")
@click.option("--max-slowdown", default=5.0, show_default=True, type=click.FloatRange(0, 100),
              help="Flag a workload whose median ops/s is this many percent below the old one.")
@click.option("--json", "as_json", is_flag=True, help="Print every run and the comparison as JSON.")
def main(revision: str, runs: int, ops: int, time_limit: float, encryption: str,
         max_slowdown: float, as_json: bool) -> None:
    """Compare bench.kv on an older revision with this tree, runs interleaved."""
    stop_cleanly_on_sigterm()
    kv_args = ["--ops", str(ops), "--time-limit", str(time_limit), "--encryption", encryption]
    before, after, outputs = interleaved(revision, runs, kv_args, time_limit)
    table = compare(outputs, max_slowdown)
    if as_json:
        click.echo(json.dumps({"before": before.label, "revision": revision, "runs": runs,
                               "kv_args": kv_args, "max_slowdown": max_slowdown,
                               "outputs": outputs, "comparison": [asdict(c) for c in table]},
                              indent=2))
    else:
        click.echo(render(table, before, after, runs, max_slowdown))
    if any(c.flagged for c in table):
        sys.exit(1)


if __name__ == "__main__":
    main()

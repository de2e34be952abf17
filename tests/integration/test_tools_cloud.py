"""`raftcloud up`, the README's Operations block and `raftcloud down`, as a new user runs
them in a checkout; a second `up` over a running cloud (docs/operations.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.running import running
from shards.cliopts import ExitCode

from .._procs import Proc, free_port, python_cmd, wait_for
from ..cluster import launched

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def operations_block(which: int = 0) -> str:
    """The README's Operations section's first shell block (``which=1``: the restore's)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operations\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    return str(blocks[which])


def tool_env() -> dict[str, str]:
    """Our code first, and no cluster named: the tools must find the checkout's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCLOUD_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def make_checkout(root: Path) -> Path:
    """A checkout: deploy/local.toml on fresh ports with the store and the control API only
    (the apps add nothing to what the tools do, and seconds to the start), and a .venv whose
    activate script puts raftkv-ctl and raftcloud of this code on PATH."""
    local = (ROOT / "deploy" / "local.toml").read_text()
    local = local[:local.index("[[frontend]]")]
    local = re.sub(r"127\.0\.0\.1:\d+", lambda _: f"127.0.0.1:{free_port()}", local)
    (root / "deploy").mkdir(parents=True)
    (root / "deploy" / "local.toml").write_text(local)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool, module in (("raftkv-ctl", "shards.cli"), ("raftcloud", "deploy.launcher")):
        (bin_dir / tool).write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    return root


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def checkout_cloud(tmp_path: Path) -> Iterator[tuple[Path, Proc]]:
    """`raftcloud up` as `make up` runs it: in the checkout, no options."""
    root = make_checkout(tmp_path / "checkout")
    up = Proc("up", python_cmd("deploy.launcher", "up"), tmp_path, cwd=root)
    up.env = tool_env()
    up.start()
    try:
        wait_for(lambda: "raftcloud is ready" in up.log() or not up.alive, 90, "the cloud")
        assert up.alive, up.log()
        yield root, up
    except BaseException:
        for log in sorted((root / "var" / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        print(up.log())
        raise
    finally:
        up.stop(timeout=30)


def test_the_readme_operations_block_runs_in_a_checkout(checkout_cloud) -> None:
    """Pasted into a shell in the checkout, with no variable set: every line works, and
    `raftcloud down` returns only once the launcher and its replicas are gone."""
    root, up = checkout_cloud
    assert up.popen is not None
    replicas = children(up.popen.pid)
    assert len(replicas) == 9
    script = "set -e\n" + operations_block()
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], cwd=root, env=tool_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"value": "hello"' in result.stdout and "configuration 2" in result.stdout
    assert "raftcloud: stopped" in result.stdout
    # down has waited: the launcher has exited (it is only not reaped yet), with its replicas.
    assert up.popen is not None and not running(up.popen.pid), "down returned before the exit"
    assert up.popen.wait(0) == 0
    assert not [p for p in replicas if running(p)]
    assert time.monotonic() - started < 120
    restore_from_the_readme(root)


def restore_from_the_readme(root: Path) -> None:
    """The README's restore block, after the first one saved a backup and stopped the cloud:
    the restored cluster, started as it says, holds what the first block wrote."""
    lines = operations_block(1).strip().splitlines()
    start = lines.pop()
    assert start.startswith("raftcloud up --data-dir restored"), start
    # In the same shell as the first block, which activated the venv.
    script = "set -e\n. .venv/bin/activate\n" + "\n".join(lines)
    result = subprocess.run(["bash", "-c", script], cwd=root,
                            env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored" in result.stdout and (root / "restored").is_dir()
    env = {**tool_env(), "RAFTCLOUD_SECRET_FILE": "var/cluster.secret"}
    up = Proc("restored", python_cmd("deploy.launcher", "up", "--data-dir", "restored"),
              root.parent, cwd=root)
    up.env = env
    up.start()
    try:
        wait_for(lambda: "raftcloud is ready" in up.log() or not up.alive, 90, "the restored cloud")
        assert up.alive, up.log()
        got = subprocess.run(["bash", "-c", ". .venv/bin/activate\nraftkv-ctl get greeting en --json"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=60)
        assert '"value": "hello"' in got.stdout, got.stdout + got.stderr
    except BaseException:
        print(up.log())
        raise
    finally:
        up.stop(timeout=30)


def test_up_refuses_over_a_running_cloud(tmp_path: Path) -> None:
    """The same data dir: refused by its lock, naming the pid; another data dir on the same
    ports: refused by the ports, naming the running launcher.  Nothing is started, and the
    running cloud goes on."""
    extra = f'\n[control]\nlocal = "127.0.0.1:{free_port()}"\n'
    with launched(tmp_path, extra) as (launcher, config, data):
        assert launcher.popen is not None
        pid = str(launcher.popen.pid)
        for data_dir in (data, tmp_path / "other"):
            started = time.monotonic()
            again = subprocess.run(python_cmd("deploy.launcher", "up", "--config", str(config),
                                              "--data-dir", str(data_dir)),
                                   capture_output=True, text=True, timeout=60, env=tool_env())
            assert again.returncode == ExitCode.RUNNING, again.stderr
            assert f"pid {pid}" in again.stderr and "ready" not in again.stdout
            assert "Traceback" not in again.stderr and len(again.stderr.splitlines()) == 1
            assert time.monotonic() - started < 10
        assert "in use" in again.stderr and str(data) in again.stderr
        assert launcher.alive
        status = subprocess.run(python_cmd("deploy.launcher", "status", "--config", str(config),
                                           "--data-dir", str(data)),
                                capture_output=True, text=True, timeout=60, env=tool_env())
        assert status.returncode == 0 and status.stdout.count(" up ") == 3, status.stdout

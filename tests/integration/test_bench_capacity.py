"""bench.capacity at a tiny size: it takes every measurement on a real group, and it
cleans up after itself -- Ctrl-C in the middle of a fill stops every replica it
started and removes their data directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ab import CURRENT_TREE
from raftkv import Client
from raftkv.cluster import load_cluster

from .._procs import wait_for

pytestmark = pytest.mark.cluster


def processes_under(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (the bench's replicas)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile
                continue
            if any(str(path).encode() in arg for arg in argv):
                found.append(int(entry.name))
    return found


def test_a_tiny_run_takes_every_measurement_and_leaves_nothing_behind(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.capacity", "--sizes", "0.002",
                           "--snapshot-entries", "20", "--dir", str(tmp_path), "--json",
                           "--step-timeout", "60", "--fill-timeout", "60"],
                          cwd=CURRENT_TREE, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [] and processes_under(tmp_path) == []
    sizes = json.loads(done.stdout)["sizes"]
    assert [r["cells"] for r in sizes] == [196]  # 2 MB of 10 KiB values
    for r in sizes:
        stored = r["cells"] * 10240
        assert all(0 < m["RssAnon"] < m["VmRSS"] for m in r["memory_after_fill"].values())
        # Every replica wrote a snapshot holding every value, and compacted its log.
        for replica in r["snapshot"]["per_replica"].values():
            assert replica["snapshot_bytes"] > stored and replica["log_entries_after"] < 20
            assert 0 < replica["seconds"] < 60
        assert all(mb * 1e6 > stored for mb in r["disk_mb"].values())
        for how, restarted in r["restart"].items():
            assert 0 < restarted["up_s"] <= restarted["caught_up_s"], how
        caught = r["catch_up"]
        assert caught["replica"] != caught["watcher"] and "error" not in caught
        # The wiped follower was sent the leader's snapshot.
        assert 0 < caught["snapshot_installed_s"] <= caught["caught_up_s"]
        assert caught["snapshot_bytes"] > stored and caught["watcher_gap_after_s"] > 0


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_the_fill_stops_every_replica_and_removes_the_data(tmp_path: Path) -> None:
    bench = subprocess.Popen([sys.executable, "-m", "bench.capacity", "--sizes", "1",
                              "--dir", str(tmp_path), "--step-timeout", "30",
                              "--fill-timeout", "60"],
                             cwd=CURRENT_TREE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             # As a shell's foreground command: a test run started in the
                             # background of a non-interactive shell ignores SIGINT, and
                             # every child inherits that (Python then never installs
                             # KeyboardInterrupt), so Ctrl-C would never reach the bench.
                             preexec_fn=_sigint_as_in_a_terminal)
    try:
        cluster_file = wait_for(lambda: next(tmp_path.glob("*/cluster.toml"), None), 30,
                                "the bench to write its cluster file")
        group = load_cluster(cluster_file).groups[0]
        with Client([r.client for r in group.replicas], load_cluster(cluster_file).secret) as client:
            wait_for(lambda: any(s.get("cells", 0) > 100 for s in client.status()), 60,
                     "the fill to begin")
        replicas = [pid for pid in processes_under(tmp_path) if pid != bench.pid]
        assert len(replicas) == 3
        bench.send_signal(signal.SIGINT)  # what Ctrl-C sends to the bench alone
        _, err = bench.communicate(timeout=60)
        assert bench.returncode != 0, err.decode(errors="replace")[-2000:]
        left = [pid for pid in replicas if Path(f"/proc/{pid}").exists()]
        assert not left and processes_under(tmp_path) == [], err.decode(errors="replace")[-2000:]
        assert list(tmp_path.iterdir()) == []
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        for pid in processes_under(tmp_path):  # replicas this test started, if it failed
            if pid == bench.pid:
                continue
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)

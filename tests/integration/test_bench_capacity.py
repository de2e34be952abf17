"""bench.capacity cleans up after itself: Ctrl-C in the middle of a fill stops every
replica it started and removes their data directories."""

from __future__ import annotations

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


def test_ctrl_c_during_the_fill_stops_every_replica_and_removes_the_data(tmp_path: Path) -> None:
    bench = subprocess.Popen([sys.executable, "-m", "bench.capacity", "--sizes", "1",
                              "--dir", str(tmp_path), "--step-timeout", "30",
                              "--fill-timeout", "60"],
                             cwd=CURRENT_TREE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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

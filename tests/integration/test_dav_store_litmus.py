"""Debian's litmus against a WsgiDAV app whose locks and dead properties are in a running
group: its locks and props suites (and http) pass whole.  The files are WsgiDAV's own
provider on a directory (tests/_davstore.py); the drive's provider has its own run."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from shards.model import davlocks

from .._davstore import PASSWORD, dav_app, serving
from .._procs import free_port

pytestmark = pytest.mark.cluster

SUITES = ("props", "locks", "http")


@pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus is not installed")
def test_litmus_locks_and_props_pass_on_the_store(kv_cluster, tmp_path):
    (tmp_path / "files").mkdir()
    with kv_cluster.client() as store:
        davlocks.clear(store, "alice")
        with serving(dav_app(store, tmp_path / "files"), free_port()) as url:
            run = subprocess.run(["litmus", url, "alice", PASSWORD], cwd=tmp_path,
                                 env={"TESTS": " ".join(SUITES), "PATH": "/usr/bin:/bin"},
                                 capture_output=True, text=True, timeout=300)
        davlocks.clear(store, "alice")
    summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed",
                           run.stdout)
    assert [s[0] for s in summaries] == list(SUITES), run.stdout[-3000:]
    assert all(failed == "0" for *_, failed in summaries), run.stdout[-3000:]
    assert int(summaries[1][1]) >= 40            # the locks suite ran every test

"""bench.ab's machinery with real git and real processes: the temporary worktree, and that
each side -- the bench and the processes it starts -- imports its own tree's code."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.ab import CURRENT_TREE, ABError, Side, check_origins, compare, origins, run_kv, worktree_of

pytestmark = pytest.mark.cluster

# A stand-in bench.kv: it reports whether it saw etcd, its arguments, and where a replica
# it starts the way tests/cluster.py does (sys.executable -m shards.node) imports shards from.
FAKE_KV = '''
import json, subprocess, sys
import bench.etcd
replica = subprocess.run([sys.executable, "-m", "shards.node"], capture_output=True,
                         text=True, check=True).stdout.strip()
print(json.dumps({"runs": [], "etcd": bench.etcd.etcd_binary(), "argv": sys.argv[1:],
                  "kv": __file__, "replica_shards": replica}))
'''
FAKE_NODE = "import shards\nprint(shards.__file__)\n"


def fake_tree(root: Path, kv: str = FAKE_KV) -> Path:
    for package in ("bench", "shards", "tests"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "bench" / "etcd.py").write_text("def etcd_binary():\n    return '/usr/bin/etcd'\n")
    (root / "bench" / "kv.py").write_text(kv)
    (root / "shards" / "node.py").write_text(FAKE_NODE)
    (root / "tests" / "cluster.py").write_text("")
    return root


def test_each_side_and_the_processes_it_starts_import_that_sides_tree(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "old")
    out = run_kv(Side("before", "old", tree), ["--ops", "7"], deadline=60,
                 log=tmp_path / "kv.log")
    assert Path(out["kv"]).parent == tree / "bench"
    # shards is in the editable install too: the replica must still get the old tree's.
    assert Path(out["replica_shards"]) == tree / "shards" / "__init__.py"
    assert out["etcd"] is None and out["argv"] == ["--json", "--ops", "7"]
    assert origins(tree, ["shards"]) == {"shards": str(tree / "shards" / "__init__.py")}
    assert Path(origins(CURRENT_TREE, ["shards"])["shards"]).parent == CURRENT_TREE / "shards"


def test_a_side_whose_packages_come_from_elsewhere_is_refused(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "old")
    with pytest.raises(ABError, match="raftkv comes from .*, not from"):
        check_origins(Side("before", "old", tree))  # no raftkv there: the installed one
    check_origins(Side("after", "new", CURRENT_TREE))


def test_a_failed_run_stops_the_comparison_with_its_log(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "old", kv="import sys\nsys.exit('no such option: --json')\n")
    with pytest.raises(ABError, match=r"(?s)exit 1.*no such option: --json"):
        run_kv(Side("before", "old", tree), [], deadline=60, log=tmp_path / "kv.log")


def test_a_run_past_its_deadline_gets_sigterm_and_time_to_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    kv = ("import signal, sys, time\n"
          "def stop(*_):\n"
          f"    open({str(marker)!r}, 'w').write('cleaned up')\n"
          "    sys.exit(143)\n"
          "signal.signal(signal.SIGTERM, stop)\n"
          "print('started', file=sys.stderr, flush=True)\n"
          "time.sleep(60)\n")
    tree = fake_tree(tmp_path / "old", kv=kv)
    log = tmp_path / "kv.log"
    began = time.monotonic()
    with pytest.raises(ABError, match=r"(?s)past its deadline \(3 s\).*started"):
        run_kv(Side("before", "old", tree), [], deadline=3, log=log)
    assert time.monotonic() - began < 30
    assert marker.read_text() == "cleaned up"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org",
                           *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}).stdout


def test_the_worktree_holds_the_revision_and_is_gone_afterwards(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for text in ("old\n", "new\n"):
        (repo / "file.txt").write_text(text)
        git(repo, "add", "file.txt")
        git(repo, "commit", "-q", "-m", text)
    (repo / "file.txt").write_text("uncommitted\n")
    with worktree_of("HEAD~1", repo) as tree:
        assert (tree / "file.txt").read_text() == "old\n"
        assert str(tree) in git(repo, "worktree", "list")
    assert not tree.exists() and not tree.parent.exists()
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert (repo / "file.txt").read_text() == "uncommitted\n"
    with pytest.raises(ABError, match="names no commit"), worktree_of("no-such-rev", repo):
        pass


def test_this_trees_bench_kv_prints_what_the_comparison_reads(tmp_path: Path) -> None:
    """A real bench.kv run (raftkv alone, few operations) through bench.ab's launcher."""
    out = run_kv(Side("after", "new", CURRENT_TREE), ["--ops", "20", "--time-limit", "5"],
                 deadline=180, log=tmp_path / "kv.log")
    assert out["etcd"] is None
    (row,) = compare({"before": [out], "after": [out]}, max_slowdown=5)[:1]
    assert row.ratio == 1 and row.before_ops_per_s > 0 and row.errors == 0
    assert {r["system"] for r in out["runs"]} == {"raftkv"} and len(out["runs"]) >= 6

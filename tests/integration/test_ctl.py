"""`raftkv-ctl` as an operator runs it: a real process against the real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shards.cliopts import ExitCode
from shards.model import registry

from ..cluster import KVCluster, write_cluster_file

pytestmark = pytest.mark.cluster


def ctl(kv_cluster, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(kv_cluster.path),
                           "--json", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60)


def test_put_get_cput_delete_status_as_json(kv_cluster) -> None:
    put = ctl(kv_cluster, "put", "ctl-row", "col", "héllo")
    assert put.returncode == 0, put.stderr
    version = json.loads(put.stdout)["version"]
    got = json.loads(ctl(kv_cluster, "get", "ctl-row", "col").stdout)
    assert got == {"found": True, "value": "héllo", "version": version}
    refused = ctl(kv_cluster, "cput", "ctl-row", "col", "new", "--if-version", str(version + 99))
    assert refused.returncode == 1 and "ConditionFailed" in refused.stderr
    assert ctl(kv_cluster, "cput", "ctl-row", "col", "new", "--old", "héllo").returncode == 0
    assert json.loads(ctl(kv_cluster, "delete", "ctl-row", "col").stdout) == {"deleted": True}
    missing = ctl(kv_cluster, "get", "ctl-row", "col")
    assert missing.returncode == 1 and json.loads(missing.stdout) == {"found": False}
    status = json.loads(ctl(kv_cluster, "status").stdout)
    assert len(status) == 3 and sum(s.get("role") == "leader" for s in status) == 1


def test_a_store_error_is_one_line_on_stderr(kv_cluster, tmp_path) -> None:
    broken = tmp_path / "no-secret.toml"
    broken.write_text(kv_cluster.path.read_text().replace('secret_file = "secret"', ""))
    result = subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(broken), "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "secret" in result.stderr


def test_nodes_and_shards(kv_cluster) -> None:
    with kv_cluster.client() as client:
        registry.register(client, kind="frontend", name="ctl-web", addr="127.0.0.1:9")
        client.put("{ctl-shard}/a", "c", b"12345")
        shard = client.shard_of("{ctl-shard}/a")
    nodes = json.loads(ctl(kv_cluster, "nodes").stdout)
    mine = next(n for n in nodes if n["name"] == "ctl-web")
    assert mine["kind"] == "frontend" and mine["alive"]
    table = json.loads(ctl(kv_cluster, "shards").stdout)
    assert len(table) == kv_cluster.cluster.shards
    row = table[shard]
    assert row["shard"] == shard and row["group"] == 1 and row["rows"] >= 1 and row["bytes"] >= 5


def test_global_options_after_the_subcommand(kv_cluster) -> None:
    result = subprocess.run([sys.executable, "-m", "shards.cli", "put", "ctl-after", "c", "v",
                             "--json", "--config", str(kv_cluster.path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] >= 1


def run_ctl(config: Path, *args: str, env: dict[str, str] | None = None
            ) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(config), *args],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def test_a_wrong_secret_is_said_at_once(kv_cluster) -> None:
    """Not after the 10 s of --timeout as OutcomeUnknown: every replica refuses the handshake."""
    result, took = run_ctl(kv_cluster.path, "put", "ctl-secret", "c", "v",
                           env={"RAFTCLOUD_SECRET": "not-the-secret-0123456789"})
    assert result.returncode == ExitCode.WRONG_SECRET, result.stderr
    assert "this cluster does not know your secret" in result.stderr
    assert "$RAFTCLOUD_SECRET" in result.stderr and len(result.stderr.splitlines()) == 1
    assert took < 5


def test_nothing_listening_is_said_at_once(tmp_path: Path) -> None:
    config = write_cluster_file(tmp_path)  # fresh ports, no replica started
    result, took = run_ctl(config, "get", "r", "c")
    assert result.returncode == ExitCode.NOT_LISTENING, result.stderr
    assert result.stderr.startswith("error: nothing listening at 127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1 and took < 5


def test_no_leader_yet(tmp_path: Path) -> None:
    """One replica of three answers: it cannot elect itself, and the error says so."""
    cluster = KVCluster(tmp_path)
    try:
        cluster.start("g1a")
        result, took = run_ctl(cluster.path, "--timeout", "2", "put", "r", "c", "v")
    finally:
        cluster.stop()
    assert result.returncode == ExitCode.NO_LEADER, result.stderr
    assert "no leader yet in group 1 (1 of 3 replicas answer)" in result.stderr
    assert "may have applied" in result.stderr and len(result.stderr.splitlines()) == 1
    assert took < 10

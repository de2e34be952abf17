"""`raftkv-ctl` as an operator runs it: a real process against the real store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shards.model import registry

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

"""deploy/: the unit file passes systemd's verifier, the compose file its schema,
and every cluster file we ship describes a cloud the launcher can start."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deploy.processes import process_specs
from raftkv.cluster import load_cluster
from shards.control import control_addresses

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def test_the_host_unit_passes_systemd_analyze_verify(tmp_path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    unit = (DEPLOY / "systemd" / "raftcloud@.service").read_text()
    assert "/opt/raftcloud/venv/bin/raftcloud" in unit
    # Verify the unit as installed here: our venv's raftcloud instead of /opt's.
    rendered = tmp_path / "raftcloud@store1.service"
    rendered.write_text(unit.replace("/opt/raftcloud/venv/bin", str(VENV_BIN)))
    done = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and rendered.name not in done.stderr, done.stderr


def test_the_compose_file_passes_the_compose_spec_schema() -> None:
    checker = VENV_BIN / "check-jsonschema"
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec",
                           str(DEPLOY / "compose.yaml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["local.toml", "compose.toml"])
def test_shipped_cluster_files_describe_a_startable_cloud(name, tmp_path) -> None:
    cluster = load_cluster(DEPLOY / name, secret=b"x" * 32)
    hosts = {spec.host for spec in process_specs(cluster, DEPLOY / name, tmp_path, None)}
    assert hosts <= set(control_addresses(cluster)), "every host needs a control address"
    for host in hosts:
        specs = process_specs(cluster, DEPLOY / name, tmp_path, host)
        assert specs and all(spec.host == host for spec in specs)
        # No two processes of one host listen on one port.
        ports = Counter(spec.addr.rsplit(":", 1)[1] for spec in specs)
        assert max(ports.values()) == 1, ports
    kinds = Counter(spec.kind for spec in process_specs(cluster, DEPLOY / name, tmp_path, None))
    assert kinds["storage"] == 6 and kinds["frontend"] == 2
    assert kinds["smtpd"] == 1 and kinds["balancer"] == 1 and kinds["config"] == 3
    assert kinds["imapd"] == 1

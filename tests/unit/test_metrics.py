"""raftkv.metrics: the /metrics listener serves that path only, the [metrics] table and
the targets it places, and a scrape configuration Debian's promtool accepts."""

from __future__ import annotations

import http.client
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from raftkv.errors import ConfigError
from raftkv.metrics import base_port, scrape_config, serve_metrics, targets

from .._procs import free_port


def _get(addr: str, path: str, method: str = "GET") -> tuple[int, str, str]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_the_listener_serves_get_metrics_only() -> None:
    registry = CollectorRegistry()
    Counter("unit_things", "Things counted.", registry=registry).inc(3)
    addr = f"127.0.0.1:{free_port()}"
    server = serve_metrics(addr, registry)
    try:
        status, ctype, body = _get(addr, "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=")
        assert "unit_things_total 3.0" in body
        status, _, body = _get(addr, "/")
        assert status == 404 and "unit_things" not in body
        assert _get(addr, "/metrics/../x")[0] == 404
        assert _get(addr, "/metrics", "POST")[0] == 501  # http.server: no do_POST
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_table_and_the_targets_it_places() -> None:
    assert base_port({}, None) is None
    assert base_port({}, 9100) == 9100
    assert base_port({"base_port": 9300}, 9100) == 9300
    for bad in ({"base_port": "9300"}, {"base_port": 0}, {"base_port": True}, {"port": 1}):
        with pytest.raises(ConfigError):
            base_port(bad, None)
    found = targets([("g1a", "storage", "127.0.0.1:7211"), ("web1", "frontend", "10.0.0.2:80")],
                    9300)
    assert [(t.name, t.kind, t.addr) for t in found] == [
        ("g1a", "storage", "127.0.0.1:9300"), ("web1", "frontend", "10.0.0.2:9301")]
    with pytest.raises(ConfigError):
        targets([("a", "storage", "h:1"), ("b", "storage", "h:2")], 65535)


def test_promtool_accepts_the_scrape_configuration(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian package prometheus)")
    path = tmp_path / "prometheus.yml"
    path.write_text(scrape_config(targets([("g1a", "storage", "127.0.0.1:7211"),
                                           ("smtpd", "smtpd", "127.0.0.1:2525")], 9300), 2))
    done = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"127.0.0.1:9301"' in path.read_text() and "process: \"smtpd\"" in path.read_text()

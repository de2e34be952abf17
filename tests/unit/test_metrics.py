"""raftkv.metrics: the /metrics listener serves that path only, the [metrics] table and
the targets it places, a scrape configuration Debian's promtool accepts, and a replica's
status read as series at scrape time."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

import balancer.metrics  # noqa: F401 - defines the balancer's metrics in REGISTRY
import portal.metrics  # noqa: F401 - and the portal's
import shards.reconfig  # noqa: F401 - and the reconfigurer's
import smtpd.metrics  # noqa: F401 - and smtpd's
from deploy.launcher import _with_metrics
from deploy.processes import process_specs
from raftkv.cluster import load_cluster
from raftkv.errors import ConfigError
from raftkv.metrics import (
    DEFAULT_BASE_PORT,
    METRICS_ADDR_ENV,
    SCRAPE_FILE,
    base_port,
    scrape_config,
    serve_metrics,
    targets,
)
from raftkv.replica_metrics import (
    KEEPER_COUNTERS,
    KEEPER_GAUGES,
    REQUESTS,
    STATUS_GAUGES,
    ReplicaCollector,
    Tally,
)

from .._procs import free_port
from ..cluster import write_cluster_file

ROOT = Path(__file__).resolve().parents[2]


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
        assert "unit_things_total 3.0" in body and "unit_things_created" not in body
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


def test_a_replicas_status_becomes_series_at_scrape_time() -> None:
    status = {"group": 2, "role": "leader", "term": 7, "commit_index": 40, "applied_index": 39,
              "has_quorum": True, "chunks_repaired": 3, "blob_bytes": 1000,
              "tick_stalls": {"longest": 0.3, "seconds": 1.5,
                              "buckets": {"0.05": 10, "0.25": 2, "inf": 1}}}
    registry = CollectorRegistry()
    registry.register(ReplicaCollector(lambda: status))
    value = registry.get_sample_value
    assert value("raftkv_raft_role", {"group": "2", "role": "leader"}) == 1.0
    assert value("raftkv_raft_role", {"group": "2", "role": "follower"}) == 0.0
    assert value("raftkv_term", {"group": "2"}) == 7.0
    assert value("raftkv_applied_index", {"group": "2"}) == 39.0
    assert value("raftkv_blob_chunks_repaired_total", {"group": "2"}) == 3.0
    assert value("raftkv_blob_keeper_blob_bytes", {"group": "2"}) == 1000.0
    assert value("raftkv_tick_gap_seconds_bucket", {"group": "2", "le": "0.25"}) == 12.0
    assert value("raftkv_tick_gap_seconds_count", {"group": "2"}) == 13.0
    status["role"] = "follower"  # read again at the next scrape
    assert value("raftkv_raft_role", {"group": "2", "role": "leader"}) == 0.0


def _exported_series() -> set[str]:
    """Every series name a process may export: the metrics the replica, the portal,
    smtpd, the balancer and the reconfigurer define, and what the replica's collector
    makes of a full status."""
    status = {"group": 1, "role": "leader", "has_quorum": True, **dict.fromkeys(STATUS_GAUGES, 1),
              **dict.fromkeys(KEEPER_COUNTERS + KEEPER_GAUGES, 1),
              "tick_stalls": {"seconds": 1.0, "buckets": {"0.25": 1, "inf": 1}}}
    names = set()
    for family in [*REGISTRY.collect(), *ReplicaCollector(lambda: status).collect()]:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_the_dashboard_queries_only_series_we_export_in_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 15
    exported = _exported_series()
    for expr in exprs:
        used = set(re.findall(r"\b((?:raftkv|shards|portal|smtpd|balancer)_[a-z_]+)", expr))
        assert used and used <= exported, f"{expr}: {used - exported} exported by nobody"
    # promtool checks PromQL inside recording rules: one rule per query.
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:q{n}\n        expr: {json.dumps(expr)}\n"
        for n, expr in enumerate(exprs)))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian package prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_up_turns_metrics_on_with_the_flag_or_the_table(tmp_path: Path) -> None:
    cluster = load_cluster(write_cluster_file(tmp_path / "cfg", groups=1))
    specs = process_specs(cluster, tmp_path / "cfg" / "cluster.toml", tmp_path, None)
    assert _with_metrics(specs, cluster, tmp_path, asked=False) == specs  # off: untouched
    assert not (tmp_path / SCRAPE_FILE).exists()
    on = _with_metrics(specs, cluster, tmp_path, asked=True)
    assert [s.env[METRICS_ADDR_ENV] for s in on] == [
        f"127.0.0.1:{DEFAULT_BASE_PORT + n}" for n in range(3)]
    assert '"127.0.0.1:9102"' in (tmp_path / SCRAPE_FILE).read_text()
    with_table = load_cluster(write_cluster_file(tmp_path / "cfg2", groups=1,
                                                 extra="\n[metrics]\nbase_port = 9500\n"))
    on = _with_metrics(specs, with_table, tmp_path, asked=False)
    assert on[2].env[METRICS_ADDR_ENV] == "127.0.0.1:9502"


def test_the_tallies_read_as_prometheus_histograms_and_counters() -> None:
    """The request path's lock-free tallies: inclusive upper bounds, cumulative buckets,
    and the exposition promtool accepts."""
    tally = Tally((0.001, 0.01))
    for value in (0.0005, 0.001, 0.002, 0.5):
        tally.observe(value)
    assert tally.buckets() == [("0.001", 2.0), ("0.01", 3.0), ("+Inf", 4.0)]
    before = REQUESTS.outcomes.get(("cput", "ConditionFailed"), 0)
    REQUESTS.observe("cput", "ConditionFailed", 0.003)
    registry = CollectorRegistry()
    registry.register(ReplicaCollector(lambda: {"group": 1}))
    value = registry.get_sample_value
    assert value("raftkv_requests_total", {"op": "cput", "outcome": "ConditionFailed"}) == before + 1
    assert value("raftkv_request_seconds_bucket", {"op": "cput", "le": "+Inf"}) >= 1
    assert value("raftkv_fsync_seconds_count") is not None
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian package prometheus)")
    done = subprocess.run([promtool, "check", "metrics"], input=generate_latest(registry),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

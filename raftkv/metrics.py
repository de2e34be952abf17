"""Prometheus metrics: every process serves its registry on ``GET /metrics``.

It lives in the lowest layer because every process kind (replicas, frontends,
smtpd, the balancer) imports it.  The exposition is prometheus_client's own; the
listener is a :class:`~raftkv.boundedhttp.BoundedHTTPServer` like every other of
the cluster's small HTTP listeners, and it serves that one path only.

Where a process listens: the launcher gives it an address in the environment
(:data:`METRICS_ADDR_ENV`), taken from the cluster file's ``[metrics]`` table
(``base_port``: the n-th process of the file listens at ``base_port + n`` on the
host of its own address) or from ``raftcloud up --metrics``; without either,
nothing listens.  The series are listed in (docs/operations.md, "Metrics").

Label values never name a user, a file, a folder or a path: routes are named by
their endpoint, operations by their registered name, outcomes by a fixed word.

A gunicorn frontend has several worker processes: each writes its samples to
files of a directory shared with the master (prometheus_client's multiprocess
mode, ``PROMETHEUS_MULTIPROC_DIR``), and the master serves their sum
(``portal/gunicorn_conf.py``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .boundedhttp import BoundedHTTPServer, BoundedRequestHandler
from .cluster import split_addr
from .errors import ConfigError

METRICS_ADDR_ENV = "RAFTCLOUD_METRICS_ADDR"  # host:port this process serves /metrics on
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name for it
METRICS_PATH = "/metrics"
DEFAULT_BASE_PORT = 9100  # ``raftcloud up --metrics`` without a [metrics] table
SCRAPE_FILE = "prometheus.yml"

# A few scrapers at most: a short head deadline and few connections (raftkv/boundedhttp.py).
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 16

# Latency buckets in seconds, from a cached read (~100 us) to a stuck request (10 s).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _MetricsHandler(BoundedRequestHandler):
    registry: CollectorRegistry

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # a scrape every few seconds is not worth a log line

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self._answer(404, b"only GET /metrics is served here\n", "text/plain; charset=utf-8")
            return
        self._answer(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_metrics(addr: str, registry: CollectorRegistry | None = None) -> BoundedHTTPServer:
    """Serve ``registry`` (by default this process's, or its workers' sum in multiprocess
    mode) on ``http://addr/metrics`` from a daemon thread; the server, to shut down."""
    # Counters' *_created series (their start times) would double every counter, and
    # Prometheus 2 stores them as unrelated gauges.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if registry is None:
        registry = REGISTRY
        if os.environ.get(MULTIPROC_DIR_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    handler = type("Handler", (_MetricsHandler,), {"registry": registry})
    server = BoundedHTTPServer(split_addr(addr), handler, head_timeout=HEAD_TIMEOUT,
                               io_timeout=HEAD_TIMEOUT, max_connections=MAX_CONNECTIONS)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


def serve_from_env(registry: CollectorRegistry | None = None) -> BoundedHTTPServer | None:
    """Serve metrics where the launcher said (:data:`METRICS_ADDR_ENV`); None when off."""
    addr = os.environ.get(METRICS_ADDR_ENV)
    return serve_metrics(addr, registry) if addr else None


# -- where each process listens, and the scrape configuration ------------------------


@dataclass(frozen=True)
class Target:
    name: str   # the process's name in the cluster file
    kind: str   # storage, config, frontend, smtpd or balancer
    addr: str   # host:port of its /metrics


def base_port(table: Mapping[str, Any], default: int | None) -> int | None:
    """The ``[metrics]`` table's base port; ``default`` when the table has none.

    :raises ConfigError: an unknown key or a port out of range.
    """
    unknown = set(table) - {"base_port"}
    if unknown:
        raise ConfigError(f"unknown key in [metrics]: {', '.join(sorted(unknown))}")
    value = table.get("base_port", default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"metrics.base_port must be a port number, got {value!r}")
    return value


def targets(processes: Sequence[tuple[str, str, str]], base: int) -> list[Target]:
    """Each process's metrics address: ``(name, kind, its own host:port)`` in the cluster
    file's order; the n-th listens at ``base + n`` on the host of its own address.

    :raises ConfigError: a port past 65535.
    """
    found = []
    for n, (name, kind, addr) in enumerate(processes):
        host, _ = split_addr(addr)
        if base + n >= 65536:
            raise ConfigError(f"metrics.base_port {base} leaves no port for process {name!r}")
        found.append(Target(name, kind, f"[{host}]:{base + n}" if ":" in host
                            else f"{host}:{base + n}"))
    return found


def scrape_config(found: Sequence[Target], interval: float = 15.0) -> str:
    """A Prometheus configuration that scrapes every target, labelled with its process
    name and kind (YAML; each string written as JSON, which YAML reads the same)."""
    seconds = f"{interval:g}s"
    lines = ["# Written by `raftcloud up`: every process of the cluster file.",
             "global:", f"  scrape_interval: {seconds}", f"  evaluation_interval: {seconds}",
             "scrape_configs:", "  - job_name: raftcloud", "    static_configs:"]
    for target in found:
        lines += [f"      - targets: [{json.dumps(target.addr)}]",
                  f"        labels: {{process: {json.dumps(target.name)}, "
                  f"kind: {json.dumps(target.kind)}}}"]
    return "\n".join(lines) + "\n"

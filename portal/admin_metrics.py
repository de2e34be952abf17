"""The admin console's live charts: every process's request count and latency.

Every process serves ``GET /metrics`` when metrics are on (``raftkv/metrics.py``):
the n-th process of the cluster file at ``base_port + n`` on its own host.  The
frontend answering knows the base port from the file's ``[metrics]`` table, or,
started by ``raftcloud up --metrics`` without one, from its own address
(``$RAFTCLOUD_METRICS_ADDR``) and its place in the file.  It fetches each
process's page, parses it with prometheus_client's parser and answers a small
JSON of running totals; ``static/admin.js`` turns two of them into a rate and
a mean latency and draws them (docs/architecture.md, "Pages": the admin console).
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from raftkv.cluster import CONFIG_GROUP_ID, ClusterConfig, split_addr
from raftkv.errors import ConfigError
from raftkv.metrics import METRICS_ADDR_ENV, METRICS_PATH, Target, base_port, targets

if TYPE_CHECKING:
    from collections.abc import Mapping

SCRAPE_TIMEOUT = 1.0           # seconds for one process's page; a silent one shows as down
SCRAPE_BYTES = 4 * 1024 * 1024  # a metrics page is tens of KiB; more is not ours
SCRAPES_AT_ONCE = 8
# The launcher's defaults for where smtpd, imapd and the balancer answer (deploy/processes.py;
# the layers keep the portal from importing it, a unit test holds them equal).
SMTPD_DEFAULTS = {"name": "smtpd", "inbound": "127.0.0.1:2525"}
IMAPD_DEFAULTS = {"name": "imapd", "listen": "127.0.0.1:2143"}
BALANCER_DEFAULTS = {"name": "balancer", "listen": "127.0.0.1:8000"}
# Per kind: the counter that counts its requests, the histogram that times them.
REQUESTS = {"frontend": "portal_http_requests_total", "storage": "raftkv_requests_total",
            "config": "raftkv_requests_total", "smtpd": "smtpd_sessions_total",
            "imapd": "imapd_commands_total",
            "balancer": "balancer_answers_total"}
LATENCY = {"frontend": "portal_http_request_seconds", "storage": "raftkv_request_seconds",
           "config": "raftkv_request_seconds"}


def processes(cluster: ClusterConfig) -> list[tuple[str, str, str]]:
    """``(name, kind, address)`` of every process of the cluster file in the launcher's
    order (deploy/processes.py, ``process_specs``), which places their metrics ports."""
    found = []
    for group in cluster.all_groups():
        kind = "config" if group.id == CONFIG_GROUP_ID else "storage"
        found += [(r.name, kind, r.client) for r in group.replicas]
    found += [(str(e["name"]), "frontend", str(e["listen"])) for e in cluster.entries("frontend")]
    found += [(str(e.get("name", SMTPD_DEFAULTS["name"])), "smtpd",
               str(e.get("inbound", SMTPD_DEFAULTS["inbound"]))) for e in cluster.entries("smtpd")]
    found += [(str(e.get("name", IMAPD_DEFAULTS["name"])), "imapd",
               str(e.get("listen", IMAPD_DEFAULTS["listen"]))) for e in cluster.entries("imapd")]
    found += [(str(e.get("name", BALANCER_DEFAULTS["name"])), "balancer",
               str(e.get("listen", BALANCER_DEFAULTS["listen"])))
              for e in cluster.entries("balancer")]
    return found


def metrics_targets(cluster: ClusterConfig, frontend: str,
                    environ: Mapping[str, str] = os.environ) -> list[Target] | None:
    """Where each process serves its metrics; None when metrics are off."""
    found = processes(cluster)
    try:
        base = base_port(cluster.table("metrics"), None)
    except ConfigError:
        return None
    own = environ.get(METRICS_ADDR_ENV)
    if base is None and own:  # `up --metrics`: our own port and place give the base
        names = [name for name, _, _ in found]
        if frontend not in names:
            return None
        base = split_addr(own)[1] - names.index(frontend)
    if base is None or base <= 0:
        return None
    try:
        return targets(found, base)
    except ConfigError:
        return None


def _scrape(addr: str) -> str | None:
    """One process's metrics page, or None if it does not answer in time."""
    try:
        with urllib.request.urlopen(f"http://{addr}{METRICS_PATH}",  # noqa: S310 - our own
                                    timeout=SCRAPE_TIMEOUT) as answer:
            return answer.read(SCRAPE_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def totals(text: str, kind: str) -> dict[str, float | None]:
    """The running totals a chart needs from one metrics page: requests answered, and
    the seconds and count of the timed ones (None where the kind has no such series)."""
    wanted = {REQUESTS.get(kind): "requests", f"{LATENCY.get(kind)}_sum": "seconds",
              f"{LATENCY.get(kind)}_count": "timed"}
    found: dict[str, float | None] = {"requests": None, "seconds": None, "timed": None}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = wanted.get(sample.name)
            if key is not None:
                found[key] = (found[key] or 0.0) + sample.value
    return found


def snapshot(found: Iterable[Target]) -> dict[str, Any]:
    """Every process's totals now, for the charts' JSON."""
    listed = list(found)
    with ThreadPoolExecutor(SCRAPES_AT_ONCE, thread_name_prefix="admin-metrics") as pool:
        pages = list(pool.map(lambda t: _scrape(t.addr), listed))
    shown = []
    for target, text in zip(listed, pages, strict=True):
        entry: dict[str, Any] = {"name": target.name, "kind": target.kind, "up": text is not None}
        if text is not None:
            try:
                entry.update(totals(text, target.kind))
            except ValueError:  # not an exposition at all: shown as down
                entry["up"] = False
        shown.append(entry)
    return {"enabled": True, "time": time.time(), "processes": shown}

"""What the launcher knows of each kind of process: how to start it, where it answers, what to print.

The cluster file places every process: the replicas in ``[config_group]`` and
``[[group]]`` (read by :mod:`raftkv.cluster`), the apps in one table per kind,
``[[frontend]]``, ``[smtpd]``, ``[imapd]`` and ``[balancer]``.  Each app's package parses its
own table whole when it starts, and refuses unknown keys there
(``portal/config.py``, ``smtpd/settings.py``, ``imapd/settings.py``,
``balancer/settings.py``); the
launcher imports none of them and reads only the keys that place and start a
process:

======================  ==========================================================
``[[frontend]]``        ``name``, ``host``, ``listen`` (gunicorn's ``--bind``),
                        ``workers`` and ``threads`` (gunicorn's, on its command line)
``[smtpd]``             ``name``, ``host``, ``inbound`` (where it answers),
                        ``hostname`` (the name its self-made certificate is for)
``[imapd]``             ``name``, ``host``, ``listen`` (where it answers), ``hostname``
                        (as smtpd's; both use the host's one certificate)
``[balancer]``          ``name``, ``host``, ``listen``
``[web]``               ``tls_cert`` and ``tls_key`` (gunicorn's ``--certfile`` and
                        ``--keyfile``: the frontends serve HTTPS themselves; the
                        balancer reads them itself)
======================  ==========================================================

A new kind of process is a table, its package's parser, and a reader here.
Process names are unique over the whole file (:func:`check_names`): they name
log files, data directories and the control API's processes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raftkv.cluster import CONFIG_GROUP_ID, ClusterConfig, split_addr
from raftkv.errors import ConfigError
from shards.site import Site

from .procs import ProcessSpec
from .tls import ensure_certificate

GUNICORN_CONF = "python:portal.gunicorn_conf"  # the portal's own module: it parses [web]

# The apps' defaults for the keys read here (smtpd/settings.py, balancer/settings.py):
# the launcher must know where a process answers without importing it.
SMTPD_DEFAULTS = {"name": "smtpd", "inbound": "127.0.0.1:2525", "hostname": ""}
IMAPD_DEFAULTS = {"name": "imapd", "listen": "127.0.0.1:2143", "hostname": ""}
BALANCER_DEFAULTS = {"name": "balancer", "listen": "127.0.0.1:8000"}

def process_specs(cluster: ClusterConfig, config_path: Path, data_dir: Path,
                  host: str | None) -> list[ProcessSpec]:
    """What runs on ``host`` (every host when None), in start order: store first.

    :raises ConfigError: a process name used twice, or a key read here that is malformed.
    """
    check_names(cluster)
    py = sys.executable
    cfg = str(config_path)
    specs: list[ProcessSpec] = []
    site = Site.of(cluster)
    tls = ([] if site.tls_cert is None or site.tls_key is None else
           ["--certfile", str(site.tls_cert), "--keyfile", str(site.tls_key)])
    for group in cluster.all_groups():
        kind = "storage" if group.id != CONFIG_GROUP_ID else "config"
        for r in group.replicas:
            specs.append(ProcessSpec(r.name, kind, r.host, r.client, [
                py, "-m", "shards.node", "--config", cfg, "--name", r.name,
                "--data-dir", str(data_dir / r.name)]))
    for entry in cluster.entries("frontend"):
        name, listen = _get(entry, "frontend", "name", str), _address(entry, "frontend", "listen")
        specs.append(ProcessSpec(name, "frontend", _host(entry, "frontend"), listen, [
            py, "-m", "gunicorn", "-c", GUNICORN_CONF, "--bind", listen,
            "--workers", str(_get(entry, "frontend", "workers", int, 2)),
            "--threads", str(_get(entry, "frontend", "threads", int, 8)),
            *tls, "--name", name, "portal:create_app()"], {"RAFTCLOUD_FRONTEND": name},
            health_path="/healthz", tls=site.serves_tls))
    for entry in cluster.entries("smtpd"):
        hostname = _get(entry, "smtpd", "hostname", str, SMTPD_DEFAULTS["hostname"])
        cert, key = ensure_certificate(data_dir / "tls", hostname or "localhost")
        specs.append(ProcessSpec(
            _get(entry, "smtpd", "name", str, SMTPD_DEFAULTS["name"]), "smtpd",
            _host(entry, "smtpd"), _address(entry, "smtpd", "inbound", SMTPD_DEFAULTS["inbound"]),
            [py, "-m", "smtpd.server", "--config", cfg,
             "--tls-cert", str(cert), "--tls-key", str(key)]))
    for entry in cluster.entries("imapd"):
        hostname = _get(entry, "imapd", "hostname", str, IMAPD_DEFAULTS["hostname"])
        cert, key = ensure_certificate(data_dir / "tls", hostname or "localhost")
        specs.append(ProcessSpec(
            _get(entry, "imapd", "name", str, IMAPD_DEFAULTS["name"]), "imapd",
            _host(entry, "imapd"), _address(entry, "imapd", "listen", IMAPD_DEFAULTS["listen"]),
            [py, "-m", "imapd.server", "--config", cfg,
             "--tls-cert", str(cert), "--tls-key", str(key)]))
    for entry in cluster.entries("balancer"):
        specs.append(ProcessSpec(
            _get(entry, "balancer", "name", str, BALANCER_DEFAULTS["name"]), "balancer",
            _host(entry, "balancer"),
            _address(entry, "balancer", "listen", BALANCER_DEFAULTS["listen"]),
            [py, "-m", "balancer.server", "--config", cfg], tls=site.serves_tls))
    return [s for s in specs if host is None or s.host == host]


def check_names(cluster: ClusterConfig) -> None:
    """:raises ConfigError: two processes of the file (replicas included) share a name."""
    names = [r.name for r in cluster.replicas()]
    names += [_get(e, "frontend", "name", str) for e in cluster.entries("frontend")]
    names += [_get(e, "smtpd", "name", str, SMTPD_DEFAULTS["name"])
              for e in cluster.entries("smtpd")]
    names += [_get(e, "imapd", "name", str, IMAPD_DEFAULTS["name"])
              for e in cluster.entries("imapd")]
    names += [_get(e, "balancer", "name", str, BALANCER_DEFAULTS["name"])
              for e in cluster.entries("balancer")]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"process name {name!r} is used twice")
        seen.add(name)


def ready_lines(specs: list[ProcessSpec]) -> list[str]:
    """What ``raftcloud up`` prints about the apps it started, once they answer."""
    def url(spec: ProcessSpec) -> str:
        return f"{'https' if spec.tls else 'http'}://{spec.addr}/"
    lines = [f"  web:        {url(s)}" for s in specs if s.kind == "balancer"]
    lines += [f"  frontend:   {url(s)}  ({s.name})" for s in specs if s.kind == "frontend"]
    lines += [f"  smtp:       {s.addr} (inbound)" for s in specs if s.kind == "smtpd"]
    lines += [f"  imap:       {s.addr} (STARTTLS)" for s in specs if s.kind == "imapd"]
    return lines


def _host(entry: Mapping[str, Any], kind: str) -> str:
    return _get(entry, kind, "host", str, "local")


def _address(entry: Mapping[str, Any], kind: str, key: str, default: str | None = None) -> str:
    addr = _get(entry, kind, key, str, default)
    split_addr(addr)
    return addr


def _get[T](entry: Mapping[str, Any], kind: str, key: str, wanted: type[T],
            default: T | None = None) -> T:
    value = entry.get(key, default)
    if value is None:
        raise ConfigError(f"every [{kind}] needs {key!r}")
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ConfigError(f"{kind}.{key} must be a {wanted.__name__}, got {value!r}")
    return value

"""The portal's configuration: a frozen dataclass, built from the environment by the entry point.

gunicorn runs ``portal:create_app()`` with

- ``RAFTCLOUD_CONFIG``: the cluster file (read with :func:`raftkv.cluster.load_cluster`,
  which also finds the secret through ``RAFTCLOUD_SECRET`` / ``RAFTCLOUD_SECRET_FILE``);
- ``RAFTCLOUD_FRONTEND``: this frontend's name in the cluster file;
- ``RAFTCLOUD_ADMIN_PASSWORD_FILE`` (optional): the first admin's password;
- ``RAFTCLOUD_DRIVE_QUOTA`` (optional): bytes of files each user may keep;
- ``RAFTCLOUD_LOAD_DIR`` (set by ``portal/gunicorn_conf.py``): where the
  workers of one frontend publish their load (:mod:`portal.load`).

This module is where the portal reads the cluster file: its ``[[frontend]]``
entry (:func:`frontend_entry`), the ``[web]`` table every frontend of a cluster
shares (:func:`web_settings`, :func:`web_listener_limits`), and through
:class:`PortalConfig` the keys it shares with the other apps
(:class:`shards.site.Site`) and the supervisors' addresses
(:func:`shards.control.control_addresses`).  ``[auth]`` and ``[mail]`` are
parsed by the shared model.

Tests build :class:`PortalConfig` directly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftkv.boundedhttp import LISTENER_KEYS, ListenerLimits, listener_limits
from raftkv.cluster import ClusterConfig, load_cluster, split_addr
from raftkv.errors import ConfigError
from shards.control import control_addresses
from shards.model.drive import DEFAULT_QUOTA
from shards.model.ratelimit import Limits
from shards.site import Site, web_scheme

from .load import LOAD_DIR_ENV
from .proxies import parse_networks

FRONTEND_ENV = "RAFTCLOUD_FRONTEND"
ADMIN_PASSWORD_FILE_ENV = "RAFTCLOUD_ADMIN_PASSWORD_FILE"
QUOTA_ENV = "RAFTCLOUD_DRIVE_QUOTA"


@dataclass(frozen=True)
class PortalConfig:
    cluster: ClusterConfig               # where the store is, the secret, the other tables
    frontend: str = "frontend"           # this frontend's name, in the registry and /healthz
    addr: str = ""                       # host:port browsers reach us at ("" = not registered)
    admin_password: str | None = None    # create site.admin_user with it if absent
    session_ttl: float = 7 * 24 * 3600   # seconds a login lasts
    session_idle: float = 2 * 24 * 3600  # seconds without a request after which a login ends
    max_upload: int = 256 * 1024 * 1024  # largest request body or file ([web] max_upload): 413
    scheme: str = "http"                 # how browsers reach us: "https" makes cookies Secure
    cookie_domain: str | None = None     # Domain of the session cookie (frontends on several hosts)
    trusted_proxies: tuple[str, ...] = ()  # addresses/CIDRs whose X-Forwarded-* we believe
    heartbeat_interval: float = 2.0      # seconds between node-registry heartbeats
    background: bool = True              # run the heartbeat thread (tests may turn it off)
    quota: int = DEFAULT_QUOTA           # bytes of files each user may keep in the drive
    listing_cache: int = 512             # folder listings each worker keeps (validated by version)
    cell_cache: int = 8192               # small cells each worker keeps (portal.pagestore)
    load_dir: str | None = None          # shared by one frontend's workers, for /healthz

    @functools.cached_property
    def site(self) -> Site:
        """Our mail domains and the first admin's name (``[cluster]``), shared with the apps."""
        return Site.of(self.cluster)

    @functools.cached_property
    def supervisors(self) -> dict[str, str]:
        """Host name -> its supervisor's control API (``[control]``), for the admin console."""
        return control_addresses(self.cluster)

    @property
    def cookie_secure(self) -> bool:
        """Mark every cookie Secure (requests that arrive over HTTPS get it regardless)."""
        return self.scheme == "https"

    @property
    def csrf_key(self) -> bytes:
        """The key CSRF tokens are made with: derived from the cluster secret, used for nothing else."""
        return self.cluster.derive_key("csrf")

    def validate(self) -> None:
        """:raises ConfigError: a value that cannot work."""
        if not self.frontend:
            raise ConfigError("the frontend needs a name")
        if min(self.session_ttl, self.session_idle, self.heartbeat_interval) <= 0:
            raise ConfigError("session_ttl, session_idle and heartbeat_interval must be positive")
        if self.max_upload < 1024:
            raise ConfigError("max_upload is too small to be useful")
        if self.admin_password is not None and len(self.admin_password) < 8:
            raise ConfigError("the admin password needs at least 8 characters")
        if self.quota < 0 or self.listing_cache < 0 or self.cell_cache < 0:
            raise ConfigError("quota, listing_cache and cell_cache cannot be negative")
        Limits.from_table(self.cluster.table("auth"))  # login and signup limits: [auth]
        _ = self.site, self.supervisors  # parsed now, so a bad value stops the start
        if self.scheme not in ("http", "https"):
            raise ConfigError(f'web.scheme must be "http" or "https", got {self.scheme!r}')
        if self.cookie_domain is not None and not _valid_cookie_domain(self.cookie_domain):
            raise ConfigError(f"web.cookie_domain is not a host name: {self.cookie_domain!r}")
        parse_networks(self.trusted_proxies)  # raises ConfigError on a bad entry

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PortalConfig:
        """Build the config the way gunicorn's workers get it: from environment variables.

        :raises ConfigError: no cluster file, an unknown frontend, an unreadable password file.
        """
        cluster = load_cluster(environ.get("RAFTCLOUD_CONFIG") or None)
        entry = frontend_entry(cluster, environ.get(FRONTEND_ENV, ""))
        try:
            quota = int(environ.get(QUOTA_ENV) or DEFAULT_QUOTA)
        except ValueError:
            raise ConfigError(f"${QUOTA_ENV} must be a number of bytes") from None
        config = cls(cluster=cluster, frontend=entry["name"], addr=entry["listen"],
                     admin_password=_read_password(environ.get(ADMIN_PASSWORD_FILE_ENV)),
                     quota=quota, load_dir=environ.get(LOAD_DIR_ENV) or None,
                     **web_settings(cluster.table("web")))
        config.validate()
        return config


# The keys of a [[frontend]] entry: the portal reads name and listen (its
# registry address); workers and threads are gunicorn's, given on its command
# line by the launcher; host tells the launcher where to run it.
FRONTEND_KEYS = frozenset({"name", "listen", "host", "workers", "threads"})


def frontend_entry(cluster: ClusterConfig, name: str) -> dict[str, str]:
    """This frontend's ``[[frontend]]`` entry: ``{"name", "listen"}``.

    Without ``name`` the file must have exactly one frontend.  Every entry is
    checked, so a typo in any of them stops every frontend's start.

    :raises ConfigError: no such entry, an unknown key, a bad name or address.
    """
    entries = []
    for entry in cluster.entries("frontend"):
        unknown = entry.keys() - FRONTEND_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) in [[frontend]]: {', '.join(sorted(unknown))}")
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("listen"), str):
            raise ConfigError("every [[frontend]] needs a name and a listen address")
        split_addr(entry["listen"])
        entries.append({"name": entry["name"], "listen": entry["listen"]})
    if name:
        matches = [e for e in entries if e["name"] == name]
        if not matches:
            raise ConfigError(f"no frontend named {name!r} in {cluster.path}")
        return matches[0]
    if len(entries) == 1:
        return entries[0]
    raise ConfigError(f"set ${FRONTEND_ENV} to this frontend's name")


def web_settings(table: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`PortalConfig` fields set by the cluster file's ``[web]`` table.

    An unknown key is an error, so a typo (``schem = "https"``) stops the
    launch instead of silently leaving cookies without ``Secure``.  A setting
    added to ``[web]`` gets a line here.  The listener's keys are checked too
    (:func:`web_listener_limits`), though the gunicorn worker is what uses them.

    :raises ConfigError: an unknown key or a value of the wrong type.
    """
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == "scheme":
            settings["scheme"] = web_scheme(value)  # the balancer's too: shards.site
        elif key in _SITE_KEYS:
            pass  # parsed by shards.site (the balancer and the launcher read them too)
        elif key == "cookie_domain":
            settings["cookie_domain"] = _string(key, value).lower() or None
        elif key == "trusted_proxies":
            if not isinstance(value, list):
                raise ConfigError("web.trusted_proxies must be a list of addresses or networks")
            settings["trusted_proxies"] = tuple(_string(key, item) for item in value)
        elif key == "max_upload":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
                raise ConfigError("web.max_upload must be a number of bytes (at least 1024)")
            settings["max_upload"] = value
        elif key in ("session_ttl", "session_idle"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"web.{key} must be a positive number of seconds")
            settings[key] = float(value)
        elif key not in LISTENER_KEYS:
            raise ConfigError(f"unknown key {key!r} in [web]")
    web_listener_limits(table)
    return settings


# [web] keys shards.site parses for every app: PortalConfig.site has them.
_SITE_KEYS = frozenset({"public_url", "tls_cert", "tls_key"})


def web_listener_limits(table: Mapping[str, Any]) -> ListenerLimits:
    """How long and how many for each gunicorn worker (:mod:`portal.worker`), from ``[web]``.

    :raises ConfigError: a value of the wrong type or out of range.
    """
    return listener_limits(table, "web")


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"web.{key} must be a string, got {value!r}")
    return value.strip()


def _valid_cookie_domain(domain: str) -> bool:
    # A cookie's Domain attribute is a host name (a leading dot is obsolete but
    # harmless); anything else would be sent to the browser as a broken header.
    labels = domain.removeprefix(".").split(".")
    return len(domain) <= 253 and all(
        label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels)


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin password file {path}: {exc}") from exc
    return password or None

"""The portal's configuration: a frozen dataclass, built from the environment by the entry point.

gunicorn runs ``portal:create_app()`` with

- ``RAFTCLOUD_CONFIG``: the cluster file (read with :func:`raftkv.cluster.load_cluster`,
  which also finds the secret through ``RAFTCLOUD_SECRET`` / ``RAFTCLOUD_SECRET_FILE``);
- ``RAFTCLOUD_FRONTEND``: this frontend's name in the cluster file;
- ``RAFTCLOUD_ADMIN_PASSWORD_FILE`` (optional): the first admin's password;
- ``RAFTCLOUD_DRIVE_QUOTA`` (optional): bytes of files each user may keep;
- ``RAFTCLOUD_LOAD_DIR`` (set by ``deploy/gunicorn.conf.py``): where the
  workers of one frontend publish their load (:mod:`portal.load`).

Tests build :class:`PortalConfig` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from raftkv.cluster import ClusterConfig, load_cluster
from raftkv.errors import ConfigError
from shards.model.drive import DEFAULT_QUOTA

from .load import LOAD_DIR_ENV

FRONTEND_ENV = "RAFTCLOUD_FRONTEND"
ADMIN_PASSWORD_FILE_ENV = "RAFTCLOUD_ADMIN_PASSWORD_FILE"
QUOTA_ENV = "RAFTCLOUD_DRIVE_QUOTA"


@dataclass(frozen=True)
class PortalConfig:
    cluster: ClusterConfig               # where the store is, the secret, the admin's name
    frontend: str = "frontend"           # this frontend's name, in the registry and /healthz
    addr: str = ""                       # host:port browsers reach us at ("" = not registered)
    admin_password: str | None = None    # create cluster.admin_user with it if absent
    session_ttl: float = 7 * 24 * 3600   # seconds a login lasts
    max_upload: int = 256 * 1024 * 1024  # largest request body; above it a 413 page
    cookie_secure: bool = False          # mark cookies Secure (only behind HTTPS)
    heartbeat_interval: float = 2.0      # seconds between node-registry heartbeats
    background: bool = True              # run the heartbeat thread (tests may turn it off)
    quota: int = DEFAULT_QUOTA           # bytes of files each user may keep in the drive
    login_limit_account: int = 5         # failed logins per account per login_window ...
    login_limit_address: int = 20        # ... and per client address, before refusing tries
    login_window: float = 300.0          # seconds over which failed logins are counted
    listing_cache: int = 512             # folder listings each worker keeps (validated by version)
    load_dir: str | None = None          # shared by one frontend's workers, for /healthz

    @property
    def csrf_key(self) -> bytes:
        """The key CSRF tokens are made with: derived from the cluster secret, used for nothing else."""
        return self.cluster.derive_key("csrf")

    def validate(self) -> None:
        """:raises ConfigError: a value that cannot work."""
        if not self.frontend:
            raise ConfigError("the frontend needs a name")
        if self.session_ttl <= 0 or self.heartbeat_interval <= 0:
            raise ConfigError("session_ttl and heartbeat_interval must be positive")
        if self.max_upload < 1024:
            raise ConfigError("max_upload is too small to be useful")
        if self.admin_password is not None and len(self.admin_password) < 8:
            raise ConfigError("the admin password needs at least 8 characters")
        if self.quota < 0 or self.listing_cache < 0:
            raise ConfigError("quota and listing_cache cannot be negative")
        if min(self.login_limit_account, self.login_limit_address) < 1 or self.login_window <= 0:
            raise ConfigError("login limits and login_window must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PortalConfig:
        """Build the config the way gunicorn's workers get it: from environment variables.

        :raises ConfigError: no cluster file, an unknown frontend, an unreadable password file.
        """
        cluster = load_cluster(environ.get("RAFTCLOUD_CONFIG") or None)
        name = environ.get(FRONTEND_ENV, "")
        addr = ""
        if name:
            matches = [f for f in cluster.frontends if f.name == name]
            if not matches:
                raise ConfigError(f"no frontend named {name!r} in {cluster.path}")
            addr = matches[0].listen
        elif len(cluster.frontends) == 1:
            name, addr = cluster.frontends[0].name, cluster.frontends[0].listen
        else:
            raise ConfigError(f"set ${FRONTEND_ENV} to this frontend's name")
        try:
            quota = int(environ.get(QUOTA_ENV) or DEFAULT_QUOTA)
        except ValueError:
            raise ConfigError(f"${QUOTA_ENV} must be a number of bytes") from None
        config = cls(cluster=cluster, frontend=name, addr=addr,
                     admin_password=_read_password(environ.get(ADMIN_PASSWORD_FILE_ENV)),
                     quota=quota, load_dir=environ.get(LOAD_DIR_ENV) or None)
        config.validate()
        return config


def _read_password(path: str | None) -> str | None:
    if not path:
        return None
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin password file {path}: {exc}") from exc
    return password or None

"""The cluster file: every address of every process, in one TOML file.

The same format describes the local default (``deploy/local.toml``, every process
on 127.0.0.1) and a cluster spread over several hosts: each process names the
``host`` it runs on, and ``raftcloud up --host NAME`` starts only that host's
share.  ``deploy/README.md`` documents every key.

The cluster secret never lives in a committed file: it comes from the
environment (``RAFTCLOUD_SECRET`` or ``RAFTCLOUD_SECRET_FILE``) or from a
``secret_file`` key; the launcher generates one per data directory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .keys import DEFAULT_SHARDS

SECRET_ENV = "RAFTCLOUD_SECRET"
SECRET_FILE_ENV = "RAFTCLOUD_SECRET_FILE"
CONFIG_ENV = "RAFTCLOUD_CONFIG"


CONFIG_GROUP_ID = 0  # the config group's id; storage groups are numbered from 1


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one ``purpose`` (CSRF tokens, the control API, ...) derived from the secret.

    Each use gets its own key, so a value made for one (a CSRF token shown in
    every page) can never be replayed as another (a control API token).
    """
    return hmac.new(secret, b"raftcloud-key\0" + purpose.encode("utf-8"), hashlib.sha256).digest()


def control_token(secret: bytes) -> str:
    """The bearer token of a host supervisor's control API, derived from the secret."""
    return hmac.new(derive_key(secret, "control"), b"raftcloud-control",
                    hashlib.sha256).hexdigest()


def split_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; raises ConfigError on anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address must be host:port, got {addr!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ReplicaConfig:
    name: str          # unique process name, also its data sub-directory
    group: int         # the Raft group it belongs to
    raft: str          # host:port its Raft peers dial
    client: str        # host:port of its client port (requests, status, blobs)
    host: str = "local"  # which machine runs it (the launcher's --host)


@dataclass(frozen=True)
class GroupConfig:
    id: int                              # group id; the config group is a separate section
    replicas: tuple[ReplicaConfig, ...]  # its voters, normally three

    @property
    def client_addrs(self) -> tuple[str, ...]:
        return tuple(r.client for r in self.replicas)


@dataclass(frozen=True)
class FrontendConfig:
    name: str            # process name, shown in /admin
    listen: str          # host:port gunicorn binds
    workers: int = 2     # gunicorn worker processes
    threads: int = 8     # gthread threads per worker
    host: str = "local"


@dataclass(frozen=True)
class SmtpdConfig:
    name: str = "smtpd"
    inbound: str = "127.0.0.1:2525"     # MX-facing port for the cluster's domains
    submission: str = "127.0.0.1:2587"  # AUTH submission port (STARTTLS first)
    host: str = "local"
    hostname: str = ""                  # EHLO/greeting name; "" = this machine's FQDN
    plaintext_auth_on_loopback: bool = False  # allow AUTH without TLS, loopback only
    resolver: str = ""                  # DNS server "host:port" for MX lookups; "" = system
    remote_port: int = 25               # port of remote exchangers
    queue_poll: float = 5.0             # seconds between looks at the outbound queue
    queue_lease: float = 600.0          # a worker's hold on an entry; then another may retry
    retry_base: float = 60.0            # first retry after a 4xx; doubles per attempt
    max_attempts: int = 12              # then the message bounces
    greeting_timeout: float = 300.0     # patience with a slow remote greeting


@dataclass(frozen=True)
class BalancerConfig:
    name: str = "balancer"
    listen: str = "127.0.0.1:8000"
    host: str = "local"


@dataclass(frozen=True)
class RaftSettings:
    """Tuning shared by every Raft group (the ``[raft]`` table)."""

    snapshot_entries: int = 5000         # log entries between two snapshots
    election_timeout_min: float = 0.4    # seconds; a follower waits a random time
    election_timeout_max: float = 1.4    # in [min, max] before standing for election

    def validate(self) -> None:
        if self.snapshot_entries < 10:
            raise ConfigError("raft.snapshot_entries must be at least 10")
        if not 0.05 <= self.election_timeout_min < self.election_timeout_max:
            raise ConfigError("raft election timeouts must satisfy 0.05 <= min < max")


@dataclass(frozen=True)
class BlobSettings:
    """Upkeep of each replica's blob store (the ``[blobs]`` table)."""

    repair_interval: float = 30.0   # seconds between passes that look for missing chunks
    repair_parallel: int = 4        # chunks one replica fetches from its peers at once
    scrub_rate: float = 4.0         # MB/s of referenced chunks re-read and verified in the
                                    # background, so that bit rot is found even if never read
    gc_interval: float = 600.0      # seconds between garbage-collection rounds (and lease expiry)
    gc_grace: float = 3600.0        # a chunk is deleted once unreferenced for this long, so
                                    # readers of an overwritten value have this long to finish

    def validate(self) -> None:
        if not 0.05 <= self.repair_interval <= 86_400:
            raise ConfigError("blobs.repair_interval must be within [0.05, 86400] seconds")
        if not 1 <= self.repair_parallel <= 64:
            raise ConfigError("blobs.repair_parallel must be within [1, 64]")
        if not 0.05 <= self.gc_interval <= 86_400 * 7:
            raise ConfigError("blobs.gc_interval must be within [0.05, 604800] seconds")
        if self.gc_grace < 0:
            raise ConfigError("blobs.gc_grace must not be negative")
        if self.scrub_rate < 0:
            raise ConfigError("blobs.scrub_rate must not be negative")


@dataclass(frozen=True)
class ClusterConfig:
    name: str                            # a label, shown in the admin console
    groups: tuple[GroupConfig, ...]      # storage groups
    secret: bytes                        # the shared cluster secret (never empty)
    domains: tuple[str, ...] = ("raftcloud.test",)  # mail domains we accept mail for
    shards: int = DEFAULT_SHARDS         # fixed number of shards
    admin_user: str = "admin"            # the account created as the first admin
    control: dict[str, str] = field(default_factory=dict)  # host -> supervisor API host:port
    frontends: tuple[FrontendConfig, ...] = ()
    smtpd: SmtpdConfig | None = None
    balancer: BalancerConfig | None = None
    raft: RaftSettings = field(default_factory=RaftSettings)
    blobs: BlobSettings = field(default_factory=BlobSettings)
    config_group: GroupConfig | None = None  # id 0: configurations and the node registry
    path: Path | None = None             # where it was read from
    # Every table of the file as read.  A package that adds settings parses its
    # own table (``[web]``, ``[mail]``, ``[auth]``, extra keys of ``[smtpd]``...)
    # from here, so the store's module never learns the apps' settings.
    tables: Mapping[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> Mapping[str, Any]:
        """The cluster file's ``[name]`` table (empty when absent)."""
        value = self.tables.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        return value

    def derive_key(self, purpose: str) -> bytes:
        """:func:`derive_key` of this cluster's secret."""
        return derive_key(self.secret, purpose)

    def validate(self) -> None:
        if len(self.secret) < 16:
            raise ConfigError("the cluster secret must be at least 16 bytes")
        if not self.groups:
            raise ConfigError("a cluster needs at least one storage group")
        if self.shards < 1:
            raise ConfigError("shards must be positive")
        self.raft.validate()
        self.blobs.validate()
        names: set[str] = set()
        for proc in self.all_process_names():
            if proc in names:
                raise ConfigError(f"process name {proc!r} is used twice")
            names.add(proc)
        if any(g.id == CONFIG_GROUP_ID for g in self.groups):
            raise ConfigError(f"group id {CONFIG_GROUP_ID} is the config group's")
        for group in self.all_groups():
            if not group.replicas:
                raise ConfigError(f"group {group.id} has no replicas")
            for replica in group.replicas:
                split_addr(replica.raft)
                split_addr(replica.client)

    def all_groups(self) -> tuple[GroupConfig, ...]:
        """The config group (when there is one) and the storage groups."""
        return ((self.config_group,) if self.config_group else ()) + self.groups

    def all_process_names(self) -> list[str]:
        names = [r.name for g in self.all_groups() for r in g.replicas]
        names += [f.name for f in self.frontends]
        names += [p.name for p in (self.smtpd, self.balancer) if p is not None]
        return names

    def group(self, group_id: int) -> GroupConfig:
        for group in self.all_groups():
            if group.id == group_id:
                return group
        raise ConfigError(f"no group {group_id} in the cluster file")

    def replica(self, name: str) -> ReplicaConfig:
        for group in self.all_groups():
            for replica in group.replicas:
                if replica.name == name:
                    return replica
        raise ConfigError(f"no replica named {name!r} in the cluster file")


def load_cluster(path: str | os.PathLike[str] | None = None, *,
                 secret: bytes | None = None) -> ClusterConfig:
    """Read and validate a cluster file.

    :param path: the TOML file; defaults to ``$RAFTCLOUD_CONFIG``.
    :param secret: overrides every other source of the secret (tests use it).
    :raises ConfigError: unreadable file, unknown or malformed keys, no secret.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no cluster file given (--config or ${CONFIG_ENV})")
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read cluster file {path}: {exc}") from exc
    try:
        config = _parse(raw, path, secret)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed cluster file: {exc!r}") from exc
    config.validate()
    return config


def _parse(raw: dict[str, Any], path: Path, secret: bytes | None) -> ClusterConfig:
    cluster = raw.get("cluster", {})
    groups = tuple(
        GroupConfig(
            id=int(g["id"]),
            replicas=tuple(ReplicaConfig(group=int(g["id"]), **r) for r in g["replica"]),
        )
        for g in raw.get("group", [])
    )
    control = raw.get("control", {})
    config_group = None
    if "config_group" in raw:
        config_group = GroupConfig(id=CONFIG_GROUP_ID, replicas=tuple(
            ReplicaConfig(group=CONFIG_GROUP_ID, **r) for r in raw["config_group"]["replica"]))
    return ClusterConfig(
        name=str(cluster.get("name", "raftcloud")),
        groups=groups,
        secret=secret if secret is not None else _find_secret(cluster, path),
        domains=tuple(cluster.get("domains", ("raftcloud.test",))),
        shards=int(cluster.get("shards", DEFAULT_SHARDS)),
        admin_user=str(cluster.get("admin_user", "admin")),
        control={str(k): str(v) for k, v in control.items()},
        frontends=tuple(FrontendConfig(**_known(FrontendConfig, f))
                        for f in raw.get("frontend", [])),
        smtpd=SmtpdConfig(**_known(SmtpdConfig, raw["smtpd"])) if "smtpd" in raw else None,
        balancer=(BalancerConfig(**_known(BalancerConfig, raw["balancer"]))
                  if "balancer" in raw else None),
        raft=RaftSettings(**raw.get("raft", {})),
        blobs=BlobSettings(**raw.get("blobs", {})),
        config_group=config_group,
        path=path,
        tables=MappingProxyType(raw),
    )


def _known(cls: type, table: dict[str, Any]) -> dict[str, Any]:
    """The keys of a process's table that ``cls`` holds; the app parses the rest itself."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in table.items() if k in names}


def _find_secret(cluster: dict[str, Any], path: Path) -> bytes:
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode("utf-8")
    secret_file = os.environ.get(SECRET_FILE_ENV) or cluster.get("secret_file")
    if not secret_file:
        raise ConfigError(
            f"no cluster secret: set ${SECRET_ENV}, ${SECRET_FILE_ENV} or cluster.secret_file")
    secret_path = path.parent / secret_file  # an absolute secret_file wins the join
    try:
        return secret_path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster secret {secret_path}: {exc}") from exc

"""The cluster file: every address of every process, in one TOML file.

The same format describes the local default (``deploy/local.toml``, every process
on 127.0.0.1) and a cluster spread over several hosts: each process names the
``host`` it runs on, and ``raftcloud up --host NAME`` starts only that host's
share.  ``deploy/README.md`` documents every key.

This module reads what the store needs: the groups and their replicas, the
config group, ``[raft]``, ``[blobs]``, the shard count and the secret.  Every
other table (``[[frontend]]``, ``[smtpd]``, ``[balancer]``, ``[web]``,
``[control]``...) is kept as read (:meth:`ClusterConfig.table`,
:meth:`ClusterConfig.entries`) and parsed by the package that owns it, so a new
kind of process or setting never touches the store.

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
from dataclasses import dataclass, field
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
class RaftSettings:
    """Tuning shared by every Raft group (the ``[raft]`` table)."""

    snapshot_entries: int = 5000         # log entries between two snapshots
    snapshot_bytes: int = 64 << 20       # or this many bytes of entries, whichever comes first
    snapshot_send_rate: float = 256e6    # bytes a second a leader sends a lagging follower
    snapshot_write_rate: float = 64e6    # bytes a second a snapshot is written at (leaves the disk room)
    election_timeout_min: float = 0.4    # seconds; a follower waits a random time
    election_timeout_max: float = 1.4    # in [min, max] before standing for election

    def validate(self) -> None:
        if self.snapshot_entries < 10:
            raise ConfigError("raft.snapshot_entries must be at least 10")
        if self.snapshot_bytes < 1 << 20:
            raise ConfigError("raft.snapshot_bytes must be at least 1 MiB")
        if not self.snapshot_send_rate >= 1e6:
            raise ConfigError("raft.snapshot_send_rate must be at least 1 MB/s")
        if not self.snapshot_write_rate >= 1e6:
            raise ConfigError("raft.snapshot_write_rate must be at least 1 MB/s")
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
    shards: int = DEFAULT_SHARDS         # fixed number of shards
    raft: RaftSettings = field(default_factory=RaftSettings)
    blobs: BlobSettings = field(default_factory=BlobSettings)
    config_group: GroupConfig | None = None  # id 0: configurations and the node registry
    path: Path | None = None             # where it was read from
    # Every table of the file as read.  Each package parses its own tables from
    # here (``[[frontend]]`` and ``[web]`` the portal, ``[smtpd]`` smtpd,
    # ``[control]`` shards.control...), so the store's module never learns them.
    tables: Mapping[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> Mapping[str, Any]:
        """The cluster file's ``[name]`` table (empty when absent)."""
        value = self.tables.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        return value

    def entries(self, name: str) -> tuple[Mapping[str, Any], ...]:
        """The ``[name]`` table or the ``[[name]]`` tables, as a tuple (empty when absent).

        A process table takes either shape: ``[smtpd]`` is one process,
        ``[[frontend]]`` one per frontend.
        """
        value = self.tables.get(name, ())
        entries = (value,) if isinstance(value, Mapping) else value
        if not isinstance(entries, list | tuple) or \
                not all(isinstance(e, Mapping) for e in entries):
            raise ConfigError(f"[{name}] must be a table or an array of tables")
        return tuple(entries)

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
        for replica in self.replicas():
            if replica.name in names:
                raise ConfigError(f"process name {replica.name!r} is used twice")
            names.add(replica.name)
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

    def replicas(self) -> tuple[ReplicaConfig, ...]:
        """Every replica of every group, the config group's first."""
        return tuple(r for g in self.all_groups() for r in g.replicas)

    def group(self, group_id: int) -> GroupConfig:
        for group in self.all_groups():
            if group.id == group_id:
                return group
        raise ConfigError(f"no group {group_id} in the cluster file")

    def replica(self, name: str) -> ReplicaConfig:
        for replica in self.replicas():
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
    config_group = None
    if "config_group" in raw:
        config_group = GroupConfig(id=CONFIG_GROUP_ID, replicas=tuple(
            ReplicaConfig(group=CONFIG_GROUP_ID, **r) for r in raw["config_group"]["replica"]))
    return ClusterConfig(
        name=str(cluster.get("name", "raftcloud")),
        groups=groups,
        secret=secret if secret is not None else _find_secret(cluster, path),
        shards=int(cluster.get("shards", DEFAULT_SHARDS)),
        raft=RaftSettings(**raw.get("raft", {})),
        blobs=BlobSettings(**raw.get("blobs", {})),
        config_group=config_group,
        path=path,
        tables=MappingProxyType(raw),
    )


def _find_secret(cluster: dict[str, Any], path: Path) -> bytes:
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode("utf-8")
    # A path in the environment is the shell's: relative to the current directory.
    # A path in the file is the file's: relative to its folder.  (An absolute one
    # wins either join.)
    if os.environ.get(SECRET_FILE_ENV):
        secret_path = Path(os.environ[SECRET_FILE_ENV])
    elif cluster.get("secret_file"):
        secret_path = path.parent / str(cluster["secret_file"])
    else:
        raise ConfigError(
            f"no cluster secret: set ${SECRET_ENV}, ${SECRET_FILE_ENV} or cluster.secret_file")
    try:
        return secret_path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster secret {secret_path}: {exc}") from exc

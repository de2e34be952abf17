"""The cluster file's ``[balancer]`` table, parsed whole, here only.

``name``, ``listen`` and ``host`` place the process; ``head_timeout`` and
``max_connections`` bound its listener (checked by
:func:`raftkv.boundedhttp.listener_limits`, as the frontends' are).  An unknown
key is an error, so a typo stops the start instead of being ignored.  The
scheme of the redirects is ``[web] scheme``, and the certificate the balancer
serves HTTPS with is ``[web] tls_cert``, read through :mod:`shards.site`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftkv.boundedhttp import ListenerLimits, listener_limits
from raftkv.cluster import split_addr
from raftkv.errors import ConfigError
from shards.site import Site

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

DEFAULT_LIMITS = ListenerLimits(max_connections=512)
# The balancer reads no bodies and writes only short answers, so of the limits
# only the head deadline and the cap are its to set (io_timeout keeps 30 s).
LIMIT_KEYS = frozenset({"head_timeout", "max_connections"})
PLACEMENT_KEYS = frozenset({"name", "listen", "host"})


@dataclass(frozen=True)
class BalancerSettings:
    name: str = "balancer"
    listen: str = "127.0.0.1:8000"      # host:port browsers reach first
    host: str = "local"                 # which machine runs it (the launcher's --host)
    limits: ListenerLimits = DEFAULT_LIMITS
    scheme: str = "http"                # [web] scheme: how browsers reach the frontends
    tls: tuple[Path, Path] | None = None  # [web] tls_cert and tls_key: we serve HTTPS with
                                        # them, and health-check the frontends over HTTPS

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> BalancerSettings:
        """:raises ConfigError: no ``[balancer]`` table, or one :meth:`from_table` refuses."""
        if "balancer" not in cluster.tables:
            raise ConfigError("the cluster file has no [balancer] section")
        site = Site.of(cluster)
        tls = None if site.tls_cert is None or site.tls_key is None else (site.tls_cert,
                                                                          site.tls_key)
        return cls.from_table(cluster.table("balancer"), scheme=site.scheme, tls=tls)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, scheme: str = "http",
                   tls: tuple[Path, Path] | None = None) -> BalancerSettings:
        """:raises ConfigError: an unknown key, a value of the wrong type, a bad address."""
        unknown = table.keys() - PLACEMENT_KEYS - LIMIT_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) in [balancer]: {', '.join(sorted(unknown))}")
        placement: dict[str, str] = {}
        for key in PLACEMENT_KEYS & table.keys():
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigError(f"balancer.{key} must be a string, got {table[key]!r}")
            placement[key] = table[key]
        settings = cls(**placement, scheme=scheme, tls=tls, limits=listener_limits(
            table, "balancer", defaults=DEFAULT_LIMITS, keys=LIMIT_KEYS))
        split_addr(settings.listen)
        return settings

"""What every app of the cloud agrees on: its mail domains, its first admin, how browsers reach it.

These keys sit in tables other packages own (``[cluster] domains`` and
``admin_user``, ``[web] scheme``, ``public_url``, ``tls_cert`` and ``tls_key``)
but are read by several of them: the portal (addresses, the admin account,
Secure cookies, where a failed page goes), smtpd (which mail is ours), the
balancer (the scheme of its redirects, how it health-checks the frontends) and
the launcher (the admin login it prints, gunicorn's TLS options).  None of
those may import another, so the keys are parsed here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from raftkv.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from raftkv.cluster import ClusterConfig

__all__ = ["Site", "public_url", "web_scheme"]

DEFAULT_DOMAINS = ("raftcloud.test",)
DEFAULT_ADMIN = "admin"

@dataclass(frozen=True)
class Site:
    domains: tuple[str, ...] = DEFAULT_DOMAINS  # mail domains we accept mail for; the first
                                                # is our users' address domain
    admin_user: str = DEFAULT_ADMIN             # the account created as the first admin
    scheme: str = "http"                        # how browsers reach the frontends
    public_url: str | None = None               # the balancer as browsers reach it, where a
                                                # page whose frontend died goes (the service
                                                # worker, docs/architecture.md "Failover")
    tls_cert: Path | None = None                # the frontends and the balancer serve HTTPS
    tls_key: Path | None = None                 # themselves with this certificate and key

    @classmethod
    def of(cls, cluster: ClusterConfig) -> Site:
        """The site settings of ``cluster``'s file.

        :raises ConfigError: a value of the wrong type, or a scheme other than http(s).
        """
        table = cluster.table("cluster")
        domains = table.get("domains", DEFAULT_DOMAINS)
        if not isinstance(domains, list | tuple) or \
                not all(isinstance(d, str) and d for d in domains):
            raise ConfigError("cluster.domains must be a list of domain names")
        admin_user = table.get("admin_user", DEFAULT_ADMIN)
        if not isinstance(admin_user, str) or not admin_user:
            raise ConfigError("cluster.admin_user must be an account name")
        web = cluster.table("web")
        scheme = web_scheme(web.get("scheme"))
        tls = [_tls_path(cluster, web, key) for key in ("tls_cert", "tls_key")]
        if (tls[0] is None) != (tls[1] is None):
            raise ConfigError("web.tls_cert and web.tls_key go together")
        if tls[0] is not None and scheme != "https":
            raise ConfigError('web.tls_cert needs web.scheme = "https"')
        balancer = next(iter(cluster.entries("balancer")), None)
        return cls(tuple(domains), admin_user, scheme,
                   public_url(web.get("public_url"), balancer, tls=tls[0] is not None), *tls)

    @property
    def serves_tls(self) -> bool:
        """The frontends and the balancer answer HTTPS themselves (not behind a TLS proxy)."""
        return self.tls_cert is not None


def web_scheme(value: object) -> str:
    """``[web] scheme``: ``"http"`` (the default, for None) or ``"https"``.

    :raises ConfigError: anything else.
    """
    if value is None:
        return "http"
    if not isinstance(value, str) or value.strip().lower() not in ("http", "https"):
        raise ConfigError(f'web.scheme must be "http" or "https", got {value!r}')
    return value.strip().lower()


def public_url(value: object, balancer: Mapping[str, object] | None, *,
               tls: bool = False) -> str | None:
    """``[web] public_url``: ``scheme://host[:port]``, the balancer as browsers reach it.

    Without it, the balancer's ``listen`` address (over HTTPS when ``tls``: it
    serves ``[web] tls_cert`` too), unless that is a wildcard or there is no
    balancer: then None, and a page whose frontend died has nowhere to go.

    :raises ConfigError: not an http(s) URL of a host alone (no path, query or user).
    """
    if value is None:
        listen = balancer.get("listen", "127.0.0.1:8000") if balancer is not None else None
        if not isinstance(listen, str) or listen.rpartition(":")[0] in ("", "0.0.0.0", "[::]"):
            return None
        return f"{'https' if tls else 'http'}://{listen}"
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"web.public_url must be like https://example.org, got {value!r}")
    try:
        _ = parts.port  # a port that is no number raises here
    except ValueError:
        raise ConfigError(f"web.public_url has a bad port: {value!r}") from None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _tls_path(cluster: ClusterConfig, web: Mapping[str, object], key: str) -> Path | None:
    value = web.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web.{key} must be a file name, got {value!r}")
    # Relative to the cluster file's folder, as secret_file is.
    return cluster.path.parent / value if cluster.path is not None else Path(value)

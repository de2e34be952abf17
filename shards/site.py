"""What every app of the cloud agrees on: its mail domains, its first admin, how browsers reach it.

These keys sit in tables other packages own (``[cluster] domains`` and
``admin_user``, ``[web] scheme``) but are read by several of them: the portal
(addresses, the admin account, Secure cookies), smtpd (which mail is ours), the
balancer (the scheme of its redirects) and the launcher (the admin login it
prints).  None of those may import another, so the keys are parsed here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.errors import ConfigError

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

__all__ = ["Site", "web_scheme"]

DEFAULT_DOMAINS = ("raftcloud.test",)
DEFAULT_ADMIN = "admin"

@dataclass(frozen=True)
class Site:
    domains: tuple[str, ...] = DEFAULT_DOMAINS  # mail domains we accept mail for; the first
                                                # is our users' address domain
    admin_user: str = DEFAULT_ADMIN             # the account created as the first admin
    scheme: str = "http"                        # how browsers reach the frontends

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
        return cls(tuple(domains), admin_user, web_scheme(cluster.table("web").get("scheme")))


def web_scheme(value: object) -> str:
    """``[web] scheme``: ``"http"`` (the default, for None) or ``"https"``.

    :raises ConfigError: anything else.
    """
    if value is None:
        return "http"
    if not isinstance(value, str) or value.strip().lower() not in ("http", "https"):
        raise ConfigError(f'web.scheme must be "http" or "https", got {value!r}')
    return value.strip().lower()

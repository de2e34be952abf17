"""The cluster file's ``[smtpd]`` table, parsed whole, here only.

Every key of the table is read by :meth:`SmtpdSettings.from_table`: where the
process listens and runs, how it delivers and signs (:mod:`smtpd.outbound`),
how it checks mail from strangers (:mod:`smtpd.authcheck`), which clients may
send as our domains (:mod:`smtpd.handler`), and the per-client
bounds of :class:`smtpd.limits.SessionLimits`.  An unknown key is an error, so
a typo stops the start instead of being ignored.  ``deploy/README.md`` lists
the keys.  The other tables smtpd reads are parsed by their owners:
``[mail]`` and ``[auth]`` by the shared model (shards/model), ``[cluster]
domains`` by :mod:`shards.site`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from raftkv.cluster import split_addr
from raftkv.errors import ConfigError
from shards.model.dkimkeys import DEFAULT_SELECTOR, selector_setting

from .limits import SessionLimits

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The keys of SessionLimits sit in the same table; it parses them itself.
_SESSION_KEYS = frozenset(f.name for f in fields(SessionLimits))
_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "bool": bool, "int": int,
                                              "float": (int, float)}


@dataclass(frozen=True)
class SmtpdSettings:
    name: str = "smtpd"
    inbound: str = "127.0.0.1:2525"     # MX-facing port for the cluster's domains
    submission: str = "127.0.0.1:2587"  # AUTH submission port (STARTTLS first)
    host: str = "local"                 # which machine runs it (the launcher's --host)
    hostname: str = ""                  # EHLO/greeting name; "" = this machine's FQDN
    plaintext_auth_on_loopback: bool = False  # allow AUTH without TLS, loopback only
    resolver: str = ""                  # DNS server "host:port" for MX lookups; "" = system
    remote_port: int = 25               # port of remote exchangers
    queue_poll: float = 5.0             # seconds between looks at the outbound queue
    queue_lease: float = 600.0          # a worker's hold on an entry; then another may retry
    retry_base: float = 60.0            # first retry after a 4xx; doubles per attempt
    max_attempts: int = 12              # then the message bounces
    greeting_timeout: float = 300.0     # patience with a slow remote greeting
    # May dial exchangers on loopback, private or link-local addresses (tests);
    # off, such mail bounces (smtpd/outbound.py says why).
    allow_private_exchangers: bool = False
    dkim_selector: str = DEFAULT_SELECTOR  # s= of our DKIM signatures (shards/model/dkimkeys.py)
    # SPF, DKIM and DMARC of mail from strangers (smtpd/authcheck.py), asking `resolver`:
    check_inbound_auth: bool = True
    dns_timeout: float = 5.0            # seconds one of those DNS questions may take
    spf_timeout: float = 20.0           # seconds for all of one message's SPF questions
    # Clients that may send as our domains without AUTH; None: loopback and the
    # cluster's own hosts (smtpd.handler.trusted_relays).
    trusted_relays: tuple[Network, ...] | None = None
    limits: SessionLimits = field(default_factory=SessionLimits)

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> SmtpdSettings:
        """:raises ConfigError: no ``[smtpd]`` table, or one :meth:`from_table` refuses."""
        if "smtpd" not in cluster.tables:
            raise ConfigError("the cluster file has no [smtpd] section")
        return cls.from_table(cluster.table("smtpd"))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SmtpdSettings:
        """:raises ConfigError: an unknown key, a value of the wrong type, a bad address."""
        values: dict[str, Any] = {}
        for setting in fields(cls):
            if setting.name not in table or setting.name in ("trusted_relays", "limits"):
                continue
            value = table[setting.name]
            wanted = _TYPES[str(setting.type)]
            if (isinstance(value, bool) and setting.type != "bool") \
                    or not isinstance(value, wanted):
                raise ConfigError(f"smtpd.{setting.name} must be a {setting.type}, "
                                  f"got {value!r}")
            # an int where a float is wanted (``queue_poll = 5``) is taken as one
            values[setting.name] = float(table[setting.name]) if setting.type == "float" \
                else value
        if "trusted_relays" in table:
            values["trusted_relays"] = _networks(table["trusted_relays"])
        unknown = table.keys() - {f.name for f in fields(cls)} - _SESSION_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) in [smtpd]: {', '.join(sorted(unknown))}")
        settings = cls(**values, limits=SessionLimits.from_table(table))
        split_addr(settings.inbound)
        split_addr(settings.submission)
        if settings.resolver:
            split_addr(settings.resolver)
        selector_setting(table)
        if not (0 < settings.dns_timeout <= 60 and 0 < settings.spf_timeout <= 300):
            raise ConfigError("smtpd.dns_timeout must be within (0, 60] seconds and "
                              "smtpd.spf_timeout within (0, 300]")
        return settings


def _networks(value: object) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ConfigError("smtpd.trusted_relays must be a list of addresses or networks")
    try:
        return tuple(ipaddress.ip_network(a, strict=False) for a in value)
    except ValueError as exc:
        raise ConfigError(f"smtpd.trusted_relays: {exc}") from None

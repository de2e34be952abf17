"""The cluster file's ``[imapd]`` table, parsed whole, here only.

Where the process listens (``listen``: plain IMAP with STARTTLS, ``listen_tls``:
implicit TLS, the port 993 of a real deployment), what it accepts before TLS,
and the per-connection bounds of :class:`ImapLimits`.  An unknown key is an
error, so a typo stops the start instead of being ignored.  ``deploy/README.md``
lists the keys.  The ``[auth]`` table (the shared password limiter) and the
``[mail]`` table (the quota) are parsed by the shared model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from raftkv.cluster import split_addr
from raftkv.errors import ConfigError

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "bool": bool, "int": int,
                                              "float": (int, float)}


@dataclass(frozen=True)
class ImapLimits:
    """What one client may hold: connections, time, and bytes.  The defaults suit a public
    server; RFC 3501 5.4 asks for at least 30 minutes of patience with a logged-in client."""

    max_connections: int = 400            # per listener
    max_connections_per_address: int = 20  # an IPv6 /56 counts as one address
    login_timeout: float = 60.0           # accept, or the last command -> the next, before login
    idle_timeout: float = 1860.0          # the same once logged in (and one IDLE's length)
    line_timeout: float = 30.0            # first byte of a command line -> its end
    literal_timeout: float = 600.0        # a literal's announcement -> its last byte (25 MiB)
    max_line: int = 65536                 # bytes of one command line, literals excluded
    max_literal: int = 65536              # bytes of a literal other than APPEND's message
    max_message_size: int = 25 * 1024 * 1024  # bytes of one APPEND message
    max_depth: int = 32                   # nesting of parenthesised lists in one command
    max_bad_commands: int = 10            # BAD answers in a row before the server hangs up

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ImapLimits:
        values: dict[str, Any] = {}
        for setting in fields(cls):
            if setting.name in table:
                values[setting.name] = _typed(setting.name, setting.type, table[setting.name])
        limits = cls(**values)
        if min(limits.login_timeout, limits.idle_timeout, limits.line_timeout,
               limits.literal_timeout) <= 0:
            raise ConfigError("imapd timeouts must be positive")
        if min(limits.max_connections, limits.max_connections_per_address, limits.max_line,
               limits.max_literal, limits.max_message_size, limits.max_depth,
               limits.max_bad_commands) < 1:
            raise ConfigError("imapd limits must be at least 1")
        if limits.max_line < 1024:
            raise ConfigError("imapd.max_line must be at least 1024 bytes (RFC 7162 3.1: "
                              "clients send long UID sets)")
        return limits


@dataclass(frozen=True)
class ImapdSettings:
    name: str = "imapd"
    host: str = "local"                   # which machine runs it (the launcher's --host)
    listen: str = "127.0.0.1:2143"        # plain IMAP; STARTTLS when a certificate is given
    listen_tls: str = "127.0.0.1:2993"    # implicit TLS (993-style); "" = none
    hostname: str = ""                    # the greeting's name; "" = this machine's FQDN
    # LOGIN and AUTHENTICATE before STARTTLS from a loopback peer (its traffic never
    # leaves the machine); from anywhere else a client must start TLS first.
    plaintext_login_on_loopback: bool = True
    idle_poll: float = 0.5                # seconds between looks at an IDLE folder's cell
    limits: ImapLimits = field(default_factory=ImapLimits)

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> ImapdSettings:
        """:raises ConfigError: no ``[imapd]`` table, or one :meth:`from_table` refuses."""
        if "imapd" not in cluster.tables:
            raise ConfigError("the cluster file has no [imapd] section")
        return cls.from_table(cluster.table("imapd"))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ImapdSettings:
        """:raises ConfigError: an unknown key, a value of the wrong type, a bad address."""
        limit_keys = {f.name for f in fields(ImapLimits)}
        unknown = table.keys() - {f.name for f in fields(cls)} - limit_keys
        if unknown or "limits" in table:
            raise ConfigError(f"unknown key(s) in [imapd]: {', '.join(sorted(unknown))}")
        values = {f.name: _typed(f.name, f.type, table[f.name])
                  for f in fields(cls) if f.name in table}
        settings = cls(**values, limits=ImapLimits.from_table(table))
        split_addr(settings.listen)
        if settings.listen_tls:
            split_addr(settings.listen_tls)
        if not 0.05 <= settings.idle_poll <= 5:
            raise ConfigError("imapd.idle_poll must be between 0.05 and 5 seconds")
        return settings


def _typed(name: str, kind: Any, value: Any) -> Any:
    wanted = _TYPES[str(kind)]
    if (isinstance(value, bool) and kind != "bool") or not isinstance(value, wanted):
        raise ConfigError(f"imapd.{name} must be a {kind}, got {value!r}")
    # an int where a float is wanted (``idle_poll = 1``) is taken as one
    return float(value) if kind == "float" and isinstance(value, int) else value

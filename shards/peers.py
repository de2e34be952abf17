"""What every listener of the mail apps (smtpd, imapd) counts and needs alike: who a
connection counts as, how many may be open, and the TLS context of a certificate.

Here, below the apps, so that sibling listeners share one rule rather than copies.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections import Counter
from typing import Any, Protocol

IPV6_PREFIX = 56  # bits of an IPv6 address counted as one client (an end site's allocation)


def address_key(peer: Any) -> str:
    """The key a client is counted under: its IP address, an IPv6 /56 as one."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


class Caps(Protocol):
    """A listener's connection caps (each app's limits have more fields)."""

    @property
    def max_connections(self) -> int: ...

    @property
    def max_connections_per_address(self) -> int: ...


class Evictable(Protocol):
    def evictable(self) -> bool:
        """Whether it may be closed to make room (it has not logged in, or is idle)."""
        ...

    def evict(self) -> None:
        """Say goodbye and close; the gate no longer counts it."""
        ...


class ConnectionGate[L: Caps]:
    """Open connections of one listener, in total and per client address.

    At ``max_connections_per_address`` a newcomer from that address may not come in.
    At ``max_connections`` the oldest connection whose ``evictable()`` is true is
    evicted (its ``evict()`` called, no longer counted) to make room; a newcomer is
    refused only when none is.  Used only from the listener's event loop thread, so
    it needs no lock; connections are kept in the order they arrived, so the oldest
    evictable one is the first found.
    """

    def __init__(self, limits: L) -> None:
        self.limits = limits
        self._per_address: Counter[str] = Counter()
        self._connections: dict[Evictable, str] = {}  # connection -> key, oldest first

    def connections(self) -> list[Any]:
        return list(self._connections)

    @property
    def total(self) -> int:
        return len(self._connections)

    def enter(self, key: str, connection: Evictable) -> bool:
        """Count a new connection from ``key``; False (nothing counted) when it may not come in."""
        if self._per_address[key] >= self.limits.max_connections_per_address:
            return False
        if self.total >= self.limits.max_connections:
            idle = next((c for c in self._connections if c.evictable()), None)
            if idle is None:
                return False
            self.leave(idle)
            idle.evict()
        self._connections[connection] = key
        self._per_address[key] += 1
        return True

    def leave(self, connection: Evictable) -> None:
        key = self._connections.pop(connection, None)
        if key is None:
            return
        self._per_address[key] -= 1
        if self._per_address[key] <= 0:
            del self._per_address[key]


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A listener's server context, from PEM files (None without a cert)."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    return context

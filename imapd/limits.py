"""How many connections a listener holds, per client address and in all.

Every connection of a listener is a coroutine on the server's one event loop,
so a slow client costs a socket and a little memory, never a thread; what is
left to bound is how many sockets a stranger may hold and for how long (the
time bounds are the connection's: :mod:`imapd.connection`).

* At most ``max_connections_per_address`` per client address (an IPv6 /56, a
  typical end site's allocation, counts as one address).  One more gets
  ``* BYE`` and is closed before any greeting.
* At ``max_connections`` per listener the oldest connection that has not
  logged in is told ``* BYE`` and closed to make room; a newcomer is refused
  only when every connection is logged in.  Strangers holding connections open
  cannot lock the users out.

smtpd has the same rules for SMTP (``smtpd/limits.py``); the two apps do not
import each other, so the rule for who counts as one client lives below them
(:func:`shards.peers.address_key`); the gate itself is still kept in each.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from shards.peers import address_key  # noqa: F401 - re-exported for imapd.server

from .settings import ImapLimits


class Evictable(Protocol):
    def evictable(self) -> bool:
        """Whether it may be closed to make room: it has not logged in."""
        ...

    def evict(self) -> None:
        """Say goodbye and close; the gate no longer counts it."""
        ...


class ConnectionGate:
    """Open connections of one listener, in total and per client address.

    Used only from the event loop's thread, so it needs no lock.  Connections
    are kept in the order they arrived, so the oldest evictable one is the
    first found.
    """

    def __init__(self, limits: ImapLimits) -> None:
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

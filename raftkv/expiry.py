"""The leader's upkeep of expiring cells: time moves on an idle group, expired cells go.

A cell written with a ``ttl`` expires at the group's clock, which moves only
with the log (every entry carries the leader's time, see
:meth:`raftkv.store.Store.apply_entry`); reads hide it from then on.  A
:class:`CellExpirer` runs in every replica and acts while that replica leads:
every ``interval`` seconds (at most 10) it appends an ``expire_cells`` entry,
which both moves the clock of an idle group -- so expiry advances for stale
reads too -- and removes a bounded number of expired cells through the log, so
every replica removes the same ones.  While a pass finds more, it goes on at once.
The promise as a whole: (docs/store-promises.md, "The interface").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .background import BackgroundLoop
from .client import Client
from .errors import RaftKVError

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 10.0   # seconds between two time entries of an idle group, at most
MAX_ROUNDS = 100         # expire_cells commands in one pass, at most (then the next pass)


class CellExpirer(BackgroundLoop):
    """While this replica leads, appends an ``expire_cells`` entry every ``interval``."""

    def __init__(self, group_addrs: Sequence[str], secret: bytes, is_leader: Callable[[], bool],
                 *, interval: float = EXPIRY_INTERVAL) -> None:
        super().__init__("raftkv-expiry", interval, first_delay=interval)
        self._is_leader = is_leader
        self._client = Client(group_addrs, secret, timeout=max(2.0, interval))
        self.expired = 0  # cells this replica's passes removed (for status)

    def interrupt(self) -> None:
        self._client.close()  # a call in progress fails now instead of retrying

    def step(self) -> None:
        if not self._is_leader():
            return
        try:
            self.expire_pass()
        except RaftKVError as exc:  # no majority, or a new leader: the next pass retries
            log.debug("expiry pass stopped: %s", exc)

    def expire_pass(self) -> None:
        """Append ``expire_cells`` entries until one finds nothing more to remove."""
        for _ in range(MAX_ROUNDS):
            removed, more = self._client.expire_cells()
            self.expired += removed
            if not more or self.stopping:
                return

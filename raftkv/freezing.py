"""A group's writes held still for a moment: the cut a backup is taken at.

A backup of the whole cluster must be one state of every group that no client
could tell from a moment of the cluster's history (docs/operations.md, "Backup and
restore", says why a cut per group is not enough).  The saver (``shards/backup.py``)
gets there by freezing every group, then reading each one's state, then thawing:

* ``freeze(token, seconds)`` -- from this entry on, every write is refused with
  ``Frozen`` (not applied, its answer not kept: the client sends it again, with
  the same sequence number, and it applies once the group thaws).  The freeze
  ends by itself once the group's clock (the entries' time) passes ``seconds``
  after the entry, so a saver that dies does not stop the cluster for long.
* ``thaw(token)`` -- writes apply again.  Its answer says whether the freeze was
  still in force: whether no write applied between the two entries.

Freeze and thaw are entries like any other, so every replica refuses exactly the
same writes.  The state is one meta value, written in the entry's transaction,
so a read transaction sees the freeze together with the state it froze
(:mod:`raftkv.backup_offers` checks it there).  Reads never wait.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tables import Tables

Result = dict[str, Any]

FREEZE_META = "freeze"       # [token, until] while a backup's freeze holds
MAX_FREEZE = 30.0            # seconds a freeze may ask for at most
FREEZE_OPS = frozenset({"freeze", "thaw"})  # the writes a frozen group still applies
MAX_TOKEN = 1 << 63


def _error(name: str, message: str, **fields: Any) -> Result:
    return {"error": name, "message": message, **fields}


class BackupFreeze:
    """Mixin of :class:`raftkv.store.Store`: the ``freeze`` and ``thaw`` commands."""

    clock: float
    freeze: tuple[int, float] | None   # (token, until) of the freeze in force, if any

    @property
    def _t(self) -> Tables:
        raise NotImplementedError

    def _init_freeze(self, saved: Any) -> None:
        self.freeze = None
        if isinstance(saved, list) and len(saved) == 2:
            self.freeze = (int(saved[0]), float(saved[1]))

    def frozen_refusal(self, op: str) -> Result | None:
        """``Frozen`` for a write while a freeze holds (see the module's docstring)."""
        if self.freeze is None or op in FREEZE_OPS:
            return None
        if self.clock > self.freeze[1]:
            return None  # it ran out; the meta value stays until a thaw or the next freeze
        return _error("Frozen", "the group is frozen for a moment while a backup is taken: "
                                "send the write again")

    def _op_freeze(self, c: dict[str, Any]) -> Result:
        token, seconds = c["token"], c["seconds"]
        if not (isinstance(token, int) and 0 < token < MAX_TOKEN):
            raise ValueError("a freeze's token is a positive integer")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)
                and 0 < seconds <= MAX_FREEZE):
            raise ValueError(f"a freeze lasts more than 0 and at most {MAX_FREEZE:g} seconds")
        if self.freeze is not None and self.freeze[0] != token and self.clock <= self.freeze[1]:
            return _error("Busy", "another backup holds this group frozen; try again shortly")
        self.freeze = (token, self.clock + float(seconds))
        self._t.put_meta(FREEZE_META, list(self.freeze))
        return {"until": self.freeze[1]}

    def _op_thaw(self, c: dict[str, Any]) -> Result:
        token = c["token"]
        if not isinstance(token, int):
            raise ValueError("a thaw's token is an integer")
        if self.freeze is None or self.freeze[0] != token:
            return {"held": False}
        held = self.clock <= self.freeze[1]
        self.freeze = None
        self._t.put_meta(FREEZE_META, None)
        return {"held": held}

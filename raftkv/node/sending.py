"""One append_entries message per follower per tick (docs/engine-fixes.md, "Hand-offs")."""

from __future__ import annotations

from pysyncobj import SyncObjConf

from ..store import Store
from .config import ReplicaConfig
from .fixes import _EngineBase


class _LeaderSendsOncePerTick(_EngineBase):
    """A leader's tick sends each follower one message with everything new, not one per
    entry.

    With ``appendEntriesUseBatch=False`` (which keeps writes from waiting for the
    next heartbeat) the engine sends to every follower after applying (to carry
    the new commit index) and again after each command it appends, from the
    follower's next index on: a tick that applies one entry and appends three
    sends four messages per follower, each pickled, compressed and sealed, and
    answered by the follower.  Here the sends asked for from the start of a tick
    until it has appended its commands (the heartbeat, the send after applying,
    one per command) are noted, and one goes once the commands are appended:
    one message per follower with the new entries and the new commit index.
    Nothing waits longer: the tick still sends before it returns to ``poll()``,
    and sends asked for while it handles what ``poll()`` brought (a new
    leader's first round) go at once, as before.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self._sends_deferred = False  # in a tick, before its commands are appended
        self._send_due = False        # a send was asked for meanwhile
        super().__init__(config, store, conf)

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802 - pysyncobj's name
        if self._sends_deferred:
            self._send_due = True
            return
        super()._SyncObj__sendAppendEntries()

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - pysyncobj's names
        self._sends_deferred = True
        try:
            super()._onTick(timeToWait)
        finally:
            self._send_deferred()  # a tick that ended early (e.g. its transport not ready)

    def _checkCommandsToApply(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._checkCommandsToApply()
        self._send_deferred()

    def _send_deferred(self) -> None:
        self._sends_deferred = False
        if self._send_due:
            self._send_due = False
            self._SyncObj__sendAppendEntries()

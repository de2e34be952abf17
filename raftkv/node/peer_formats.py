"""What each peer says it speaks, and the Raft format the leader writes (:mod:`raftkv.formats`)."""

from __future__ import annotations

import logging
from typing import Any

from pysyncobj import SyncObjConf

from .. import formats, prevote
from ..store import Store
from .config import ReplicaConfig
from .fixes import _EngineBase
from .pinned import _RAFT_STATE

log = logging.getLogger(__name__)

class _SpeaksFormats(_EngineBase):
    """What each connected peer said it speaks; a peer that shares no Raft format is refused.

    The hello (sent on every connect, see :class:`_PreVote`) carries the range of
    Raft formats the sender speaks (:mod:`raftkv.formats`).  A peer whose range
    does not overlap ours is disconnected at its hello, every time it connects:
    it could neither apply our entries nor we its.  A reconnect may be a restart
    onto other code, so what a peer speaks is forgotten when it disconnects.
    """

    def __init__(self, config: ReplicaConfig, store: Store, conf: SyncObjConf) -> None:
        self.peer_raft_formats: dict[Any, range] = {}  # read by other threads: replaced, never edited
        self._refusals_logged: set[tuple[Any, range]] = set()
        # (term, index) of the no-op this replica appended when it last became leader;
        # read by other threads: replaced, never edited.
        self._term_start: tuple[int, int] | None = None
        super().__init__(config, store, conf)

    def _SyncObj__onBecomeLeader(self) -> None:  # noqa: N802
        super()._SyncObj__onBecomeLeader()
        self._term_start = (self._SyncObj__raftCurrentTerm, self._SyncObj__noopIDx)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        if message.get("type") == prevote.HELLO:
            theirs = formats.peer_raft_formats(message)
            if not formats.overlaps(theirs):
                self._refuse(node, theirs)
                return
            self.peer_raft_formats = {**self.peer_raft_formats, node: theirs}
        super()._SyncObj__onMessageReceived(node, message)

    def _refuse(self, node: Any, theirs: range) -> None:
        ours = formats.RAFT.speaks
        if (node, theirs) not in self._refusals_logged:  # it redials every few seconds
            self._refusals_logged.add((node, theirs))
            log.error("refusing Raft peer %s: it speaks Raft formats %d to %d, this replica "
                      "%d to %d; run code that shares a format (docs/store-promises.md, "
                      "\"Formats and upgrades\")", node.address, theirs.start, theirs.stop - 1,
                      ours.start, ours.stop - 1)
        self._forget(node)
        conn = self._SyncObj__transport._connections.get(node)
        if conn is not None:
            conn.disconnect()

    def _forget(self, node: Any) -> None:
        if node in self.peer_raft_formats:
            self.peer_raft_formats = {n: r for n, r in self.peer_raft_formats.items() if n != node}

    def _SyncObj__onNodeConnected(self, node: Any) -> None:  # noqa: N802
        self._forget(node)
        super()._SyncObj__onNodeConnected(node)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
        self._forget(node)
        super()._SyncObj__onNodeDisconnected(node)

    def entry_format(self) -> int | None:
        """The Raft format to write entries in now (:func:`raftkv.formats.entry_format`), or
        None on a leader that has not yet applied its term's first entry.

        The group's format is the store's (``Store.raft_format``, a function of the
        log applied).  A new leader may hold entries of earlier terms it has not
        applied, which may be of the old format; once it has applied the no-op it
        appended on election it has applied all of them, and its decision is the
        one every replica reaches from the same log (docs/store-promises.md,
        "Formats and upgrades").
        """
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            start = self._term_start
            if (start is None or start[0] != self._SyncObj__raftCurrentTerm
                    or self.raftLastApplied < start[1]):
                return None
        known = self.peer_raft_formats
        voters = [known.get(peer) for peer in list(self._SyncObj__otherNodes)]
        return formats.entry_format(voters, self._store.raft_format)

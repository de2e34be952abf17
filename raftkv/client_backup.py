"""The client's calls for backups: freeze and thaw a group, read its frozen state.

A mixin of :class:`raftkv.Client`; the saver that uses them is ``shards/backup.py``
and the story is in docs/operations.md, "Backup and restore".
"""

from __future__ import annotations

from typing import Any

from .errors import ProtocolError


class BackupCalls:
    """Mixin of :class:`raftkv.client.Client` (which provides ``_call`` and ``_send_to``)."""

    timeout: float

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def freeze(self, token: int, seconds: float) -> float:
        """Refuse the group's writes from now on (:mod:`raftkv.freezing`), for at most
        ``seconds`` of the group's clock; when it ends by itself, on that clock.

        :raises Busy: another backup holds the group frozen.
        """
        return float(self._call({"op": "freeze", "token": token, "seconds": seconds},
                                write=True)["until"])

    def thaw(self, token: int) -> bool:
        """Let writes apply again; whether the freeze ``token`` was still in force (no
        write applied since it began)."""
        return bool(self._call({"op": "thaw", "token": token}, write=True)["held"])

    def backup_open(self, token: int) -> dict[str, Any]:
        """Open the frozen state of the group at its leader, from one read transaction
        (:mod:`raftkv.backup_offers`): ``offer`` (the handle), ``addr`` (the replica
        holding it), and the state's ``meta``.

        :raises ConfigurationPending: the leader's state is not frozen by ``token``.
        """
        return self._call({"op": "backup_open", "token": token}, write=False)

    def backup_read(self, addr: str, offer: bytes, after: bytes) -> tuple[list[Any], bytes | None]:
        """A page of the offered state's cells after the key ``after`` (b"": from the
        start): ``(cells, the next page's ``after``, None at the end)``."""
        result = self._send_to(addr, {"op": "backup_read", "offer": offer, "after": after},
                               self.timeout)
        cells, more = result.get("cells"), result.get("next")
        if not isinstance(cells, list) or not (more is None or isinstance(more, bytes)):
            raise ProtocolError("a backup_read answer without cells")
        return cells, more

    def backup_done(self, addr: str, offer: bytes) -> None:
        """Close the offer (its read transaction) at ``addr``."""
        self._send_to(addr, {"op": "backup_done", "offer": offer}, self.timeout)

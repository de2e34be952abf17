"""The client's calls that keep a group running: barriers, upload intents, expiry, the
steps of a shard move, snapshot pulls.

A mixin of :class:`raftkv.Client`, kept apart so the client reads as the store
interface; the callers are the group's own background threads (raftkv/repair.py,
raftkv/expiry.py), the reconfigurer (shards/reconfig.py) and a lagging follower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cells import EXPIRE_CELLS
from .errors import ProtocolError


class UpkeepCalls:
    """Mixin of :class:`raftkv.client.Client` (which provides ``_call``, ``_read`` and
    ``_send_to``)."""

    timeout: float

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _read(self, request: dict[str, Any], consistency: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    # -- upkeep: barriers and upload intents ------------------------------

    def noop(self) -> int:
        """A barrier through the log: the group's count of applied commands at it.

        Once a replica's own count reaches it, that replica's state holds
        everything committed before the barrier.
        """
        return int(self._call({"op": "noop"}, write=False)["applied"])

    def intent(self, upload: int, digests: Sequence[bytes], *, lease: float,
               new: bool = False) -> float:
        """Protect the chunks ``digests`` under upload id ``upload`` for ``lease``
        seconds (``new``: register the id; otherwise renew it and add to it).

        Returns when the intent expires, on the group's clock.
        :raises UploadExpired: the intent (not ``new``) had already expired.
        """
        return float(self._call({"op": "intent", "upload": upload, "digests": list(digests),
                                 "lease": lease, "new": new}, write=True)["expires"])

    def intent_end(self, upload: int) -> bool:
        """Give an upload's chunks back to the garbage collector; whether it was alive."""
        return bool(self._call({"op": "intent_end", "upload": upload}, write=True)["ended"])

    def expire_intents(self) -> int:
        """End every intent whose lease ran out on the group's clock; how many."""
        return int(self._call({"op": "expire_intents"}, write=True)["expired"])

    def expire_cells(self, limit: int = EXPIRE_CELLS) -> tuple[int, bool]:
        """Remove up to ``limit`` cells that expired on the group's clock (the entry
        also moves that clock); ``(how many, whether more may wait)``."""
        result = self._call({"op": "expire_cells", "limit": limit}, write=True)
        return int(result["expired"]), bool(result["more"])

    # -- shard moves: the steps of raftkv.ownership -------------------------

    def shard_state(self) -> dict[str, Any]:
        """The group's configuration number, served shards, incoming and frozen moves."""
        return self._call({"op": "shard_state"}, write=False)

    def begin_config(self, num: int, shards: Sequence[int], incoming: Sequence[Sequence[Any]],
                     outgoing: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """Enter configuration ``num``; moves are ``[shard, group, [address, ...]]``.

        Returns the new :meth:`shard_state`.
        """
        return self._call({"op": "begin_config", "config": num, "shards": list(shards),
                           "incoming": [list(m) for m in incoming],
                           "outgoing": [list(m) for m in outgoing]}, write=True)

    def export_shard(self, num: int, shard: int, after: Sequence[str] | None = None
                     ) -> dict[str, Any]:
        """A page of ``shard``, frozen here in configuration ``num``, from the cursor
        ``after`` (``[row, column]``): ``rows``, the next ``after`` (None at the end) and
        the shard's version ``counter``.  Any replica that has frozen it answers."""
        return self._read({"op": "export_shard", "config": num, "shard": shard,
                           "after": None if after is None else list(after)}, "stale")

    def import_shard(self, num: int, shard: int, rows: Sequence[Any], counter: int, *,
                     upload: int | None = None) -> int:
        """Write a page of exported rows into awaited ``shard``; ``upload`` is the intent
        protecting the chunks its cells name, retired by the import.  Rows written."""
        command: dict[str, Any] = {"op": "import_shard", "config": num, "shard": shard,
                                   "rows": list(rows), "counter": counter}
        if upload is not None:
            command["upload"] = upload
        return int(self._call(command, write=True)["imported"])

    def adopt_shard(self, num: int, shard: int) -> None:
        """Serve ``shard`` from now on: every page of it has been imported."""
        self._call({"op": "adopt_shard", "config": num, "shard": shard}, write=True)

    def drop_shard(self, num: int, shard: int) -> None:
        """Delete the frozen copy of ``shard``, which its new owner has adopted."""
        self._call({"op": "drop_shard", "config": num, "shard": shard}, write=True)

    def snapshot_read(self, addr: str, token: bytes, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` of the snapshot that replica ``addr``, the
        leader, offered under ``token`` (:mod:`raftkv.snapshot_pull`; replicas only)."""
        result = self._send_to(addr, {"op": "snapshot_read", "token": token, "offset": offset,
                                      "length": length}, self.timeout)
        data = result.get("data")
        if not isinstance(data, bytes):
            raise ProtocolError("a snapshot_read answer without bytes")
        return data

    def snapshot_done(self, addr: str, token: bytes) -> None:
        """Tell the leader at ``addr`` that the snapshot offered under ``token`` is whole
        and synced here: its next message to this replica is the last piece."""
        self._send_to(addr, {"op": "snapshot_done", "token": token}, self.timeout)


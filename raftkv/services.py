"""What a replica's server answers itself, outside the log: chunks, snapshots, backups.

A mixin of :class:`raftkv.server.NodeServer` (which binds every ``_op_`` method of the
``NODE`` operations, raftkv/operations.py): blob chunks stored and served beside Raft
(:mod:`raftkv.blobs`), the snapshot a lagging follower pulls (:mod:`raftkv.snapshot_pull`),
and the frozen states a backup reads (:mod:`raftkv.backup_offers`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .backup_offers import Offers, check_cursor
from .blobs import CHUNK_SIZE, BlobStore, CorruptChunk, check_name
from .errors import NotLeader, ProtocolError, TooLarge
from .replica_metrics import BLOB_BYTES_SERVED, BLOB_BYTES_STORED
from .snapshot_pull import check_read

if TYPE_CHECKING:
    from .node import Replica
    from .repair import BlobKeeper

log = logging.getLogger("raftkv.server")

OFFERS_CHECK = 30.0  # seconds between looks for idle backup offers while any is open


class ReplicaServices:
    """Mixin of :class:`raftkv.server.NodeServer`: the chunk, snapshot and backup operations."""

    replica: Replica
    blobs: BlobStore
    keeper: BlobKeeper
    client_addr: str
    backup_offers: Offers
    _watching_offers: asyncio.TimerHandle | None
    _loop: asyncio.AbstractEventLoop | None

    def _not_leader(self) -> NotLeader:
        raise NotImplementedError

    async def _op_blob_put(self, request: dict[str, Any]) -> dict[str, Any]:
        data = _bytes(request.get("data"))
        if len(data) > CHUNK_SIZE:
            raise TooLarge(f"a chunk holds at most {CHUNK_SIZE} bytes")
        await asyncio.to_thread(self.blobs.put, check_name(request.get("name")), data)
        BLOB_BYTES_STORED.inc(len(data))
        return {}

    async def _op_blob_get(self, request: dict[str, Any]) -> dict[str, Any]:
        name = check_name(request.get("name"))
        try:
            data = await asyncio.to_thread(self.blobs.get, name)
        except CorruptChunk:
            log.warning("chunk %s was corrupt on disk: deleted, to be repaired", name[:12])
            self.keeper.corrupt()
            data = None
        if data is None:
            self.keeper.wake()  # if a cell references it, repair it now
            return {"found": False, "data": b""}
        BLOB_BYTES_SERVED.inc(len(data))
        return {"found": True, "data": data}

    async def _op_snapshot_read(self, request: dict[str, Any]) -> dict[str, Any]:
        offset, length = check_read(request.get("offset"), request.get("length"))
        offer = self.replica.snapshot_offers.get(request.get("token"))
        delay = offer.reserve(length)  # [raft] snapshot_send_rate, per transfer
        if delay > 0:
            await asyncio.sleep(delay)
        return {"data": await asyncio.to_thread(offer.read, offset, length)}

    async def _op_snapshot_done(self, request: dict[str, Any]) -> dict[str, Any]:
        self.replica.snapshot_offers.finish(request.get("token"))
        return {}

    async def _op_backup_open(self, request: dict[str, Any]) -> dict[str, Any]:
        # At the leader: it has applied the freeze once the saver heard it did.
        if not self.replica.is_leader():
            raise self._not_leader()
        store = self.replica.store
        token, offer = await asyncio.to_thread(self.backup_offers.open, store.db,
                                                request.get("token"), store.shard_count)
        self._watch_offers()
        return {"offer": token, "addr": self.client_addr, "meta": offer.meta}

    async def _op_backup_read(self, request: dict[str, Any]) -> dict[str, Any]:
        offer = self.backup_offers.get(request.get("offer"))
        cells, last = await asyncio.to_thread(offer.page, check_cursor(request.get("after")))
        return {"cells": cells, "next": last}

    async def _op_backup_done(self, request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.to_thread(self.backup_offers.close, request.get("offer"))
        return {}

    def _watch_offers(self) -> None:
        """Close offers left idle (a saver that died) while any is open."""
        if self._watching_offers is None and self._loop is not None:
            def check() -> None:
                self._watching_offers = None
                self.backup_offers.drop_idle()
                if len(self.backup_offers):
                    self._watch_offers()
            self._watching_offers = self._loop.call_later(OFFERS_CHECK, check)



def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError("expected bytes")
    return value

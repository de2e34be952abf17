"""Snapshots in place of the engine's serializer: written on a thread of their own, sent
and received in pieces (docs/state-on-disk.md, "Snapshots").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport

from .. import snapshots
from ..client import Client
from ..files import fsync_dir
from ..snapshot_pull import READ_TIMEOUT, RETRY_AFTER, Offers, Pull, PullTransfer, check_offer
from ..statedb import PULLED_FILE
from ..store import Store
from .pinned import STATE_FAILURE_EXIT

log = logging.getLogger(__name__)

# -- snapshots ------------------------------------------------------------------

SNAPSHOT_PIECE = 256 * 1024  # bytes of a snapshot per message: well under MAX_RAFT_FRAME


@dataclass
class _SnapshotContext:
    """What the serializer needs that the engine does not give it: passed as its
    ``serializer`` setting (the engine hands that to the Serializer it builds)."""

    store: Store
    send_rate: float
    write_rate: float = snapshots.WRITE_RATE
    journal_bytes: Callable[[], int] = lambda: 0
    channel: Callable[[Any], snapshots.Channel | None] = lambda node: None  # to a peer
    compact_bytes: int = 64 << 20
    last_seconds: float = 0.0  # how long the last snapshot took to write
    serializer: _Serializer | None = None  # the one the engine built
    # Pulled snapshots (raftkv/snapshot_pull.py): this replica's client port (None: it
    # offers none), the secret to dial a leader's, the transfers it offers.
    client_addr: str | None = None
    secret: bytes = b""
    offers: Offers = field(default_factory=Offers)
    pulls_from: Callable[[Any], bool] = lambda node: False  # the peer speaks Raft format 3
    # Ends the engine's send loop for a follower until the round is over (_LeaderOffersOnce).
    pause: Callable[[Any], None] = lambda node: None
    pulls_installed: int = 0   # snapshots this replica pulled and installed


class _Serializer:
    """Takes the place of pysyncobj's Serializer (the engine builds it by this name).

    The engine calls :meth:`serialize` on its tick thread when the journal is
    long enough and polls :meth:`checkSerializing` each tick; on success it
    compacts the journal up to the entry it named.  Here the copy runs on a
    thread of its own (docs/state-on-disk.md, "Snapshots"), the tick thread's
    part is a pickle of two entries.  Sending and receiving go in pieces of
    :data:`SNAPSHOT_PIECE`, at most ``send_rate`` bytes a second per follower.
    """

    def __init__(self, file_name: str, piece: int, try_use_fork: bool,
                 context: _SnapshotContext, deserializer: Any, serialize_checker: Any) -> None:
        # The engine passes its settings in this order: fullDumpFile,
        # logCompactionBatchSize, useFork, serializer (our context), and two unused.
        self._path = Path(file_name)
        self._context = context
        context.serializer = self
        self._piece = piece
        self._writing: snapshots.BackgroundSnapshot | None = None
        self._id: int | None = None
        self._outgoing: dict[Any, snapshots.Outgoing | PullTransfer] = {}
        self._offered: set[Any] = set()  # followers sent their offer in this send round
        self._incoming: snapshots.Incoming | None = None  # a snapshot from the leader
        self._pull: Pull | None = None  # one pulled from the leader's client port
        self._client: Client | None = None  # to the leader's client port, for pulls

    def checkSerializing(self) -> tuple[int, int | None]:  # noqa: N802 - the engine's names
        writing = self._writing
        if writing is None:
            return _SERIALIZER.NOT_SERIALIZING, None
        if not writing.done():
            return _SERIALIZER.SERIALIZING, self._id
        self._writing = None
        self._context.last_seconds = writing.seconds
        if not writing.ok:
            return _SERIALIZER.FAILED, self._id
        # A follower in the middle of the old snapshot starts again with the new one:
        # the journal is about to lose the entries that would follow the old one.
        for outgoing in self._outgoing.values():
            outgoing.close()
        self._outgoing.clear()
        return _SERIALIZER.SUCCESS, self._id

    def serialize(self, data: tuple[Any, ...], id: int) -> None:  # noqa: A002 - the engine's name
        if self._writing is not None:
            return
        self._drop_stale_transfers()
        if self._outgoing and self._context.journal_bytes() < 4 * self._context.compact_bytes:
            return  # a follower is being sent the snapshot: a new one would start it over
        self._id = id
        bookkeeping = pysyncobj.pickle.dumps(data[1:])  # (last applied, the one before, nodes)
        self._writing = snapshots.BackgroundSnapshot(self._path, bookkeeping,
                                                     self._context.store.copy_image,
                                                     self._context.write_rate)

    def _drop_stale_transfers(self) -> None:
        """Transfers nobody asked for in a while: to a follower gone, or begun while this
        replica led (the engine cancels them only as leader)."""
        now = time.monotonic()
        for node, outgoing in list(self._outgoing.items()):
            if now - outgoing.last_used > snapshots.STALE_TRANSFER:
                self.cancelTransmisstion(node)

    def deserialize(self) -> tuple[Any, ...]:
        try:
            return (None, *snapshots.load_snapshot(self._context.store, self._path))
        except Exception as exc:  # noqa: BLE001 - the engine would log it and carry on
            # ... and acknowledge the snapshot, with neither its state nor a journal
            # that matches: a Raft voter that says it holds what it does not.
            _stop_replica(f"the snapshot {self._path} could not be loaded ({exc!r})")

    def getTransmissionData(self, node: Any) -> tuple[Any, ...] | None:  # noqa: N802
        outgoing = self._outgoing.get(node)
        if outgoing is None:
            try:
                outgoing = self._outgoing[node] = self._start_transfer(node)
            except (OSError, ValueError):
                log.exception("cannot open the snapshot to send it")
                return None
        if isinstance(outgoing, PullTransfer):
            # The engine asks again and again until its round is over, sending each
            # answer; one offer (or last piece) per round is all a pull needs.
            if node in self._offered:
                self._context.pause(node)
                return None
            self._offered.add(node)
        piece = outgoing.next_piece()
        if piece is not None and piece[2]:
            outgoing.close()
            del self._outgoing[node]
        return piece

    def _start_transfer(self, node: Any) -> snapshots.Outgoing | PullTransfer:
        """A pull for a follower that speaks it (docs/state-on-disk.md, "Snapshots"), pieces
        for one on older code and for a snapshot of data format 1."""
        context = self._context
        if (context.client_addr is not None and context.pulls_from(node)
                and not snapshots.read_header(self._path).legacy):
            return PullTransfer(context.offers, self._path, context.send_rate, context.client_addr)
        return snapshots.Outgoing(self._path, self._piece, context.send_rate,
                                  lambda: context.channel(node))

    def begin_round(self) -> None:
        """The engine starts a round of sending to every follower."""
        self._offered.clear()

    def cancel_all(self) -> None:
        """This replica no longer leads: every transfer it offers ends."""
        for node in list(self._outgoing):
            self.cancelTransmisstion(node)

    @property
    def sending(self) -> bool:
        return bool(self._outgoing)

    def setTransmissionData(self, data: tuple[Any, ...] | None) -> bool:  # noqa: N802
        """Write a piece from the leader; True once the whole snapshot is in place.

        A piece that does not follow the last one (lost with a broken connection)
        drops the transfer: the leader, finding us behind again, starts it over.
        A failure of our own disk stops the replica.
        """
        if data is None:
            return False
        piece, first, last = data[:3]
        offset = data[3] if len(data) > 3 else None  # older code sent no offsets
        info = data[4] if len(data) > 4 else None
        if isinstance(info, dict) and "pull" in info:
            return self._pulled(info, last)
        try:
            if first:
                self._abandon_pull()
                if self._incoming is not None:
                    self._incoming.abandon()
                self._incoming = snapshots.Incoming(
                    self._path.with_name(self._path.name + ".incoming"))
            if self._incoming is None:
                return False  # a piece of a transfer whose beginning we did not see
            if not self._incoming.add(piece, offset):
                log.warning("a piece of the leader's snapshot was lost; waiting for it again")
                self._incoming.abandon()
                self._incoming = None
                return False
            if not last:
                return False
            incoming, self._incoming = self._incoming, None
            incoming.finish()
            self._drop_own_snapshot()
            os.replace(incoming.path, self._path)
            fsync_dir(self._path.parent)
        except OSError as exc:
            _stop_replica(f"receiving the leader's snapshot failed ({exc!r})")
        return True  # the engine now calls deserialize, which installs it

    def _pulled(self, info: dict[str, Any], last: bool) -> bool:
        """An offer (the follower fetches the file on a thread of its own) or, once it
        said it has it all, the last piece: two renames put it in place."""
        pull = self._pull
        if not last:
            try:
                token, size, source, read = check_offer(info)
            except ValueError:
                log.exception("ignoring the leader's snapshot offer")
                return False
            if pull is not None and pull.token == token and (
                    pull.fetched or pull.running() or pull.failed_at is None
                    or time.monotonic() - pull.failed_at < RETRY_AFTER):
                return False  # offers repeat every round while the pull runs
            self._pull = self._start_pull(token, size, source, read, pull)
            return False
        self._pull = None
        if pull is None or pull.token != info.get("pull") or not pull.fetched:
            log.warning("the leader's snapshot was not pulled whole; waiting for a new offer")
            if pull is not None:
                pull.abandon()
            return False
        try:
            self._drop_own_snapshot()
            os.replace(pull.snapshot, self._path)
            fsync_dir(self._path.parent)
            self._context.store.install_prepared(pull.image)
        except OSError as exc:
            _stop_replica(f"installing the leader's snapshot failed ({exc!r})")
        self._context.pulls_installed += 1
        log.info("installed the snapshot pulled from %s (%d bytes)", pull.source, pull.size)
        return True  # the engine now calls deserialize: the store is already there

    def _start_pull(self, token: bytes, size: int, source: str, read: int,
                    previous: Pull | None) -> Pull:
        if self._client is None or self._client.addrs != (source,):
            if self._client is not None:
                self._client.close()
            self._client = Client([source], self._context.secret, timeout=READ_TIMEOUT)
        client = self._client
        return Pull(token, size, source, read, client.snapshot_read, client.snapshot_done,
                    self._path.with_name(self._path.name + ".pulled"),
                    self._context.store.db.path / PULLED_FILE, snapshots.image_offset,
                    previous, _stop_replica)

    def _abandon_pull(self) -> None:
        if self._pull is not None:
            self._pull.abandon()
            self._pull = None

    def _drop_own_snapshot(self) -> None:
        """A snapshot of our own still being written is given up: it would copy a store
        about to be replaced, and land over the leader's."""
        writing = self._writing
        if writing is not None:
            writing.cancel()
            self._writing = None

    def stop(self) -> None:
        """Give up a snapshot being written (it reads the store, about to close), and
        drop transfers in either direction."""
        self._drop_own_snapshot()
        if self._incoming is not None:
            self._incoming.abandon()
            self._incoming = None
        pull = self._pull
        self._abandon_pull()
        if self._client is not None:
            self._client.close()  # a read in flight fails at once
        if pull is not None:
            pull.join(READ_TIMEOUT)
        self.cancel_all()

    def cancelTransmisstion(self, node: Any) -> None:  # noqa: N802 - the engine's spelling
        outgoing = self._outgoing.pop(node, None)
        if outgoing is not None:
            outgoing.close()


def _stop_replica(reason: str) -> NoReturn:
    """Stop the process: this replica's own disk or state failed, and going on could
    leave it with a state, or a claim in Raft, that its peers do not share."""
    log.critical("stopping this replica: %s; fix the disk, then start it again", reason)
    logging.shutdown()
    os._exit(STATE_FAILURE_EXIT)


_SERIALIZER = pysyncobj.serializer.SERIALIZER_STATE
# The engine looks the name up when it is built, like the journal's.
pysyncobj.syncobj.Serializer = _Serializer

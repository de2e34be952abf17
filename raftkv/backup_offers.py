"""A replica's frozen state, held open for a backup and read in pages.

The saver (``shards/backup.py``) freezes every group (:mod:`raftkv.freezing`),
then asks each group's leader to open its state: one LMDB read transaction,
begun here and checked to hold that very freeze, so what it reads is the
group's state at the freeze entry and nothing after.  Once every group's state
is open the saver thaws them all and reads the pages at leisure; the cluster
writes on meanwhile.  A read transaction keeps the pages it sees from being
reused, so the store's file may grow by what is written during the backup.

An offer lives until the saver says it is done, or :data:`IDLE` seconds without
a page asked for.  A snapshot installed on this replica ends every offer (the
file under the transaction is replaced; :meth:`raftkv.statedb.StateDB.long_read`),
and the saver starts over.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import lmdb

from .errors import ConfigurationPending, OverLimit, ProtocolError, UnavailableError
from .freezing import FREEZE_META
from .statedb import StateDB
from .tables import Tables

MAX_OFFERS = 4             # backups being read from this replica at once
IDLE = 120.0               # seconds an offer waits for its next page request
PAGE_BYTES = 1 << 20       # keys and values in one page, about (a frame holds 4 MiB)
PAGE_CELLS = 4000          # and at most this many cells
TOKEN_SIZE = 16
MAX_KEY = 1024             # a cursor longer than this is no key of ours


class Offer:
    """One frozen state: a read transaction, and the meta it was checked against."""

    def __init__(self, db: StateDB, freeze_token: int, shard_count: int) -> None:
        self._db = db
        self._lock = threading.Lock()  # one page at a time; a revoke waits for it
        self.last_used = time.monotonic()
        self._txn: lmdb.Transaction[bytes] | None = db.long_read(self.revoke)
        try:
            self.meta = self._check(Tables(self._txn, db.tables), freeze_token, shard_count)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check(tables: Tables, freeze_token: int, shard_count: int) -> dict[str, Any]:
        freeze = tables.meta(FREEZE_META)
        index, _applied, clock, _format, _stamp = tables.meta("progress", [0, 0, 0.0, 0, 0])
        if not (isinstance(freeze, list) and freeze[0] == freeze_token and clock <= freeze[1]):
            # Not (or no longer) frozen by this backup here: the freeze has not
            # applied yet on a new leader, or ran out, or was thawed.
            raise ConfigurationPending("this replica's state is not frozen by that backup")
        return {"applied_index": int(index), "clock": float(clock), "shard_count": shard_count,
                # [shard, counter] pairs: the wire's maps have string keys only.
                "counters": [[int(k), int(v)] for k, v in tables.meta("counters", {}).items()],
                "ownership": tables.meta("ownership")}

    def page(self, after: bytes) -> tuple[list[list[bytes]], bytes | None]:
        """``([[key, packed cell], ...], the last key or None when no cell follows)``:
        the cells after ``after`` in key order (raw, as :mod:`raftkv.tables` keeps them)."""
        with self._lock:
            if self._txn is None:
                raise UnavailableError("the replica's store was replaced during the backup "
                                       "(it installed a snapshot): take the backup again")
            self.last_used = time.monotonic()
            cursor = self._txn.cursor(db=self._db.tables["cells"])
            cells: list[list[bytes]] = []
            size = 0
            found = cursor.set_range(after)
            if found and after and cursor.key() == after:
                found = cursor.next()
            while found:
                key, value = cursor.item()
                cells.append([key, value])
                size += len(key) + len(value)
                if size >= PAGE_BYTES or len(cells) >= PAGE_CELLS:
                    return cells, key if cursor.next() else None
                found = cursor.next()
            return cells, None

    def revoke(self) -> None:
        with self._lock:
            if self._txn is not None:
                self._txn.abort()
                self._txn = None

    def close(self) -> None:
        self.revoke()
        self._db.end_long_read(self.revoke)


class Offers:
    """The offers a replica holds, by token."""

    def __init__(self) -> None:
        self._offers: dict[bytes, Offer] = {}
        self._lock = threading.Lock()

    def open(self, db: StateDB, freeze_token: object, shard_count: int) -> tuple[bytes, Offer]:
        if not isinstance(freeze_token, int):
            raise ProtocolError("backup_open needs the freeze's integer token")
        self.drop_idle()
        with self._lock:
            if len(self._offers) >= MAX_OFFERS:
                raise OverLimit(f"{MAX_OFFERS} backups are being read from this replica already")
        offer = Offer(db, freeze_token, shard_count)
        token = os.urandom(TOKEN_SIZE)
        with self._lock:
            self._offers[token] = offer
        return token, offer

    def get(self, token: object) -> Offer:
        self.drop_idle()
        with self._lock:
            offer = self._offers.get(token) if isinstance(token, bytes) else None
        if offer is None:
            raise UnavailableError("no such backup here (it ended, or sat idle too long)")
        return offer

    def close(self, token: object) -> None:
        with self._lock:
            offer = self._offers.pop(token, None) if isinstance(token, bytes) else None
        if offer is not None:
            offer.close()

    def close_all(self) -> None:
        with self._lock:
            offers, self._offers = list(self._offers.values()), {}
        for offer in offers:
            offer.close()

    def drop_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [t for t, o in self._offers.items() if now - o.last_used > IDLE]
            dropped = [self._offers.pop(t) for t in idle]
        for offer in dropped:
            offer.close()

    def __len__(self) -> int:
        return len(self._offers)


def check_cursor(after: object) -> bytes:
    if not isinstance(after, bytes) or len(after) > MAX_KEY:
        raise ProtocolError("a backup page's cursor is a key of at most 1 KiB")
    return after

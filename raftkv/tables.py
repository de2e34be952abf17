"""The state machine's tables inside one LMDB transaction: what each key and value means.

Layout (docs/state-on-disk.md, "Key layout"; the byte codecs are
:mod:`raftkv.diskkeys`):

=========  ==========================================  ==================================
table      key                                         value
=========  ==========================================  ==================================
cells      shard + row + column                        version, flags, expiry, bytes
expiry     expiry + cell key                           (empty): the cells due by a time
blobs      cell key                                    (empty): the cells holding a blob
results    client id + sequence number                 a write's answer (msgpack)
sessions   client id                                   [ack, activity stamp, results kept]
activity   activity stamp + client id                  (empty): the idlest client first
intents    upload id (msgpack)                         [expiry, chunk digests] (msgpack)
meta       a name                                      msgpack
=========  ==========================================  ==================================

The two index tables are kept exact by every write and erase of a cell, so
nothing ever has to skip a stale entry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack

from . import diskkeys
from .diskkeys import CellValue

CLIENT = struct.Struct(">Q")
STAMP_CLIENT = struct.Struct(">QQ")
U64 = 1 << 64


class Tables:
    """Reads and writes of the tables through one transaction (read-only or not)."""

    __slots__ = ("txn", "_cells", "_expiry", "_blobs", "_results", "_sessions", "_activity",
                 "_intents", "_meta")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
        self.txn = txn
        self._cells, self._expiry, self._blobs = dbs["cells"], dbs["expiry"], dbs["blobs"]
        self._results, self._sessions = dbs["results"], dbs["sessions"]
        self._activity, self._intents, self._meta = dbs["activity"], dbs["intents"], dbs["meta"]

    # -- cells ------------------------------------------------------------------------

    def cell(self, key: bytes) -> CellValue | None:
        data = self.txn.get(key, db=self._cells)
        return None if data is None else diskkeys.unpack_cell(data)

    def put_cell(self, key: bytes, cell: CellValue) -> None:
        """Write ``cell`` at ``key``, keeping both indexes exact."""
        self.delete_cell(key)
        self.txn.put(key, diskkeys.pack_cell(cell.version, cell.value, cell.is_blob, cell.expires),
                     db=self._cells)
        if cell.expires is not None:
            self.txn.put(diskkeys.expiry_key(cell.expires, key), b"", db=self._expiry)
        if cell.is_blob:
            self.txn.put(key, b"", db=self._blobs)

    def delete_cell(self, key: bytes) -> CellValue | None:
        """Remove the cell at ``key`` and its index entries; the cell it was, if any."""
        old = self.cell(key)
        if old is not None:
            self.txn.delete(key, db=self._cells)
            self._unindex(key, old)
        return old

    def _unindex(self, key: bytes, old: CellValue) -> None:
        if old.expires is not None:
            self.txn.delete(diskkeys.expiry_key(old.expires, key), db=self._expiry)
        if old.is_blob:
            self.txn.delete(key, db=self._blobs)

    def cells(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, CellValue]]:
        """The cells with keys in ``[start, end)``, in key order."""
        cursor = self.txn.cursor(db=self._cells)
        if not cursor.set_range(start):
            return
        for key, data in cursor.iternext():
            if key >= end:
                return
            yield key, diskkeys.unpack_cell(data)

    def cells_backward(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, CellValue]]:
        """The cells with keys in ``[start, end)``, in descending key order."""
        cursor = self.txn.cursor(db=self._cells)
        # The last key below ``end``: one before the first at or after it, or the table's last.
        if not (cursor.prev() if cursor.set_range(end) else cursor.last()):
            return
        for key, data in cursor.iterprev():
            if key < start:
                return
            yield key, diskkeys.unpack_cell(data)

    def delete_cells(self, start: bytes, end: bytes) -> list[bytes]:
        """Remove every cell in ``[start, end)``; the manifests of the blob cells among them."""
        keys = [(key, cell) for key, cell in self.cells(start, end)]
        manifests = []
        for key, cell in keys:
            self.txn.delete(key, db=self._cells)
            self._unindex(key, cell)
            if cell.is_blob:
                manifests.append(cell.value)
        return manifests

    def due(self, now: float) -> Iterator[tuple[float, bytes]]:
        """``(expiry, cell key)`` of the cells that expire at or before ``now``, earliest first."""
        end = diskkeys.due_end(now)
        cursor = self.txn.cursor(db=self._expiry)
        if not cursor.first():
            return
        for entry in cursor.iternext(values=False):
            if entry >= end:
                return
            yield diskkeys.decode_expiry_key(entry)

    def blob_manifests(self) -> Iterator[bytes]:
        cursor = self.txn.cursor(db=self._blobs)
        if not cursor.first():
            return
        for key in cursor.iternext(values=False):
            data = self.txn.get(key, db=self._cells)
            if data is not None:
                yield diskkeys.unpack_cell(data).value

    def count(self, table: str) -> int:
        return int(self.txn.stat(getattr(self, "_" + table))["entries"])

    # -- the exactly-once table ---------------------------------------------------------

    def session(self, client: int) -> list[int] | None:
        """``[ack, activity stamp, results kept]`` of ``client``, or None."""
        data = self.txn.get(CLIENT.pack(client), db=self._sessions)
        return None if data is None else list(msgpack.unpackb(data))

    def put_session(self, client: int, record: list[int], old_stamp: int | None) -> None:
        if old_stamp is not None:
            self.txn.delete(STAMP_CLIENT.pack(old_stamp, client), db=self._activity)
        self.txn.put(STAMP_CLIENT.pack(record[1], client), b"", db=self._activity)
        self.txn.put(CLIENT.pack(client), msgpack.packb(record), db=self._sessions)

    def idlest_client(self) -> int | None:
        cursor = self.txn.cursor(db=self._activity)
        if not cursor.first():
            return None
        client: int = STAMP_CLIENT.unpack(cursor.key())[1]
        return client

    def forget_session(self, client: int) -> None:
        record = self.session(client)
        if record is None:
            return
        self.txn.delete(STAMP_CLIENT.pack(record[1], client), db=self._activity)
        self.txn.delete(CLIENT.pack(client), db=self._sessions)
        self.forget_results(client, U64 - 1)

    def result(self, client: int, seq: int) -> dict[str, Any] | None:
        data = self.txn.get(diskkeys.result_key(client, seq), db=self._results)
        return None if data is None else dict(msgpack.unpackb(data, raw=False))

    def put_result(self, client: int, seq: int, result: dict[str, Any]) -> None:
        self.txn.put(diskkeys.result_key(client, seq), msgpack.packb(result, use_bin_type=True),
                     db=self._results)

    def forget_results(self, client: int, up_to: int) -> int:
        """Drop ``client``'s answers to requests ``<= up_to``; how many there were."""
        start, end = diskkeys.result_key(client, 0), diskkeys.result_key(client, up_to)
        cursor = self.txn.cursor(db=self._results)
        dropped = 0
        if cursor.set_range(start):
            # delete() moves to the next entry; past the table's end the key is b"".
            while cursor.key() and cursor.key() <= end and cursor.delete():
                dropped += 1
        return dropped

    def sessions(self) -> Iterator[tuple[int, list[int], list[tuple[int, dict[str, Any]]]]]:
        """Every client, idlest first: id, record, and its kept answers (snapshots, tests)."""
        cursor = self.txn.cursor(db=self._activity)
        if not cursor.first():
            return
        for key in cursor.iternext(values=False):
            client = STAMP_CLIENT.unpack(key)[1]
            record = self.session(client)
            assert record is not None
            answers = []
            results = self.txn.cursor(db=self._results)
            if results.set_range(diskkeys.result_key(client, 0)):
                for rkey, data in results.iternext():
                    owner, seq = diskkeys.RESULT.unpack(rkey)
                    if owner != client:
                        break
                    answers.append((seq, dict(msgpack.unpackb(data, raw=False))))
            yield client, record, answers

    # -- intents ---------------------------------------------------------------------

    def intent(self, upload: int) -> tuple[float, list[bytes]] | None:
        data = self.txn.get(msgpack.packb(upload), db=self._intents)
        if data is None:
            return None
        expires, chunks = msgpack.unpackb(data)
        return float(expires), list(chunks)

    def put_intent(self, upload: int, expires: float, chunks: list[bytes]) -> None:
        self.txn.put(msgpack.packb(upload), msgpack.packb([expires, chunks], use_bin_type=True),
                     db=self._intents)

    def delete_intent(self, upload: int) -> bool:
        return bool(self.txn.delete(msgpack.packb(upload), db=self._intents))

    def intents(self) -> Iterator[tuple[int, float, list[bytes]]]:
        cursor = self.txn.cursor(db=self._intents)
        if not cursor.first():
            return
        for key, data in cursor.iternext():
            expires, chunks = msgpack.unpackb(data)
            yield int(msgpack.unpackb(key)), float(expires), list(chunks)

    # -- meta --------------------------------------------------------------------------

    def meta(self, name: str, default: Any = None) -> Any:
        data = self.txn.get(name.encode(), db=self._meta)
        return default if data is None else msgpack.unpackb(data, raw=False, strict_map_key=False)

    def put_meta(self, name: str, value: Any) -> None:
        self.txn.put(name.encode(), msgpack.packb(value, use_bin_type=True), db=self._meta)

    def clear(self) -> None:
        """Empty every table (before a state is loaded whole)."""
        for db in (self._cells, self._expiry, self._blobs, self._results, self._sessions,
                   self._activity, self._intents, self._meta):
            self.txn.drop(db, delete=False)

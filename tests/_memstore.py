"""An in-process :class:`~raftkv.interface.ShardedStore`: the real state machine, no sockets.

It drives :class:`raftkv.store.Store` (the same code every replica runs) the
way the client does, so model code meets the real conditions, versions, expiry
and errors; blobs are not split (values stay inline).  Each command applies at
``time.time()``, as a log entry the leader stamped would.  ``ops`` records each call
as ``(method, row)`` for tests that check what a change touched (one line per store
round trip: a ``get_cells`` call is one, its rows joined by ``","``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from raftkv.client import cells_request, ttl_field
from raftkv.errors import from_wire
from raftkv.interface import (
    Cell,
    Condition,
    Consistency,
    Mutation,
    Readable,
    StaleCell,
    Unchanged,
)
from raftkv.keys import shard_of
from raftkv.store import Store


class MemClient:
    """The store interface (:class:`~raftkv.interface.ShardedStore`) over one in-memory Store."""

    def __init__(self) -> None:
        self.store = Store(shards=8)
        self.ops: list[tuple[str, str]] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def _apply(self, method: str, command: dict[str, Any], write: bool,
               touched: str | None = None) -> dict[str, Any]:
        with self._lock:
            if touched is None:
                touched = str(command.get("row", command.get("shard", "")))
            self.ops.append((method, touched))
            if write:
                seq = next(self._seq)
                command = {**command, "cid": 1, "seq": seq, "ack": seq - 1}
            result = self.store.apply_entry([time.time(), command])[0]
        if "error" in result:
            raise from_wire(result)
        return result

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        result = self._apply("get", {"op": "get", "row": row, "col": col}, False)
        return Cell(result["value"], result["version"]) if result["found"] else None

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        return self._apply("put", {"op": "put", "row": row, "col": col, "value": value,
                                   **ttl_field(ttl)}, True)["version"]

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        parts = [stream] if isinstance(stream, bytes) else []
        while not isinstance(stream, bytes) and (chunk := stream.read(64 * 1024)):
            parts.append(chunk)
        return self._apply("put_stream", {"op": "put", "row": row, "col": col,
                                          "value": b"".join(parts), **ttl_field(ttl)},
                           True)["version"]

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        result = self._apply("get_stream", {"op": "get", "row": row, "col": col}, False)
        if not result["found"]:
            return None
        value = result["value"]
        return len(value), iter([value[i:i + 4096] for i in range(offset, len(value), 4096)])

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        result = self._apply("get_into", {"op": "get", "row": row, "col": col}, False)
        if not result["found"]:
            return None
        out.write(result["value"])
        return result["version"]

    def delete(self, row: str, col: str) -> bool:
        return self._apply("delete", {"op": "delete", "row": row, "col": col},
                           True)["deleted"]

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        command: dict[str, Any] = {"op": "cput", "row": row, "col": col, "value": new,
                                   **ttl_field(ttl)}
        if if_version is not None:
            command["if_version"] = if_version
        else:
            command["old"] = old
        return self._apply("cput", command, True)["version"]

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        return self._apply("mutate_row", {
            "op": "mutate_row", "row": row, "conditions": [list(c) for c in conditions],
            "mutations": [list(m) for m in mutations], **ttl_field(ttl)}, True)["versions"]

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        request = cells_request(cells, known)
        if not request:
            return []
        rows = ",".join(dict.fromkeys(row for row, _, _ in request))
        result = self._apply("get_cells", {"op": "get_cells", "cells": request}, False, rows)
        stale = consistency == "stale"
        return [None if answer is None else Unchanged(answer[0], stale) if len(answer) == 1
                else _cell(answer[1], answer[0], stale) for answer in result["cells"]]

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        if limit is not None and limit < 0:
            raise ValueError("limit is a number of cells, 0 or more")
        cells: dict[str, Cell] = {}
        while limit is None or len(cells) < limit:
            command: dict[str, Any] = {"op": "get_row", "row": row, "prefix": prefix,
                                       "after": after, "reverse": reverse}
            if limit is not None:
                command["limit"] = limit - len(cells)
            result = self._apply("get_row", command, False)
            for col, version, value, _blob in result["cells"]:
                cells[col], after = _cell(value, version, consistency == "stale"), col
            if not result["more"]:
                break
        return cells

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        rows: list[tuple[str, dict[str, Cell]]] = []
        while len(rows) < limit:  # as raftkv.Client: pages cut at the byte budget follow
            result = self._apply("scan", {"op": "scan", "shard": shard, "after": after_row,
                                          "limit": limit - len(rows), "pages": True}, False)
            rows.extend((row, {col: Cell(value, version) for col, version, value, _ in cells})
                        for row, cells in result["rows"])
            if not result.get("more") or not result["rows"]:
                return rows
            after_row = rows[-1][0]
        return rows

    def shard_of(self, row: str) -> int:
        return shard_of(row, self.store.shard_count)

    def close(self) -> None:
        pass

    def touched(self, method: str) -> list[str]:
        """Rows that calls of ``method`` touched, in order."""
        return [row for m, row in self.ops if m == method]


class CountingClient(MemClient):
    """A :class:`MemClient` that counts the ``mutate_row`` calls that succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.mutations = 0

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        versions = super().mutate_row(row, conditions, mutations, ttl=ttl)
        self.mutations += 1
        return versions


def _cell(value: bytes, version: int, stale: bool) -> Cell:
    return StaleCell(value, version) if stale else Cell(value, version)


# -- what a Store holds, for tests that look inside (the whole state, read at once) --


def shards_of(store: Store) -> dict[int, dict[str, dict[str, list[Any]]]]:
    """shard -> row -> column -> ``[version, value, is_blob(, expires)]``."""
    shards: dict[int, dict[str, dict[str, list[Any]]]] = store.snapshot()["shards"]
    return shards


def intents_of(store: Store) -> dict[int, tuple[float, list[bytes]]]:
    """upload id -> (expiry, chunk digests)."""
    return {upload: (expires, chunks) for upload, expires, chunks in store.snapshot()["intents"]}


def blob_cells_of(store: Store) -> dict[tuple[str, str], bytes]:
    """(row, column) -> manifest of every cell holding a blob."""
    return {(row, col): cell[1] for table in shards_of(store).values()
            for row, cells in table.items() for col, cell in cells.items() if cell[2]}

"""The client's cell API: one cell's reads and writes, a row's atomic change, paged reads.

A mixin of :class:`raftkv.Client`, kept apart so that the client's module reads as
its connections and retries, and this one as the store interface
(:mod:`raftkv.interface`) it offers: each method builds one request, and the
client's ``_call`` (writes, with their exactly-once ids) or ``_read`` sends it.
Values of any size are written and read back whole here; how a large one travels
beside Raft is the blob calls' (:mod:`raftkv.client_blobs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .cells import MAX_TTL
from .errors import ProtocolError, TooLarge
from .interface import (
    MAX_CELLS,
    Cell,
    Condition,
    Consistency,
    Mutation,
    Readable,
    Unchanged,
)
from .operations import unknown_operation


class CellCalls:
    """Mixin of :class:`raftkv.client.Client` (which provides ``_call`` and ``_read``, and
    through :class:`~raftkv.client_blobs.BlobCalls` the writing and reading of values)."""

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _read(self, request: dict[str, Any], consistency: Consistency) -> dict[str, Any]:
        raise NotImplementedError

    def _write_values(self, values: Sequence[bytes | Readable],
                      build: Callable[[list[tuple[bytes, bool]]], dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def _full_cell(self, version: int, value: bytes, blob: bool, stale: bool) -> Cell:
        raise NotImplementedError

    @staticmethod
    def _comparable(value: bytes) -> bytes:
        raise NotImplementedError

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        raise NotImplementedError

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        """The cell at (row, col), or None.

        ``consistency="stale"`` reads any one replica that answers (it works
        with a single replica alive) and returns a :class:`StaleCell`.
        """
        return self._cell(self._read({"op": "get", "row": row, "col": col}, consistency))

    def _cell(self, result: dict[str, Any]) -> Cell | None:
        if not result.get("found"):
            return None
        return self._full_cell(result["version"], result["value"], bool(result.get("blob")),
                               bool(result.get("stale")))

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        """Store a value of any size; returns the cell's new version.

        ``ttl``: the cell expires this many seconds after the write, on the
        group's clock (reads then find it absent); without, it never does.
        """
        return self.put_stream(row, col, value, ttl=ttl)

    def delete(self, row: str, col: str) -> bool:
        """Delete a cell; True if it existed."""
        deleted: bool = self._call({"op": "delete", "row": row, "col": col},
                                   write=True)["deleted"]
        return deleted

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        """Store ``new`` only if the cell still holds ``old`` (None: absent) or ``if_version``.

        An expired cell is absent.  ``ttl`` as for :meth:`put`.
        :raises ConditionFailed: with the cell's current version (0 if absent).
        """
        condition: dict[str, Any] = ({"if_version": if_version} if if_version is not None else
                                     {"old": None if old is None else self._comparable(old)})
        expiry = ttl_field(ttl)
        version: int = self._write_values([new], lambda s: {
            "op": "cput", "row": row, "col": col, "value": s[0][0], "blob": s[0][1],
            **condition, **expiry})["version"]
        return version

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        """Apply ``mutations`` to one row atomically if every condition holds.

        Conditions: ``("version", col, n)``, ``("absent", col)``, ``("value", col, bytes)``;
        an expired cell is absent.
        Mutations: ``("put", col, value)``, ``("delete", col)``.  ``ttl`` (as for
        :meth:`put`) applies to every cell the call puts.
        """
        expiry = ttl_field(ttl)
        conds = [[c[0], c[1], self._comparable(c[2])] if c[0] == "value" else list(c)
                 for c in conditions]
        values = [m[2] for m in mutations if m[0] == "put"]

        def build(stored: list[tuple[bytes, bool]]) -> dict[str, Any]:
            pending = iter(stored)
            muts = [["put", m[1], *next(pending)] if m[0] == "put" else list(m)
                    for m in mutations]
            return {"op": "mutate_row", "row": row, "conditions": conds, "mutations": muts,
                    **expiry}
        versions: dict[str, int] = self._write_values(values, build)["versions"]
        return versions

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        """Cells of any rows of this group in one request, answered from one state of the
        store (linearizable: by the leader without a log entry, as :meth:`get`).

        ``known[i]``, the version the caller holds of cell ``i`` (0: none), makes the
        answer :class:`Unchanged` while the cell still has it: no value comes back.
        A replica of a release without ``get_cells`` is read cell by cell instead.
        :raises TooLarge: more than :data:`~raftkv.interface.MAX_CELLS` cells.
        :raises WrongShard: one of the rows' shards is not served here.
        """
        request = cells_request(cells, known)
        if not request:
            return []
        try:
            result = self._read({"op": "get_cells", "cells": request}, consistency)
        except (ProtocolError, TooLarge) as exc:
            # A replica of a release without get_cells; or, while a group's reads go
            # through the log (an upgrade in progress), a request above the entry cap
            # (long names).  Cell by cell, each answer is the same (and a cell's own
            # TooLarge, a key too long, is raised by its get).
            if isinstance(exc, ProtocolError) and str(exc) != unknown_operation("get_cells"):
                raise
            return [self._cell_if_changed(row, col, version, consistency)
                    for row, col, version in request]
        stale = bool(result.get("stale"))
        return [self._decoded(answer, stale) for answer in result["cells"]]

    def _decoded(self, answer: list[Any] | None, stale: bool) -> Cell | Unchanged | None:
        """One cell of a ``get_cells`` answer: a blob's bytes are fetched as :meth:`get` does."""
        if answer is None:
            return None
        if len(answer) == 1:
            return Unchanged(answer[0], stale)
        version, value, blob = answer
        return self._full_cell(version, value, blob, stale)

    def _cell_if_changed(self, row: str, col: str, known: int,
                         consistency: Consistency) -> Cell | Unchanged | None:
        """``get_cells``' answer for one cell, from a ``get`` (replicas that predate it)."""
        result = self._read({"op": "get", "row": row, "col": col}, consistency)
        if result.get("found") and 0 < known == result["version"]:
            return Unchanged(known, bool(result.get("stale")))
        return self._cell(result)

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        """The cells of ``row`` whose column starts with ``prefix`` (large values included),
        in column order, or descending with ``reverse``: those after ``after`` (before it
        with ``reverse``; ``""`` then starts at the last column), ``limit`` at most.

        The replica reads each page straight off its table's key range; pages of at
        most :data:`~raftkv.pagereads.MAX_ROW_CELLS_RETURNED` follow one another until
        ``limit`` is reached or the range ends (each page is one read: a row that
        changes meanwhile may show cells of two moments).
        """
        if limit is not None and limit < 0:
            raise ValueError("limit is a number of cells, 0 or more")
        cells: dict[str, Cell] = {}
        for col, version, value, blob, stale in self._row_pages(row, prefix, after, limit,
                                                                reverse, consistency):
            cells[col] = self._full_cell(version, value, blob, stale)
        return cells

    def _row_pages(self, row: str, prefix: str, after: str, limit: int | None, reverse: bool,
                   consistency: Consistency) -> Iterator[tuple[str, int, bytes, bool, bool]]:
        """``(column, version, value, is_blob, stale)`` of the cells ``get_row`` returns."""
        taken = 0
        while limit is None or taken < limit:
            request: dict[str, Any] = {"op": "get_row", "row": row, "prefix": prefix,
                                       "after": after}
            if limit is not None:
                request["limit"] = limit - taken
            if reverse:
                request["reverse"] = True
            result = self._read(request, consistency)
            if reverse and not result.get("reverse"):
                # A replica that predates reverse pages ignored it and paged forward.
                yield from self._reversed_here(row, prefix, after,
                                               None if limit is None else limit - taken,
                                               consistency)
                return
            stale = bool(result.get("stale"))
            for col, version, value, blob in result["cells"]:
                yield col, version, value, blob, stale
                after = col
                taken += 1
            if not result.get("more"):
                return

    def _reversed_here(self, row: str, prefix: str, before: str, limit: int | None,
                       consistency: Consistency) -> Iterator[tuple[str, int, bytes, bool, bool]]:
        """A reverse page from forward pages: every column under ``prefix`` read, the
        last ``limit`` before ``before`` kept (during an upgrade only)."""
        found = [cell for cell in self._row_pages(row, prefix, "", None, False, consistency)
                 if not before or cell[0] < before]
        found.reverse()
        yield from found if limit is None else found[:limit]

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        """Up to ``limit`` rows of ``shard`` after ``after_row``; large values summarised.

        A blob's cell holds its manifest here, not its bytes: a browser of raw
        data should not pull gigabytes.  :func:`raftkv.blobs.read_manifest` reads it.
        A row carries at most 1000 cells or about 1 MiB of values (``get_row``
        reads all of it).  Fewer than ``limit`` rows come back only at the shard's
        end: a replica's answer that stopped at its byte budget is followed by the next.
        """
        rows: list[tuple[str, dict[str, Cell]]] = []
        while len(rows) < limit:
            result = self._read({"op": "scan", "shard": shard, "after": after_row,
                                 "limit": limit - len(rows), "pages": True}, consistency)
            rows.extend((row, {col: Cell(value, version) for col, version, value, _blob in cells})
                        for row, cells in result["rows"])
            if not result.get("more") or not result["rows"]:
                return rows
            after_row = rows[-1][0]
        return rows


def cells_request(cells: Sequence[tuple[str, str]], known: Sequence[int] | None
                  ) -> list[list[Any]]:
    """``get_cells``' cells as sent: ``[row, column, known version (0: none)]`` each.

    :raises TooLarge: more than :data:`~raftkv.interface.MAX_CELLS`.
    :raises ValueError: ``known`` does not give one version per cell.
    """
    if len(cells) > MAX_CELLS:
        raise TooLarge(f"get_cells reads at most {MAX_CELLS} cells at once, not {len(cells)}: "
                       "split the call")
    versions = [0] * len(cells) if known is None else list(known)
    if len(versions) != len(cells) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in versions):
        raise ValueError("known gives one version (an int, 0: none) per cell")
    return [[row, col, version] for (row, col), version in zip(cells, versions, strict=True)]


def ttl_field(ttl: float | None) -> dict[str, float]:
    """The ``ttl`` field of a write: none for a permanent cell."""
    if ttl is None:
        return {}
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (
            math.isfinite(ttl) and ttl > 0):
        raise ValueError("ttl is a positive number of seconds")
    return {"ttl": min(float(ttl), MAX_TTL)}

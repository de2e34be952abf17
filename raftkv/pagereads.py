"""The store's paged reads: a page of a row's columns, cells of many rows, a page of rows.

A mixin of :class:`raftkv.store.Store`, kept apart so the store reads as its writes.
Each answer is read straight off the table's key ranges inside the caller's read
transaction and stops near :data:`ROW_PAGE_BYTES`, so no answer outgrows a frame
and no read walks a whole row or shard (docs/store-promises.md, "The interface").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import diskkeys
from .diskkeys import CellValue
from .interface import MAX_CELLS
from .keys import shard_of
from .tables import U64

if TYPE_CHECKING:
    from .tables import Tables

Result = dict[str, Any]

MAX_ROW_CELLS_RETURNED = 1000  # get_row and scan answers stay well under a frame
# A get_row or scan page stops once its values pass this many bytes (1000 inline values
# of up to 16 KiB would not fit a frame); the client asks for the next page.
ROW_PAGE_BYTES = 1024 * 1024


def _error(name: str, message: str, **fields: Any) -> Result:
    return {"error": name, "message": message, **fields}


class PageReads:
    """Mixin of :class:`raftkv.store.Store`: ``get_row``, ``get_cells`` and ``scan``."""

    shard_count: int

    @property
    def _t(self) -> Tables:
        raise NotImplementedError

    def live(self, cell: CellValue) -> bool:
        raise NotImplementedError

    def _cell(self, row: str, col: str) -> CellValue | None:
        raise NotImplementedError

    def _op_get_row(self, c: dict[str, Any]) -> Result:
        """A page of a row's columns from the cursor: those after ``after`` in column
        order, or with ``reverse`` those before it in descending order (``""``: from the
        last).  Read straight off the table's key range, never the whole row; ``more``
        says whether another live cell follows the page."""
        prefix, after, reverse = c.get("prefix", ""), c.get("after", ""), c.get("reverse", False)
        if not isinstance(prefix, str) or not isinstance(after, str):
            raise TypeError("prefix and after are strings")
        if not isinstance(reverse, bool):
            raise TypeError("reverse is true or false")
        limit = min(int(c.get("limit") or MAX_ROW_CELLS_RETURNED), MAX_ROW_CELLS_RETURNED)
        row = c["row"]
        shard = shard_of(row, self.shard_count)
        if reverse:
            start, end = diskkeys.columns_before(shard, row, prefix, after)
            found = self._t.cells_backward(start, end)
        else:
            start, end = diskkeys.columns_range(shard, row, prefix, after)
            found = self._t.cells(start, end)
        base = len(diskkeys.row_prefix(shard, row))
        cells: list[list[Any]] = []
        more = False
        size = 0
        for key, cell in found:
            if not self.live(cell):
                continue
            if len(cells) == limit or size >= ROW_PAGE_BYTES:
                more = True
                break
            cells.append([key[base:].decode("utf-8"), cell.version, cell.value, cell.is_blob])
            size += len(key) + len(cell.value)
        # "reverse" in the answer tells the client the order was honoured: a replica of
        # an older release ignores the field and pages forward (the client then sorts).
        return {"cells": cells, "more": more, **({"reverse": True} if reverse else {})}

    def _op_get_cells(self, c: dict[str, Any]) -> Result:
        """Cells of any rows of this group, from one read of the store: per cell None
        (absent), ``[version]`` (the ``known`` version the caller holds: no value sent)
        or ``[version, value, is_blob]``.  The WrongShard check covered every row."""
        wanted = c["cells"]
        if not isinstance(wanted, list):
            raise TypeError("cells is a list of [row, column, known version]")
        if len(wanted) > MAX_CELLS:
            return _error("TooLarge", f"get_cells reads at most {MAX_CELLS} cells at once")
        answers: list[list[Any] | None] = []
        for row, col, known in wanted:
            cell = self._cell(row, col)
            if cell is None:
                answers.append(None)
            elif isinstance(known, int) and known > 0 and known == cell.version:
                answers.append([cell.version])
            else:
                answers.append([cell.version, cell.value, cell.is_blob])
        return {"cells": answers}

    def _op_scan(self, c: dict[str, Any]) -> Result:
        shard, after = int(c["shard"]), c.get("after", "")
        if not isinstance(after, str) or not 0 <= shard < U64 >> 32:
            raise ValueError("scan takes a shard number and a row name")
        limit = max(1, min(int(c.get("limit") or 10), 100))
        start, end = diskkeys.rows_range(shard, after)
        page: list[list[Any]] = []
        size = 0
        # As get_row's pages, a scan's answer stops near ROW_PAGE_BYTES of values: 100
        # rows of 1000 inline values would not fit a frame.  Only a page's first row is
        # ever cut there; a later row that does not fit waits whole for the next page.
        # A client of an older release takes fewer rows than it asked for as the
        # shard's end (account erasure would stop early), so only a client that says
        # it asks again ("pages") gets a budget.
        budget = ROW_PAGE_BYTES if c.get("pages") is True else math.inf
        while len(page) < limit and size < budget:
            first = next(self._t.cells(start, end), None)
            if first is None:
                return {"rows": page, "more": False}
            row = diskkeys.decode_cell_key(first[0]).row
            prefix = diskkeys.row_prefix(shard, row)
            live: list[list[Any]] = []
            for key, cell in self._t.cells(prefix, diskkeys.prefix_end(prefix)):
                if len(live) == MAX_ROW_CELLS_RETURNED:
                    break
                if size >= budget:
                    if page:
                        return {"rows": page, "more": True}
                    break
                if self.live(cell):
                    live.append([key[len(prefix):].decode("utf-8"), cell.version, cell.value,
                                 cell.is_blob])
                    size += len(key) + len(cell.value)
            if live:  # a row whose every cell expired is gone
                page.append([row, live])
            start = diskkeys.prefix_end(prefix)
        return {"rows": page, "more": next(self._t.cells(start, end), None) is not None}


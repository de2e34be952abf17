"""The store's cell operations: one cell's reads and writes, a row's atomic change, expiry.

A mixin of :class:`raftkv.store.Store`, kept apart so that the store reads as the
path every command takes (exactly-once, the transaction, the shard check) and this
module as what the commands on cells do once they are let through.  Like all of the
store, everything here is deterministic (docs/data-model.md).

Versions: each shard keeps its own counter; every write, and every delete, moves it,
so a cell's versions grow strictly through deletes, re-creates and shard moves.  An
expired cell is absent to reads and conditions from its expiry on, on the group's
clock, until ``expire_cells`` (issued by the leader, :mod:`raftkv.expiry`) removes it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import diskkeys
from .diskkeys import CellValue
from .keys import shard_of

if TYPE_CHECKING:
    from .tables import Tables

Result = dict[str, Any]
MAX_TTL = 10 * 365 * 86_400.0  # seconds a cell may be given to live (ten years)
EXPIRE_CELLS = 1000         # expired cells one expire_cells command removes at most
EXPIRE_LOOKS = 10 * EXPIRE_CELLS  # index entries it looks at, at most (others' cells wait)
# LMDB's keys are at most 511 bytes, and a cell's key also sits behind an
# expiry (8 bytes) in the expiry index.
MAX_CELL_KEY = 511 - diskkeys.EXPIRY.size


class KeyTooLong(ValueError):
    """A row and column too long for a key of the store (refused the same way everywhere)."""


def error(name: str, message: str, **fields: Any) -> Result:
    """A result that the server turns into the named :mod:`raftkv.errors` exception."""
    return {"error": name, "message": message, **fields}


class CellOperations:
    """Mixin of :class:`raftkv.store.Store`: ``get``, ``put``, ``delete``, ``cput``,
    ``mutate_row`` and ``expire_cells``, and the cell helpers the other mixins use."""

    shard_count: int
    clock: float
    counters: dict[int, int]
    _counters_dirty: bool
    owned: set[int] | None

    @property
    def _t(self) -> Tables:
        raise NotImplementedError

    def _key(self, row: str, col: str) -> bytes:
        if not isinstance(row, str) or not isinstance(col, str):
            raise TypeError("row and column must be strings")
        key = diskkeys.cell_key(shard_of(row, self.shard_count), row, col)
        if len(key) > MAX_CELL_KEY:
            raise KeyTooLong(f"a row and column may be at most {MAX_CELL_KEY - 5} bytes together")
        return key

    def _next_version(self, row: str) -> int:
        shard = shard_of(row, self.shard_count)
        version = self.counters.get(shard, 0) + 1
        self.counters[shard] = version
        self._counters_dirty = True
        return version

    def live(self, cell: CellValue) -> bool:
        """Whether ``cell`` has not expired on the group's clock (every read asks)."""
        return cell.expires is None or cell.expires > self.clock

    def _cell(self, row: str, col: str) -> CellValue | None:
        """The live cell at (row, col): an expired one is absent to reads and conditions."""
        cell = self._t.cell(self._key(row, col))
        return cell if cell is None or self.live(cell) else None

    def _expires(self, c: dict[str, Any]) -> float | None:
        """When cells this command puts expire: its ``ttl`` after the entry's time."""
        ttl = c.get("ttl")
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (
                math.isfinite(ttl) and ttl > 0):
            raise ValueError("ttl is a positive number of seconds")
        return self.clock + min(float(ttl), MAX_TTL)

    def _write(self, row: str, col: str, value: bytes, is_blob: bool,
               expires: float | None = None) -> int:
        if not isinstance(value, bytes):
            raise TypeError("value must be bytes")
        key = self._key(row, col)
        version = self._next_version(row)
        self._t.put_cell(key, CellValue(version, value, bool(is_blob), expires))
        return version

    def _erase(self, row: str, col: str) -> bool:
        if self._t.delete_cell(self._key(row, col)) is None:
            return False
        # The counter still moves, so a re-created cell gets a larger version
        # than anything a reader may have cached before the delete.
        self._next_version(row)
        return True

    @staticmethod
    def _cell_result(cell: CellValue | None) -> Result:
        if cell is None:
            return {"found": False}
        return {"found": True, "version": cell.version, "value": cell.value, "blob": cell.is_blob}

    # -- operations ---------------------------------------------------------

    def _op_get(self, c: dict[str, Any]) -> Result:
        return self._cell_result(self._cell(c["row"], c["col"]))

    def _op_put(self, c: dict[str, Any]) -> Result:
        return {"version": self._write(c["row"], c["col"], c["value"], c.get("blob", False),
                                       self._expires(c))}

    def _op_delete(self, c: dict[str, Any]) -> Result:
        existed = self._cell(c["row"], c["col"]) is not None
        self._erase(c["row"], c["col"])  # an expired cell goes too, but did not exist
        return {"deleted": existed}

    def _op_cput(self, c: dict[str, Any]) -> Result:
        cell = self._cell(c["row"], c["col"])
        current = cell.version if cell else 0
        if "if_version" in c:
            holds = current == c["if_version"]
        else:
            # By value: None means "absent"; a blob cell compares its manifest,
            # which the client computed from the old value the same way.
            old = c["old"]
            holds = (cell is None) if old is None else (cell is not None and cell.value == old)
        if not holds:
            return error("ConditionFailed", "the cell changed", version=current)
        return {"version": self._write(c["row"], c["col"], c["value"], c.get("blob", False),
                                       self._expires(c))}

    def _op_mutate_row(self, c: dict[str, Any]) -> Result:
        row = c["row"]
        for condition in c["conditions"]:
            kind, col = condition[0], condition[1]
            cell = self._cell(row, col)
            current = cell.version if cell else 0
            if kind == "version":
                holds = current == condition[2]
            elif kind == "absent":
                holds = cell is None
            elif kind == "value":
                holds = cell is not None and cell.value == condition[2]
            else:
                return error("ProtocolError", f"unknown condition {kind!r}")
            if not holds:
                return error("ConditionFailed", f"condition on {col!r} failed",
                             version=current, column=col)
        mutations = c["mutations"]
        for mutation in mutations:  # validate all before changing anything: atomic
            if mutation[0] not in ("put", "delete") or not isinstance(mutation[1], str):
                return error("ProtocolError", f"malformed mutation {mutation[:2]!r}")
            if mutation[0] == "put" and not isinstance(mutation[2], bytes):
                return error("ProtocolError", "a put mutation needs a bytes value")
        expires = self._expires(c)
        versions: dict[str, int] = {}
        for mutation in mutations:
            if mutation[0] == "put":
                is_blob = len(mutation) > 3 and bool(mutation[3])
                versions[mutation[1]] = self._write(row, mutation[1], mutation[2], is_blob,
                                                    expires)
            else:
                self._erase(row, mutation[1])
        return {"versions": versions}

    def _op_expire_cells(self, c: dict[str, Any]) -> Result:
        """Remove up to ``limit`` expired cells, earliest expiry first (then by key).

        Which cells go depends only on the state, so every replica removes the
        same ones.  Cells of a shard being moved out are left to the drop; those
        of any other shard not served here wait until it is.
        """
        limit = min(int(c.get("limit") or EXPIRE_CELLS), EXPIRE_CELLS)
        due: list[bytes] = []
        looked = 0
        for _expires, key in self._t.due(self.clock):
            if len(due) >= limit or looked >= EXPIRE_LOOKS:
                break
            looked += 1
            shard = diskkeys.SHARD.unpack_from(key)[0]
            if self.owned is not None and shard not in self.owned:
                continue
            due.append(key)
        for key in due:  # not while the index is being walked
            self._t.delete_cell(key)
            self._next_version(diskkeys.decode_cell_key(key).row)
        return {"expired": len(due), "more": len(due) == limit or looked >= EXPIRE_LOOKS}

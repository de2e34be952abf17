"""The replicated state machine: a sparse table, plain Python, no sockets, no Raft.

``Store.apply(command)`` is called with the same commands in the same order on
every replica (by :mod:`raftkv.node`), so everything here is deterministic: no
clocks, no randomness, no iteration over unordered sets.

Data model (DESIGN.md section 3): row -> column -> cell, grouped by shard.  A
cell is ``(version, value, is_blob)``; ``value`` is the bytes themselves, or a
blob manifest when ``is_blob`` (the chunks live beside Raft, see
:mod:`raftkv.blobs`).  Each shard keeps its own version counter; every write sets
the cell's version to the counter's next value, so a cell's versions grow
strictly through deletes, re-creates and (later) shard moves.

Commands and results are plain dicts (they arrive as msgpack maps).  A mutating
command carries ``cid`` (client id), ``seq`` (its sequence number) and ``ack``
(every ``seq <= ack`` of that client has been answered): the result of each
unanswered ``seq`` is kept, so a retried request gets the stored answer instead
of being applied twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from typing import Any

from .keys import DEFAULT_SHARDS, shard_of

Cell = tuple[int, bytes, bool]  # (version, value or manifest, is_blob)
Result = dict[str, Any]

READ_OPS = frozenset({"get", "get_row", "scan", "noop"})
WRITE_OPS = frozenset({"put", "delete", "cput", "mutate_row"})
MAX_SESSIONS = 10_000       # clients remembered for exactly-once; the oldest idle one goes first
MAX_RESULTS_PER_CLIENT = 4096  # a client pipelining further than this must wait for answers
MAX_ROW_CELLS_RETURNED = 1000  # get_row and scan answers stay well under a frame


def error(name: str, message: str, **fields: Any) -> Result:
    """A result that the server turns into the named :mod:`raftkv.errors` exception."""
    return {"error": name, "message": message, **fields}


class _Session:
    """What one client has asked: results of its unacknowledged writes."""

    __slots__ = ("ack", "results")

    def __init__(self) -> None:
        self.ack = 0
        self.results: dict[int, Result] = {}


class Store:
    """The table of one Raft group."""

    def __init__(self, shards: int = DEFAULT_SHARDS) -> None:
        self.shard_count = shards
        # shard -> row -> column -> cell
        self.shards: dict[int, dict[str, dict[str, Cell]]] = {}
        self.counters: dict[int, int] = {}
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.applied = 0  # commands applied, for status

    # -- entry point --------------------------------------------------------

    def apply(self, command: dict[str, Any]) -> Result:
        """Apply one command; never raises for bad input, answers an error result instead."""
        self.applied += 1
        op = command.get("op")
        if op in READ_OPS:
            return self._dispatch(op, command)
        if op not in WRITE_OPS:
            return error("ProtocolError", f"unknown operation {op!r}")
        cid, seq, ack = command.get("cid"), command.get("seq"), command.get("ack", 0)
        if not all(isinstance(x, int) for x in (cid, seq, ack)):
            return error("ProtocolError", "a write needs integer cid, seq and ack")
        session = self._session(cid)
        if seq <= session.ack:
            # The client said it already has this answer; a duplicate from the
            # network must not apply the write a second time.
            return error("ProtocolError", f"request {seq} was already acknowledged")
        if seq in session.results:
            return session.results[seq]
        self._forget_acknowledged(session, ack)
        if len(session.results) >= MAX_RESULTS_PER_CLIENT:
            return error("UnavailableError", "too many unacknowledged requests from this client")
        result = self._dispatch(op, command)
        session.results[seq] = result
        return result

    def _session(self, cid: int) -> _Session:
        session = self.sessions.get(cid)
        if session is None:
            session = self.sessions[cid] = _Session()
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(cid)
        return session

    @staticmethod
    def _forget_acknowledged(session: _Session, ack: int) -> None:
        if ack > session.ack:
            session.ack = ack
            for seq in [s for s in session.results if s <= ack]:
                del session.results[seq]

    def _dispatch(self, op: str, command: dict[str, Any]) -> Result:
        if not isinstance(command.get("row", ""), str) or not isinstance(command.get("col", ""), str):
            return error("ProtocolError", "row and column must be strings")
        try:
            return getattr(self, f"_op_{op}")(command)
        except (KeyError, TypeError, ValueError) as exc:
            return error("ProtocolError", f"malformed {op} request: {exc!r}")

    # -- helpers ------------------------------------------------------------

    def _row(self, row: str, create: bool = False) -> dict[str, Cell] | None:
        if not isinstance(row, str):
            raise TypeError("row must be a string")
        shard = self.shards.get(shard_of(row, self.shard_count))
        if shard is None:
            if not create:
                return None
            shard = self.shards[shard_of(row, self.shard_count)] = {}
        cells = shard.get(row)
        if cells is None and create:
            cells = shard[row] = {}
        return cells

    def _drop_if_empty(self, row: str) -> None:
        shard_no = shard_of(row, self.shard_count)
        if not self.shards[shard_no][row]:
            del self.shards[shard_no][row]

    def _next_version(self, row: str) -> int:
        shard = shard_of(row, self.shard_count)
        version = self.counters.get(shard, 0) + 1
        self.counters[shard] = version
        return version

    def _cell(self, row: str, col: str) -> Cell | None:
        if not isinstance(col, str):
            raise TypeError("column must be a string")
        cells = self._row(row)
        return None if cells is None else cells.get(col)

    def _write(self, row: str, col: str, value: bytes, is_blob: bool) -> int:
        if not isinstance(value, bytes) or not isinstance(col, str):
            raise TypeError("value must be bytes and column a string")
        version = self._next_version(row)
        self._row(row, create=True)[col] = (version, value, bool(is_blob))  # type: ignore[index]
        return version

    def _erase(self, row: str, col: str) -> bool:
        cells = self._row(row)
        if cells is None or col not in cells:
            return False
        del cells[col]
        # The counter still moves, so a re-created cell gets a larger version
        # than anything a reader may have cached before the delete.
        self._next_version(row)
        self._drop_if_empty(row)
        return True

    @staticmethod
    def _cell_result(cell: Cell | None) -> Result:
        if cell is None:
            return {"found": False}
        version, value, is_blob = cell
        return {"found": True, "version": version, "value": value, "blob": is_blob}

    # -- operations ---------------------------------------------------------

    def _op_noop(self, command: dict[str, Any]) -> Result:
        return {}

    def _op_get(self, c: dict[str, Any]) -> Result:
        return self._cell_result(self._cell(c["row"], c["col"]))

    def _op_put(self, c: dict[str, Any]) -> Result:
        return {"version": self._write(c["row"], c["col"], c["value"], c.get("blob", False))}

    def _op_delete(self, c: dict[str, Any]) -> Result:
        self._cell(c["row"], c["col"])  # type checks
        return {"deleted": self._erase(c["row"], c["col"])}

    def _op_cput(self, c: dict[str, Any]) -> Result:
        cell = self._cell(c["row"], c["col"])
        current = cell[0] if cell else 0
        if "if_version" in c:
            holds = current == c["if_version"]
        else:
            # By value: None means "absent"; a blob cell compares its manifest,
            # which the client computed from the old value the same way.
            old = c["old"]
            holds = (cell is None) if old is None else (cell is not None and cell[1] == old)
        if not holds:
            return error("ConditionFailed", "the cell changed", version=current)
        return {"version": self._write(c["row"], c["col"], c["value"], c.get("blob", False))}

    def _op_mutate_row(self, c: dict[str, Any]) -> Result:
        row = c["row"]
        for condition in c["conditions"]:
            kind, col = condition[0], condition[1]
            cell = self._cell(row, col)
            current = cell[0] if cell else 0
            if kind == "version":
                holds = current == condition[2]
            elif kind == "absent":
                holds = cell is None
            elif kind == "value":
                holds = cell is not None and cell[1] == condition[2]
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
        versions: dict[str, int] = {}
        for mutation in mutations:
            if mutation[0] == "put":
                is_blob = len(mutation) > 3 and bool(mutation[3])
                versions[mutation[1]] = self._write(row, mutation[1], mutation[2], is_blob)
            else:
                self._erase(row, mutation[1])
        return {"versions": versions}

    def _op_get_row(self, c: dict[str, Any]) -> Result:
        prefix, after = c.get("prefix", ""), c.get("after", "")
        limit = min(int(c.get("limit") or MAX_ROW_CELLS_RETURNED), MAX_ROW_CELLS_RETURNED)
        cells = self._row(c["row"]) or {}
        cols = sorted(col for col in cells if col.startswith(prefix) and col > after)
        more = len(cols) > limit
        return {
            "cells": [[col, *cells[col]] for col in cols[:limit]],
            "more": more,
        }

    def _op_scan(self, c: dict[str, Any]) -> Result:
        shard, after = int(c["shard"]), c.get("after", "")
        limit = max(1, min(int(c.get("limit") or 10), 100))
        rows = sorted(self.shards.get(shard, {}))
        start = bisect_right(rows, after)
        page = rows[start:start + limit]
        table = self.shards.get(shard, {})
        return {
            "rows": [[row, [[col, *cell] for col, cell in sorted(table[row].items())
                            ][:MAX_ROW_CELLS_RETURNED]] for row in page],
            "more": start + limit < len(rows),
        }

    # -- snapshots ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain msgpack-able data."""
        return {
            "shard_count": self.shard_count,
            "shards": {shard: {row: {col: list(cell) for col, cell in cells.items()}
                               for row, cells in table.items()}
                       for shard, table in self.shards.items()},
            "counters": self.counters,
            "sessions": [[cid, s.ack, list(s.results.items())] for cid, s in self.sessions.items()],
            "applied": self.applied,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one made by :meth:`snapshot` (in place: the node holds us)."""
        self.shard_count = int(state["shard_count"])
        self.shards = {int(shard): {row: {col: (c[0], c[1], c[2]) for col, c in cells.items()}
                                    for row, cells in table.items()}
                       for shard, table in state["shards"].items()}
        self.counters = {int(k): v for k, v in state["counters"].items()}
        self.sessions = OrderedDict()
        for cid, ack, results in state["sessions"]:
            session = self.sessions[cid] = _Session()
            session.ack = ack
            session.results = {seq: result for seq, result in results}
        self.applied = int(state["applied"])

    # -- status -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        rows = sum(len(t) for t in self.shards.values())
        cells = sum(len(r) for t in self.shards.values() for r in t.values())
        return {"rows": rows, "cells": cells, "sessions": len(self.sessions),
                "applied_commands": self.applied}

"""The replicated state machine: a sparse table, plain Python, no sockets, no Raft.

``Store.apply(command)`` is called with the same commands in the same order on
every replica (by :mod:`raftkv.node`), so everything here is deterministic: no
clocks, no randomness, no iteration over unordered sets.

Data model (docs/data-model.md): row -> column -> cell, grouped by shard.  A
cell is ``(version, value, is_blob)``; ``value`` is the bytes themselves, or a
blob manifest when ``is_blob`` (the chunks live beside Raft, see
:mod:`raftkv.blobs`).  Each shard keeps its own version counter; every write sets
the cell's version to the counter's next value, so a cell's versions grow
strictly through deletes, re-creates and (later) shard moves.

Upload intents (docs/store-promises.md, "Blobs"): before a client sends a
blob's chunks it registers their names under an upload id (``intent``); the
intent lives until a lease runs out (``expire_intents``, issued by the leader)
or until the cell that references the chunks is written with ``upload=<id>``,
which removes the intent in the same step.  The garbage collector treats the
chunks of cells and of live intents as live.

Time: every log entry carries its time, stamped by the leader's server before
the entry enters the log (:meth:`Store.apply_entry`); the store keeps the
largest time it has applied (``clock``), so leases never run backwards and
every replica reads the same clock at the same command.

Which operations exist, and what each is, lives in :mod:`raftkv.operations`.

Commands and results are plain dicts (they arrive as msgpack maps).  A mutating
command carries ``cid`` (client id), ``seq`` (its sequence number) and ``ack``
(every ``seq <= ack`` of that client has been answered): the result of each
unanswered ``seq`` is kept, so a retried request gets the stored answer instead
of being applied twice.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .formats import NO_COMMANDS, TIMED_ENTRIES, UNTIMED_ENTRIES
from .keys import DEFAULT_SHARDS, shard_of
from .operations import HANDLER_PREFIX, Kind, Operation, bind_handlers
from .ownership import ShardOwnership

# (version, value or manifest, is_blob), and for a cell that expires, its expiry time
Cell = tuple[int, bytes, bool] | tuple[int, bytes, bool, float]
Result = dict[str, Any]
Bound = tuple[Operation, Callable[["Store", Result], Result]]  # a registry line, its Store method
MAX_SESSIONS = 10_000       # clients remembered for exactly-once; the oldest idle one goes first
MAX_RESULTS_PER_CLIENT = 4096  # a client pipelining further than this must wait for answers
MAX_ROW_CELLS_RETURNED = 1000  # get_row and scan answers stay well under a frame
MAX_INTENTS = 10_000        # uploads in progress at once, per group
MAX_INTENT_CHUNKS = 70_000  # chunks one upload may name: 64 GiB of value plus its index
MAX_LEASE = 86_400.0        # seconds an intent may live without renewal
MAX_TTL = 10 * 365 * 86_400.0  # seconds a cell may be given to live (ten years)
EXPIRE_CELLS = 1000         # expired cells one expire_cells command removes at most
DIGEST_SIZE = 32


def error(name: str, message: str, **fields: Any) -> Result:
    """A result that the server turns into the named :mod:`raftkv.errors` exception."""
    return {"error": name, "message": message, **fields}


class _Session:
    """What one client has asked: results of its unacknowledged writes."""

    __slots__ = ("ack", "results")

    def __init__(self) -> None:
        self.ack = 0
        self.results: dict[int, Result] = {}


class Store(ShardOwnership):
    """The table of one Raft group."""

    def __init__(self, shards: int = DEFAULT_SHARDS, *, managed: bool = False) -> None:
        """``managed``: a config group decides which shards this group serves
        (:mod:`raftkv.ownership`); otherwise it serves every shard."""
        self.shard_count = shards
        # shard -> row -> column -> cell
        self.shards: dict[int, dict[str, dict[str, Cell]]] = {}
        self.counters: dict[int, int] = {}
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.applied = 0  # commands applied: the same on every replica at the same log index
        # upload id -> (expiry time, names of the chunks it protects)
        self.intents: dict[int, tuple[float, list[bytes]]] = {}
        self.clock = 0.0  # the group's time: the latest entry time applied (see apply_entry)
        # Derived, not snapshotted: (row, col) -> manifest of every cell holding a blob.
        # Other threads copy it (dict.copy holds the GIL) to find referenced chunks.
        self.blob_cells: dict[tuple[str, str], bytes] = {}
        # Derived, not snapshotted: (expires, row, column) of cells that expire, a
        # heap; entries of cells since overwritten or deleted are skipped when popped.
        self._expiring: list[tuple[float, str, str]] = []
        self._expiring_kept = 0  # live entries at the last rebuild: when to rebuild again
        # Whether the entry being applied carries its time: then only that time counts,
        # and a "now" inside a command (which a client could write) is ignored.
        self._entry_timed = False
        # The highest Raft entry format applied (raftkv/formats.py), NO_COMMANDS before
        # the first command: once the log holds one, every replica must apply it
        # anyway, so the leader never writes older.  A function of the log alone.
        self.raft_format = NO_COMMANDS
        self._init_ownership(managed)

    # -- entry point --------------------------------------------------------

    def apply_entry(self, entry: list[Any]) -> list[Result]:
        """Apply one log entry: its time (seconds since the epoch, stamped by the
        leader's server), then its commands; their results, in order.

        The clock moves to the entry's time unless it is already later, so time
        never runs backwards, and every replica applies each command at the
        same time.  An entry of an older format has no time: the clock stays.
        """
        self._entry_timed = bool(entry) and not isinstance(entry[0], dict)
        if self._entry_timed:
            self.raft_format = max(self.raft_format, TIMED_ENTRIES)
            self._advance(entry[0])
            entry = entry[1:]
        elif entry:
            self.raft_format = max(self.raft_format, UNTIMED_ENTRIES)
        return [self.apply(command) for command in entry]

    def _advance(self, now: object) -> None:
        if isinstance(now, (int, float)) and math.isfinite(now) and now > self.clock:
            self.clock = float(now)

    def apply(self, command: dict[str, Any]) -> Result:
        """Apply one command; never raises for bad input, answers an error result instead.

        An exception escaping here would stop the Raft engine at this log entry
        on every replica, for good (it retries the entry forever); every
        replica fails the same way on the same command, so turning any
        exception into an error result keeps them identical.
        """
        self.applied += 1
        op = command.get("op")
        try:
            bound = _HANDLERS.get(op) if isinstance(op, str) else None
            if bound is None:
                return error("ProtocolError", f"unknown operation {op!r}")
            if bound[0].write:
                return self._write_command(bound, command)
            return self._dispatch(bound, command)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return error("ProtocolError", f"malformed {op!r} request: {type(exc).__name__}")

    def read(self, command: dict[str, Any]) -> Result:
        """Answer a read from the local state, outside the log (a stale read): counts nothing."""
        op = command.get("op")
        bound = _HANDLERS.get(op) if isinstance(op, str) else None
        if bound is None or bound[0].kind is not Kind.READ:
            return error("ProtocolError", f"{op!r} is not a read")
        try:
            return self._dispatch(bound, command)
        except RuntimeError:
            # Not bad input: the Raft thread changed a dict this read was walking.
            # The caller (raftkv.server) reads again.
            raise
        except Exception as exc:  # noqa: BLE001 - as in apply
            return error("ProtocolError", f"malformed {op!r} request: {type(exc).__name__}")

    def _write_command(self, bound: Bound, command: dict[str, Any]) -> Result:
        cid, seq, ack = command.get("cid"), command.get("seq"), command.get("ack", 0)
        if not (isinstance(cid, int) and isinstance(seq, int) and isinstance(ack, int)):
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
        result = self._dispatch_write(bound, command)
        session.results[seq] = result
        return result

    def _dispatch_write(self, bound: Bound, command: dict[str, Any]) -> Result:
        upload = command.get("upload") if bound[0].upload else None
        if upload is None:
            return self._dispatch(bound, command)
        if (refused := self.refusal(bound[0], command)) is not None:
            return refused  # not applied here: the intent keeps protecting the chunks
        if not isinstance(upload, int):
            return error("ProtocolError", "an upload id is an integer")
        if upload not in self.intents:
            return error("UploadExpired", "the upload's intent expired before its cell was "
                         "written; its chunks may be gone: upload again")
        # The cell now references the chunks (or the write lost its condition and
        # nothing will): either way the intent has done its work.
        result = self._dispatch(bound, command)
        del self.intents[upload]
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

    def _dispatch(self, bound: Bound, command: dict[str, Any]) -> Result:
        if not isinstance(command.get("row", ""), str) or not isinstance(command.get("col", ""), str):
            return error("ProtocolError", "row and column must be strings")
        operation, handler = bound
        try:
            # After a write's exactly-once check (see ownership.py): a stored answer wins.
            if (refused := self.refusal(operation, command)) is not None:
                return refused
            return handler(self, command)
        except (KeyError, TypeError, ValueError) as exc:
            return error("ProtocolError", f"malformed {operation.name} request: {exc!r}")

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

    def live(self, cell: Cell) -> bool:
        """Whether ``cell`` has not expired on the group's clock (every read asks)."""
        return len(cell) == 3 or cell[3] > self.clock

    def _cell(self, row: str, col: str) -> Cell | None:
        """The live cell at (row, col): an expired one is absent to reads and conditions."""
        if not isinstance(col, str):
            raise TypeError("column must be a string")
        cells = self._row(row)
        cell = None if cells is None else cells.get(col)
        return cell if cell is None or len(cell) == 3 or cell[3] > self.clock else None

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
        if not isinstance(value, bytes) or not isinstance(col, str):
            raise TypeError("value must be bytes and column a string")
        version = self._next_version(row)
        cells = self._row(row, create=True)
        assert cells is not None
        if expires is None:
            cells[col] = (version, value, bool(is_blob))
        else:
            cells[col] = (version, value, bool(is_blob), expires)
            self._will_expire(expires, row, col)
        if is_blob:
            self.blob_cells[(row, col)] = value
        else:
            self.blob_cells.pop((row, col), None)
        return version

    def _will_expire(self, expires: float, row: str, col: str) -> None:
        heapq.heappush(self._expiring, (expires, row, col))
        if len(self._expiring) > 2 * self._expiring_kept + 4096:
            self._rebuild_expiring()  # overwritten cells left too many stale entries

    def _rebuild_expiring(self) -> None:
        self._expiring = [(cell[3], row, col) for table in self.shards.values()
                          for row, cells in table.items()
                          for col, cell in cells.items() if len(cell) > 3]
        heapq.heapify(self._expiring)
        self._expiring_kept = len(self._expiring)

    def _erase(self, row: str, col: str) -> bool:
        cells = self._row(row)
        if cells is None or col not in cells:
            return False
        del cells[col]
        self.blob_cells.pop((row, col), None)
        # The counter still moves, so a re-created cell gets a larger version
        # than anything a reader may have cached before the delete.
        self._next_version(row)
        self._drop_if_empty(row)
        return True

    @staticmethod
    def _cell_result(cell: Cell | None) -> Result:
        if cell is None:
            return {"found": False}
        return {"found": True, "version": cell[0], "value": cell[1], "blob": cell[2]}

    # -- operations ---------------------------------------------------------

    def _op_noop(self, command: dict[str, Any]) -> Result:
        # Through the log, a barrier: once a replica's own count reaches this
        # number, its state holds everything committed before the noop.
        return {"applied": self.applied}

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
        return {"version": self._write(c["row"], c["col"], c["value"], c.get("blob", False),
                                       self._expires(c))}

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
        """Remove up to ``limit`` expired cells, earliest expiry first (then row, column).

        Which cells go depends only on the state, never on stale heap entries, so
        every replica removes the same ones.  Cells of a shard being moved out are
        left to the drop; those of any other shard not served here wait until it is.
        """
        limit = min(int(c.get("limit") or EXPIRE_CELLS), EXPIRE_CELLS)
        heap, removed, waiting = self._expiring, 0, []
        while heap and removed < limit and heap[0][0] <= self.clock:
            entry = heapq.heappop(heap)
            expires, row, col = entry
            cells = self._row(row)
            cell = None if cells is None else cells.get(col)
            if cell is None or len(cell) == 3 or cell[3] != expires:
                continue  # overwritten or deleted since
            shard = shard_of(row, self.shard_count)
            if self.owned is not None and shard not in self.owned:
                # Only a frozen shard's entries may go: its rows are always dropped.
                # Any other shard may be served here again, its cells still expiring,
                # and a replica restored from a snapshot rebuilds their entries: so
                # keep them, or the two would remove different cells after it returns.
                if shard not in self.frozen:
                    waiting.append(entry)
                continue
            self._erase(row, col)
            removed += 1
        for entry in waiting:
            heapq.heappush(heap, entry)
        return {"expired": removed, "more": removed == limit}

    def _tick(self, c: dict[str, Any]) -> float:
        """The group's clock; a command of an entry without a time (entries of the
        older format, whose ``now`` the leader wrote; tests that drive the store
        directly) moves it with its own ``now`` first.  In an entry that carries
        its time, a ``now`` came from the client and is ignored: a client must not
        move the clock, which would expire every session and upload at once."""
        if "now" in c and not self._entry_timed:
            now = c["now"]
            if not isinstance(now, (int, float)) or not math.isfinite(now):
                raise TypeError("now must be a finite number")
            self._advance(now)
        return self.clock

    def _op_intent(self, c: dict[str, Any]) -> Result:
        upload, digests = c["upload"], c.get("digests", [])
        if not isinstance(upload, int) or not isinstance(digests, list) or not all(
                isinstance(d, bytes) and len(d) == DIGEST_SIZE for d in digests):
            raise TypeError("an intent needs an integer upload id and 32-byte digests")
        lease = float(c["lease"])
        if not math.isfinite(lease):
            raise ValueError("a lease is a finite number of seconds")
        lease = min(max(lease, 0.1), MAX_LEASE)
        now = self._tick(c)
        current = self.intents.get(upload)
        if current is None and not c.get("new"):
            return error("UploadExpired", "the upload's intent expired: upload again")
        if current is None and len(self.intents) >= MAX_INTENTS:
            return error("UnavailableError", "too many uploads in progress")
        chunks = current[1] if current else []
        if len(chunks) + len(digests) > MAX_INTENT_CHUNKS:
            return error("TooLarge", f"an upload may name at most {MAX_INTENT_CHUNKS} chunks")
        chunks.extend(digests)
        self.intents[upload] = (now + lease, chunks)
        return {"expires": now + lease}

    def _op_intent_end(self, c: dict[str, Any]) -> Result:
        return {"ended": self.intents.pop(c["upload"], None) is not None}

    def _op_expire_intents(self, c: dict[str, Any]) -> Result:
        now = self._tick(c)
        expired = [upload for upload, (expires, _) in self.intents.items() if expires < now]
        for upload in expired:
            del self.intents[upload]
        return {"expired": len(expired)}

    def _op_get_row(self, c: dict[str, Any]) -> Result:
        prefix, after = c.get("prefix", ""), c.get("after", "")
        limit = min(int(c.get("limit") or MAX_ROW_CELLS_RETURNED), MAX_ROW_CELLS_RETURNED)
        cells = self._row(c["row"]) or {}
        cols = sorted(col for col, cell in cells.items()
                      if col.startswith(prefix) and col > after and self.live(cell))
        more = len(cols) > limit
        return {
            "cells": [[col, *cells[col][:3]] for col in cols[:limit]],
            "more": more,
        }

    def _op_scan(self, c: dict[str, Any]) -> Result:
        shard, after = int(c["shard"]), c.get("after", "")
        limit = max(1, min(int(c.get("limit") or 10), 100))
        table = self.shards.get(shard, {})
        rows = sorted(table)
        page: list[list[Any]] = []
        position = bisect_right(rows, after)
        while position < len(rows) and len(page) < limit:
            row = rows[position]
            position += 1
            live = [[col, *cell[:3]] for col, cell in sorted(table[row].items())
                    if self.live(cell)][:MAX_ROW_CELLS_RETURNED]
            if live:  # a row whose every cell expired is gone
                page.append([row, live])
        return {"rows": page, "more": position < len(rows)}

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
            "intents": [[upload, expires, list(chunks)]
                        for upload, (expires, chunks) in self.intents.items()],
            "clock": self.clock,
            "raft_format": self.raft_format,
            "ownership": self.ownership_snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with one made by :meth:`snapshot` (in place: the node holds us)."""
        self.shard_count = int(state["shard_count"])
        self.shards = {int(shard): {row: {col: _cell_of(c) for col, c in cells.items()}
                                    for row, cells in table.items()}
                       for shard, table in state["shards"].items()}
        self.counters = {int(k): v for k, v in state["counters"].items()}
        self.sessions = OrderedDict()
        for cid, ack, results in state["sessions"]:
            session = self.sessions[cid] = _Session()
            session.ack = ack
            session.results = {seq: result for seq, result in results}
        self.applied = int(state["applied"])
        self.intents = {upload: (expires, list(chunks))
                        for upload, expires, chunks in state.get("intents", [])}
        self.clock = float(state.get("clock", 0.0))
        # A snapshot made before formats were recorded: old code wrote its entries.
        self.raft_format = int(state.get("raft_format", UNTIMED_ENTRIES))
        self.restore_ownership(state.get("ownership"))
        self.blob_cells = {(row, col): cell[1] for table in self.shards.values()
                           for row, cells in table.items() for col, cell in cells.items()
                           if cell[2]}
        self._rebuild_expiring()

    # -- status -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        rows = sum(len(t) for t in self.shards.values())
        cells = sum(len(r) for t in self.shards.values() for r in t.values())
        return {"rows": rows, "cells": cells, "sessions": len(self.sessions),
                "applied_commands": self.applied, "blob_cells": len(self.blob_cells),
                "upload_intents": len(self.intents), "clock": int(self.clock)}

    def live_chunks(self) -> tuple[list[bytes], set[bytes]]:
        """``(manifests of blob cells, chunk digests named by live intents)``.

        Safe to call from another thread while commands apply: it copies with
        single C-level calls that hold the GIL.
        """
        manifests = list(self.blob_cells.copy().values())
        protected: set[bytes] = set()
        for _expires, chunks in list(self.intents.copy().values()):
            protected.update(chunks.copy())
        return manifests, protected


def _cell_of(fields: list[Any]) -> Cell:
    """A cell from its list form (snapshots, shard exports): with an expiry or without."""
    if len(fields) > 3 and fields[3] is not None:
        expires = float(fields[3])
        if not math.isfinite(expires):
            raise ValueError("an expiry is a finite time")
        return (int(fields[0]), fields[1], bool(fields[2]), expires)
    return (int(fields[0]), fields[1], bool(fields[2]))


# Every operation answered through the log, with its handler; fails at import
# when the registry (raftkv/operations.py) and the ``_op_`` methods disagree.
_HANDLERS: dict[str, Bound] = bind_handlers(Store, HANDLER_PREFIX, (Kind.READ, Kind.WRITE))

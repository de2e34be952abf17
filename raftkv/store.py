"""The replicated state machine: a sparse table on the replica's disk, no sockets, no Raft.

``Store.apply_entry(entry, index)`` is called with the same entries in the same
order on every replica (by :mod:`raftkv.node`), so everything here is
deterministic: no clocks, no randomness, no iteration in an order that is not
the store's own.

Data model (docs/data-model.md): row -> column -> cell, grouped by shard.  A
cell is a version, a value, whether the value is a blob manifest (the chunks
live beside Raft, see :mod:`raftkv.blobs`) and, for a cell that expires, its
expiry.  This module is the path every command takes; what each does is in the
store's mixins: the cell operations and versions (:mod:`raftkv.cells`), upload
intents (:mod:`raftkv.intents`), paged reads (:mod:`raftkv.pagereads`), shard
ownership (:mod:`raftkv.ownership`) and a backup's freeze (:mod:`raftkv.freezing`).

The table lives in LMDB (:mod:`raftkv.statedb`, laid out by
:mod:`raftkv.tables`): the entries of one pass of the engine are applied in
one write transaction (:mod:`raftkv.transactions`) that also records the last
one's Raft index, so the store on disk is always
exactly some prefix of the log, and an entry at or below that index is never
applied twice (a restart replays the journal from the last snapshot; see
docs/state-on-disk.md).  Reads from other threads each see the last commit.

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

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from . import diskkeys
from .cells import EXPIRE_CELLS as EXPIRE_CELLS  # re-exported: named as the store's limits
from .cells import MAX_CELL_KEY as MAX_CELL_KEY
from .cells import MAX_TTL as MAX_TTL
from .cells import CellOperations, KeyTooLong, Result, error
from .diskkeys import CellValue
from .formats import NO_COMMANDS, TIMED_ENTRIES, UNTIMED_ENTRIES
from .freezing import FREEZE_META, BackupFreeze
from .intents import UploadIntents
from .keys import DEFAULT_SHARDS
from .operations import HANDLER_PREFIX, Kind, Operation, bind_handlers, unknown_operation
from .ownership import ShardOwnership
from .pagereads import PageReads
from .statedb import StateDB
from .tables import U64, Tables
from .transactions import EntryTransactions

Bound = tuple[Operation, Callable[["Store", Result], Result]]  # a registry line, its Store method
MAX_SESSIONS = 10_000       # clients remembered for exactly-once; the idlest one goes first
MAX_RESULTS_PER_CLIENT = 4096  # a client pipelining further than this must wait for answers
# Writes that check everything before their one write: no child transaction needed
# (see _all_or_nothing); a child costs about a third of a put's time in the store.
CHECK_THEN_WRITE = frozenset({"put", "cput", "delete"})


# The order of the mixins matters: the transactions' ``_t`` comes first, and the cell
# operations' ``live`` and ``_cell`` before the placeholders of the mixins after them.
class Store(EntryTransactions, CellOperations, UploadIntents, ShardOwnership, BackupFreeze,
            PageReads):
    """The table of one Raft group."""

    def __init__(self, shards: int = DEFAULT_SHARDS, *, managed: bool = False,
                 path: Path | None = None) -> None:
        """``managed``: a config group decides which shards this group serves
        (:mod:`raftkv.ownership`); otherwise it serves every shard.  ``path``: the
        directory of the store on disk; None keeps it in a temporary directory."""
        self.shard_count = shards
        self.db = StateDB(path)
        self._local = threading.local()  # the transaction of the calling thread, if any
        # Whether the entry being applied carries its time: then only that time counts,
        # and a "now" inside a command (which a client could write) is ignored.
        self._entry_timed = False
        self._init_ownership(managed)
        self.reload()

    def reload(self) -> None:
        """The small state kept in memory between entries, from the store's meta table.

        The tick thread alone changes it, and writes it back in every entry's
        transaction; other threads read these plain attributes as they are.
        """
        with self.db.reading() as txn:
            tables = Tables(txn, self.db.tables)
            # What every entry changes, in one value: written by each entry's transaction.
            index, applied, clock, raft_format, stamp = tables.meta(
                "progress", [0, 0, 0.0, NO_COMMANDS, 0])
            self.applied_index = int(index)  # the last Raft entry applied
            # Commands applied, the same everywhere: ``applied`` as committed (other
            # threads wait for it, then read the store), ``_applied`` in the entry.
            self.applied = self._applied = int(applied)
            self.clock = float(clock)        # the group's time (see apply_entry)
            # The highest Raft entry format applied (raftkv/formats.py), NO_COMMANDS before
            # the first command: once the log holds one, every replica must apply it
            # anyway, so the leader never writes older.  A function of the log alone.
            self.raft_format = int(raft_format)
            self._stamp = int(stamp)         # the last activity stamp given
            self.counters: dict[int, int] = {int(k): int(v) for k, v in
                                             tables.meta("counters", {}).items()}
            self.restore_ownership(tables.meta("ownership"))
            self._init_freeze(tables.meta(FREEZE_META))
        self._meta_dirty = False      # ownership changed in this entry
        self._counters_dirty = False  # a shard's version counter moved in this entry

    # -- the store's own state, saved and restored by its transactions -----------

    def _small_state(self) -> tuple[Any, ...]:
        # Not the clock: time that passed stays passed, whatever the command answered.
        return (dict(self.counters), self._counters_dirty, self._stamp, self._meta_dirty,
                self.config_num, None if self.owned is None else set(self.owned),
                dict(self.incoming), dict(self.frozen), self.freeze)

    def _restore_small_state(self, saved: tuple[Any, ...]) -> None:
        (self.counters, self._counters_dirty, self._stamp, self._meta_dirty, self.config_num,
         self.owned, self.incoming, self.frozen, self.freeze) = saved

    def _save_meta(self) -> None:
        t = self._t
        t.put_meta("progress", [self.applied_index, self._applied, self.clock, self.raft_format,
                                self._stamp])
        if self._counters_dirty:
            t.put_meta("counters", self.counters)
            self._counters_dirty = False
        if self._meta_dirty:
            t.put_meta("ownership", self.ownership_snapshot())
            self._meta_dirty = False

    # -- entry point --------------------------------------------------------

    def apply_entry(self, entry: list[Any], index: int | None = None) -> list[Result]:
        """Apply one log entry: its time (seconds since the epoch, stamped by the
        leader's server), then its commands; their results, in order.

        ``index`` is the entry's Raft index: an entry at or below the store's
        ``applied_index`` is already in it (a journal replayed after a restart, or
        after a snapshot that was taken later than the engine believes) and is
        skipped, with no results.  The clock moves to the entry's time unless it
        is already later, so time never runs backwards, and every replica
        applies each command at the same time.  An entry of an older format has
        no time: the clock stays.
        """
        if index is not None and index <= self.applied_index:
            return []
        with self._writing(index):
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

    def apply(self, command: dict[str, Any]) -> Result:
        """Apply one command; never raises for bad input, answers an error result instead.

        An exception escaping here would stop the Raft engine at this log entry
        on every replica, for good (it retries the entry forever); every
        replica fails the same way on the same command, so turning any
        exception into an error result keeps them identical.  The disk failing
        is not such an exception: it is this replica's alone, and stops it.
        """
        with self._writing(None):
            self._applied += 1
            op = command.get("op")
            try:
                bound = _HANDLERS.get(op) if isinstance(op, str) else None
                if bound is None:
                    return error("ProtocolError", unknown_operation(op))
                if bound[0].write:
                    return self._write_command(bound, command)
                return self._dispatch(bound, command)
            except lmdb.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - see the docstring
                return error("ProtocolError", f"malformed {op!r} request: {type(exc).__name__}")

    def read(self, command: dict[str, Any]) -> Result:
        """Answer a read from the last commit, outside the log (a stale read): counts nothing."""
        op = command.get("op")
        bound = _HANDLERS.get(op) if isinstance(op, str) else None
        if bound is None or bound[0].kind is not Kind.READ:
            return error("ProtocolError", f"{op!r} is not a read")
        try:
            with self._reading():
                return self._dispatch(bound, command)
        except lmdb.Error as exc:
            # Not bad input: the store was replaced under this read (a snapshot
            # installed).  The caller (raftkv.server) reads again.
            raise RuntimeError("the store changed during the read") from exc
        except Exception as exc:  # noqa: BLE001 - as in apply
            return error("ProtocolError", f"malformed {op!r} request: {type(exc).__name__}")

    def _write_command(self, bound: Bound, command: dict[str, Any]) -> Result:
        cid, seq, ack = command.get("cid"), command.get("seq"), command.get("ack", 0)
        if not (isinstance(cid, int) and isinstance(seq, int) and isinstance(ack, int)
                and 0 <= cid < U64 and 0 < seq < U64 and 0 <= ack < U64):
            return error("ProtocolError", "a write needs integer cid, seq and ack")
        record = self._session(cid)
        if seq <= record[0]:
            # The client said it already has this answer; a duplicate from the
            # network must not apply the write a second time.
            return error("ProtocolError", f"request {seq} was already acknowledged")
        stored = self._t.result(cid, seq)
        if stored is not None:
            return stored
        if (frozen := self.frozen_refusal(bound[0].name)) is not None:
            return frozen  # not applied, not kept: the same request applies after the thaw
        if ack > record[0]:
            record[2] -= self._t.forget_results(cid, ack)
            record[0] = ack
        if record[2] >= MAX_RESULTS_PER_CLIENT:
            self._t.put_session(cid, record, record[1])
            return error("UnavailableError", "too many unacknowledged requests from this client")
        if bound[0].name in CHECK_THEN_WRITE:
            result = self._dispatch_write(bound, command)
        else:
            result = self._all_or_nothing(lambda: self._dispatch_write(bound, command))
        if bound[0].upload and "error" in result and result["error"] == "ConditionFailed":
            # The write lost its condition and will not reference the chunks: the
            # intent has done its work all the same (see _dispatch_write).
            self._end_intent(command.get("upload"))
        self._t.put_result(cid, seq, result)
        record[2] += 1
        self._t.put_session(cid, record, record[1])
        return result

    def _session(self, cid: int) -> list[int]:
        """``[ack, activity stamp, answers kept]`` of a client, now its most recent."""
        t = self._t
        record = t.session(cid)
        old = None if record is None else record[1]
        if record is None:
            record = [0, 0, 0]
            if t.count("sessions") >= MAX_SESSIONS:
                idlest = t.idlest_client()
                if idlest is not None:
                    t.forget_session(idlest)
        self._stamp += 1
        record[1] = self._stamp
        t.put_session(cid, record, old)
        return record

    def _dispatch_write(self, bound: Bound, command: dict[str, Any]) -> Result:
        upload = command.get("upload") if bound[0].upload else None
        if upload is None:
            return self._dispatch(bound, command)
        if (refused := self.refusal(bound[0], command)) is not None:
            return refused  # not applied here: the intent keeps protecting the chunks
        if not isinstance(upload, int):
            return error("ProtocolError", "an upload id is an integer")
        if self._t.intent(upload) is None:
            return error("UploadExpired", "the upload's intent expired before its cell was "
                         "written; its chunks may be gone: upload again")
        # The cell now references the chunks: the intent has done its work.  (A
        # write that lost its condition ends it too: see _write_command.)
        result = self._dispatch(bound, command)
        self._t.delete_intent(upload)
        return result

    def _dispatch(self, bound: Bound, command: dict[str, Any]) -> Result:
        if not isinstance(command.get("row", ""), str) or not isinstance(command.get("col", ""), str):
            return error("ProtocolError", "row and column must be strings")
        operation, handler = bound
        try:
            # After a write's exactly-once check (see ownership.py): a stored answer wins.
            if (refused := self.refusal(operation, command)) is not None:
                return refused
            return handler(self, command)
        except KeyTooLong as exc:
            return error("TooLarge", str(exc))
        except (KeyError, TypeError, ValueError, OverflowError, UnicodeError) as exc:
            return error("ProtocolError", f"malformed {operation.name} request: {exc!r}")

    # -- the barrier ----------------------------------------------------------

    def _op_noop(self, command: dict[str, Any]) -> Result:
        # Through the log, a barrier: once a replica's own count reaches this
        # number, its state holds everything committed before the noop.
        return {"applied": self._applied}


    # -- whole states -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain msgpack-able data (tests, and small stores only:
        it reads everything into memory; a replica's snapshot is a copy of the file)."""
        with self._reading():
            t = self._t
            shards: dict[int, dict[str, dict[str, list[Any]]]] = {}
            for key, cell in t.cells(b"", diskkeys.END * 5):
                name = diskkeys.decode_cell_key(key)
                shards.setdefault(name.shard, {}).setdefault(name.row, {})[name.col] = [
                    cell.version, cell.value, cell.is_blob,
                    *(() if cell.expires is None else (cell.expires,))]
            return {
                "shard_count": self.shard_count,
                "shards": shards,
                "counters": dict(self.counters),
                "sessions": [[cid, record[0], answers] for cid, record, answers in t.sessions()],
                "applied": self.applied,
                "intents": [[upload, expires, chunks] for upload, expires, chunks in t.intents()],
                "clock": self.clock,
                "raft_format": self.raft_format,
                "ownership": self.ownership_snapshot(),
            }

    def restore(self, state: dict[str, Any], index: int | None = None) -> None:
        """Replace the state with one made by :meth:`snapshot` (also the whole-state
        snapshots of the format before the store moved to disk), in one transaction;
        ``index``: the Raft index that state is at."""
        with self._writing(index):
            t = self._t
            t.clear()
            self.shard_count = int(state["shard_count"])
            for shard, table in state["shards"].items():
                for row, cells in table.items():
                    for col, fields in cells.items():
                        t.put_cell(diskkeys.cell_key(int(shard), row, col), _cell_of(fields))
            self.counters = {int(k): int(v) for k, v in state["counters"].items()}
            self._stamp = 0
            for cid, ack, results in state["sessions"]:
                self._stamp += 1
                for seq, result in results:
                    t.put_result(cid, seq, result)
                t.put_session(cid, [ack, self._stamp, len(results)], None)
            self._applied = int(state["applied"])
            for upload, expires, chunks in state.get("intents", []):
                t.put_intent(upload, float(expires), list(chunks))
            self.clock = float(state.get("clock", 0.0))
            # A snapshot made before formats were recorded: old code wrote its entries.
            self.raft_format = int(state.get("raft_format", UNTIMED_ENTRIES))
            self.restore_ownership(state.get("ownership"))
            self._meta_dirty = self._counters_dirty = True

    def install(self, image: Path, offset: int) -> None:
        """Replace the store with a copy of another replica's (a snapshot's image)."""
        self.db.install(image, offset)
        self.reload()

    def install_prepared(self, image: Path) -> None:
        """Replace the store with an image already written beside it (:meth:`StateDB.install_prepared`)."""
        self.db.install_prepared(image)
        self.reload()

    def copy_image(self, fd: int) -> None:
        """Write a consistent copy of the store to ``fd`` (another thread may apply meanwhile)."""
        self.db.copy_to(fd)

    def close(self) -> None:
        self.db.close()

    # -- status -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._reading():
            t = self._t
            return {"cells": t.count("cells"), "sessions": t.count("sessions"),
                    "applied_commands": self.applied, "blob_cells": t.count("blobs"),
                    "upload_intents": t.count("intents"), "clock": int(self.clock),
                    "state_bytes": self.db.file_bytes()}

    def live_chunks(self) -> tuple[list[bytes], set[bytes]]:
        """``(manifests of blob cells, chunk digests named by live intents)``, from one
        read transaction: safe while commands apply on another thread."""
        with self._reading():
            manifests = list(self._t.blob_manifests())
            protected: set[bytes] = set()
            for _upload, _expires, chunks in self._t.intents():
                protected.update(chunks)
        return manifests, protected


def _cell_of(fields: list[Any]) -> CellValue:
    """A cell from its list form (snapshots, shard exports): with an expiry or without."""
    if not isinstance(fields[1], bytes):
        raise TypeError("a cell holds bytes")
    expires = None
    if len(fields) > 3 and fields[3] is not None:
        expires = float(fields[3])
        if not math.isfinite(expires):
            raise ValueError("an expiry is a finite time")
    return CellValue(int(fields[0]), fields[1], bool(fields[2]), expires)


# Every operation answered through the log, with its handler; fails at import
# when the registry (raftkv/operations.py) and the ``_op_`` methods disagree.
_HANDLERS: dict[str, Bound] = bind_handlers(Store, HANDLER_PREFIX, (Kind.READ, Kind.WRITE))

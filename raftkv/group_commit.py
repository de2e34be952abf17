"""Group commit: a leader's server packs the writes that arrive together into one Raft entry.

A mixin of :class:`raftkv.server.NodeServer`.  Each write is packed (msgpack) as
it arrives and waits in ``_pending``; while fewer than
:data:`MAX_IN_FLIGHT_BATCHES` entries are appended and not yet applied, as many
pending commands as fit under the engine's entry cap leave together, behind the
entry's time (the leader's clock, never earlier than an entry before it:
:mod:`raftkv.store`, "Time").  The engine's answer arrives on its tick
thread and is handed to the server's event loop; an entry the engine never
answers is given up after :data:`BATCH_TIMEOUT` (docs/engine-fixes.md, "Commands
that never get an answer").  Which Raft format the entry is written in is the
leader's to decide (:mod:`raftkv.formats`): commands the group cannot carry yet
are refused, not applied.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import TYPE_CHECKING, Any

import msgpack

from . import formats
from .errors import OutcomeUnknown, OverLimit, RaftKVError, TooLarge
from .node import ENTRY_CAP
from .replica_metrics import BATCH_COMMANDS

if TYPE_CHECKING:
    from .answers import Handover
    from .node import Replica

MAX_IN_FLIGHT_BATCHES = 4        # Raft entries a leader has appended but not yet seen applied
# pysyncobj never fails an entry appended by a leader that was then cut off
# until that index is applied or overwritten (docs/engine-fixes.md, "Commands that
# never get an answer"): give up on it after this long, answer "outcome unknown", and
# free its slot.
BATCH_TIMEOUT = 10.0
# How often a new leader's server looks again whether it may write: it waits until
# the leader has applied every entry of earlier terms (a round trip to a majority),
# or until it is no longer the leader (at most LEADER_FALLBACK without a majority).
FORMAT_RECHECK = 0.005
_ARRAY_OVERHEAD = 5              # msgpack array header of the batch
_TIME_SIZE = 9                   # the entry's time, first in the batch: a msgpack float64
_FLOAT64 = struct.Struct(">Bd")  # msgpack's float 64: 0xcb, then the IEEE double


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class GroupCommit:
    """Mixin of :class:`raftkv.server.NodeServer`: ``_submit`` a command, get its answer."""

    replica: Replica
    _loop: asyncio.AbstractEventLoop | None
    _handover: Handover | None  # the tick thread's calls into the loop

    def _with_client_hint(self, err: RaftKVError) -> RaftKVError:
        raise NotImplementedError

    def _init_group_commit(self) -> None:
        # (packed command, the oldest Raft format it may be written in, its answer)
        self._pending: list[tuple[bytes, int, asyncio.Future[dict[str, Any]]]] = []
        self._in_flight = 0
        self._recheck: asyncio.TimerHandle | None = None  # a flush waiting for the entry format
        self._stamped = 0.0  # the time of the last entry this server appended

    def _submit(self, command: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        assert self._loop is not None
        if command.get("op") in formats.COMMAND_TIME_OPS:
            # Read by replicas of Raft format 1, whose entries carry no time (and
            # ignored in a timed entry); never a client's own.
            command["now"] = self._stamp()
        packed = msgpack.packb(command, use_bin_type=True)
        if len(packed) + _ARRAY_OVERHEAD + _TIME_SIZE > ENTRY_CAP:
            raise TooLarge(f"request of {len(packed)} bytes is above the {ENTRY_CAP}-byte entry cap")
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending.append((packed, formats.raft_format_needed(command), future))
        self._flush()
        return future

    def _flush(self) -> None:
        while self._pending and self._in_flight < MAX_IN_FLIGHT_BATCHES:
            entry_format = self.replica.entry_format()
            if entry_format is None:
                self._flush_later()  # a new leader: earlier terms' entries still to apply
                return
            self._refuse_newer(entry_format)
            timed = entry_format >= formats.TIMED_ENTRIES
            size, count = _ARRAY_OVERHEAD + (_TIME_SIZE if timed else 0), 0
            for packed, _, _ in self._pending:
                if size + len(packed) > ENTRY_CAP:
                    break
                size += len(packed)
                count += 1
            if count == 0:
                return  # every pending command was refused
            batch, self._pending = self._pending[:count], self._pending[count:]
            BATCH_COMMANDS.observe(count)
            head = _array_header(count + 1) + self._entry_time() if timed else _array_header(count)
            entry = head + b"".join(p for p, _, _ in batch)
            self._in_flight += 1
            self.replica.submit(entry, self._on_raft_thread(_Batch([f for _, _, f in batch])))

    def _flush_later(self) -> None:
        """Flush again shortly: the leader decides the entry format once it has applied
        the entries of earlier terms (raftkv.node, ``entry_format``).  A replica that
        stops leading meanwhile decides at once, and the engine answers NotLeader."""
        if self._recheck is None:
            assert self._loop is not None
            self._recheck = self._loop.call_later(FORMAT_RECHECK, self._recheck_format)

    def _recheck_format(self) -> None:
        self._recheck = None
        self._flush()

    def _refuse_newer(self, entry_format: int) -> None:
        """Answer the pending commands that ``entry_format`` cannot carry: mid-upgrade,
        a replica on the old code would not apply them as the others do."""
        if all(needed <= entry_format for _, needed, _ in self._pending):
            return
        kept = []
        for packed, needed, future in self._pending:
            if needed <= entry_format:
                kept.append((packed, needed, future))
            elif not future.done():
                # Not applied; not UnavailableError, which clients retry at once until
                # their deadline and then report as an unknown outcome.
                future.set_exception(OverLimit(
                    f"the group writes Raft format {entry_format} until every replica runs "
                    f"code of format {needed} or later (an upgrade in progress): retry later"))
        self._pending = kept

    def _entry_time(self) -> bytes:
        """The time every replica applies this entry at (raftkv.store, "Time"): the
        leader's clock, but never before an entry appended or applied earlier."""
        return _FLOAT64.pack(0xcb, self._stamp())

    def _stamp(self) -> float:
        self._stamped = max(time.time(), self._stamped, self.replica.store.clock)
        return self._stamped

    def _on_raft_thread(self, batch: _Batch) -> Any:
        """The callback pysyncobj runs on its tick thread: hand the results to our loop."""
        loop, handover = self._loop, self._handover
        assert loop is not None and handover is not None
        batch.expiry = loop.call_later(
            BATCH_TIMEOUT, self._batch_done, batch, None,
            OutcomeUnknown("the entry was appended but not committed in time"))

        def done(results: list[dict[str, Any]] | None, err: RaftKVError | None) -> None:
            handover.call(self._batch_done, batch, results, err)
        return done

    def _batch_done(self, batch: _Batch, results: list[dict[str, Any]] | None,
                    err: RaftKVError | None) -> None:
        if batch.settled:
            return  # expired earlier; the engine's late answer changes nothing
        batch.settled = True
        if batch.expiry is not None:
            batch.expiry.cancel()
        self._in_flight -= 1
        for i, future in enumerate(batch.futures):
            if future.done():
                continue
            if err is not None:
                future.set_exception(self._with_client_hint(err))
            else:
                assert results is not None
                future.set_result(results[i])
        self._flush()


class _Batch:
    """The requests of one Raft entry, settled once: by the engine or by expiry."""

    __slots__ = ("expiry", "futures", "settled")

    def __init__(self, futures: list[asyncio.Future[dict[str, Any]]]) -> None:
        self.futures = futures
        self.settled = False
        self.expiry: asyncio.TimerHandle | None = None

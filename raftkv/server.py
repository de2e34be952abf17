"""``raftkv-node``: one replica's process -- the client port in front of a :class:`Replica`.

Requests arrive pipelined over authenticated connections (:mod:`raftkv.protocol`).
Writes go through the Raft log; linearizable reads of the table are answered by
the leader from its store once it has confirmed it still leads (ReadIndex,
raftkv/node/read_index.py), or through the log while fewer than a majority of
the group speak that (an upgrade in progress).  Every answer is linearizable; a
replica that is not the leader answers ``NotLeader`` with a hint.  Requests that
arrive together are packed into one Raft entry up to the entry cap (group
commit): while batches are in flight, new requests queue up and leave together.
Blob chunks are stored and served beside Raft (:mod:`raftkv.blobs`), a few at a
time so that a node's memory stays bounded whatever the traffic, and kept complete
and free of garbage by a :class:`~raftkv.repair.BlobKeeper`.

The port stays open to everyone who knows the secret, and costs a stranger's
connections little: at most :data:`MAX_HANDSHAKING` connections may be in their
handshake at once (a new one pushes out the oldest), each for at most
:data:`~raftkv.protocol.HANDSHAKE_TIMEOUT`; a begun frame must be whole within
:data:`~raftkv.protocol.FRAME_TIMEOUT`; beyond ``[store] max_connections`` a new
connection is closed at once.  Idle client connections stay: clients keep theirs.
What a replica writes to disk is readable by its own user only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import click
import msgpack
from prometheus_client import REGISTRY

from . import formats, protocol
from .answers import Handover
from .backup_offers import Offers
from .blobs import BlobStore
from .cluster import CONFIG_GROUP_ID, ClusterConfig, load_cluster, split_addr
from .errors import (
    ConfigError,
    NotLeader,
    OutcomeUnknown,
    OverLimit,
    ProtocolError,
    RaftKVError,
    TooLarge,
    UnavailableError,
)
from .expiry import EXPIRY_INTERVAL, CellExpirer
from .logs import setup_logging
from .metrics import serve_from_env
from .node import ENTRY_CAP, Replica, ReplicaConfig
from .operations import (
    HANDLER_PREFIX,
    OPERATIONS,
    Kind,
    Operation,
    bind_handlers,
    unknown_operation,
)
from .repair import BlobKeeper
from .replica_metrics import (
    BATCH_COMMANDS,
    REQUESTS,
    ReplicaCollector,
)
from .services import ReplicaServices

log = logging.getLogger("raftkv.server")

MAX_IN_FLIGHT_BATCHES = 4        # Raft entries a leader has appended but not yet seen applied
MAX_REQUESTS_PER_CONNECTION = 2048
# Chunk reads and writes in progress on this node at once, over all connections.
# A connection whose next frame is a chunk op waits here before it reads further,
# so a node holds a few megabytes of chunks, not whatever its clients send.
MAX_BLOB_OPS = 8
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
# Connections in their handshake at once; a new one pushes the oldest out, so
# a flood of strangers cannot keep a client or peer with the secret from joining.
MAX_HANDSHAKING = 128
# A connection's read buffer before reading pauses (frames above it are still
# read whole): what a stranger's bytes can cost before the handshake refuses them.
READ_BUFFER = 64 * 1024
REPORT_INTERVAL = 10.0           # seconds between two warnings about refused connections


@dataclass(frozen=True)
class StoreSettings:
    """The cluster file's optional ``[store]`` table: the client port of every replica."""

    encryption: str = "auto"      # "auto": frames are sealed unless both ends are on
                                  # loopback; "always": sealed on loopback too
    max_connections: int = 2048   # open connections per replica; beyond, closed at once
    expiry_interval: float = EXPIRY_INTERVAL  # seconds between the leader's time entries,
                                              # which also remove expired cells (raftkv.expiry)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> StoreSettings:
        unknown = sorted(set(table) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) in [store]: {', '.join(unknown)}")
        settings = cls(**table)
        if settings.encryption not in ("auto", "always"):
            raise ConfigError('store.encryption must be "auto" or "always"')
        if not isinstance(settings.max_connections, int) or settings.max_connections < 1:
            raise ConfigError("store.max_connections must be a positive integer")
        if not isinstance(settings.expiry_interval, (int, float)) or not (
                0.05 <= settings.expiry_interval <= EXPIRY_INTERVAL):
            raise ConfigError(f"store.expiry_interval must be within [0.05, {EXPIRY_INTERVAL:g}] "
                              "seconds")
        return settings


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class NodeServer(ReplicaServices):
    """Serves one replica's client port."""

    def __init__(self, cluster: ClusterConfig, name: str, data_dir: Path) -> None:
        me = cluster.replica(name)
        group = cluster.group(me.group)
        self.name = name
        self.group_id = me.group
        self.client_addr = me.client
        self.secret = cluster.secret
        self.settings = StoreSettings.from_table(cluster.table("store"))
        # Leader hints must name the client port clients can dial, not the Raft port.
        self._client_addr_of = {r.raft: r.client for r in group.replicas}
        self.replica = Replica(ReplicaConfig(
            raft_addr=me.raft,
            peers=tuple(r.raft for r in group.replicas if r.name != name),
            data_dir=data_dir / "raft",
            secret=cluster.secret,
            shards=cluster.shards,
            managed=cluster.config_group is not None and me.group != CONFIG_GROUP_ID,
            election_timeout=(cluster.raft.election_timeout_min, cluster.raft.election_timeout_max),
            log_compaction_entries=cluster.raft.snapshot_entries,
            log_compaction_bytes=cluster.raft.snapshot_bytes,
            snapshot_send_rate=cluster.raft.snapshot_send_rate,
            snapshot_write_rate=cluster.raft.snapshot_write_rate,
            client_addr=me.client,
        ))
        self.blobs = BlobStore(data_dir / "blobs")
        self.keeper = BlobKeeper(self.replica.store, self.blobs, group.client_addrs, me.client,
                                 cluster.secret, cluster.blobs, self.replica.is_leader)
        self.expirer = CellExpirer(group.client_addrs, cluster.secret, self.replica.is_leader,
                                   interval=self.settings.expiry_interval)
        self._blob_slots: asyncio.Semaphore | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handshaking: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._over_cap = _Report("closed connections at the connection cap")
        self._refused = _Report("refused connections that did not complete the handshake")
        # (packed command, the oldest Raft format it may be written in, its answer)
        self._pending: list[tuple[bytes, int, asyncio.Future[dict[str, Any]]]] = []
        self._in_flight = 0
        self._recheck: asyncio.TimerHandle | None = None  # a flush waiting for the entry format
        self._stamped = 0.0  # the time of the last entry this server appended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handover: Handover | None = None  # the tick thread's calls into the loop
        self.backup_offers = Offers()  # frozen states held open for backups
        self._watching_offers: asyncio.TimerHandle | None = None

    # -- group commit -----------------------------------------------------

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

    def _with_client_hint(self, err: RaftKVError) -> RaftKVError:
        if isinstance(err, NotLeader) and err.leader is not None:
            return NotLeader(str(err), leader=self._client_addr_of.get(err.leader))
        return err

    def _not_leader(self) -> NotLeader:
        hint = self.replica.leader_hint()
        return NotLeader("not the leader", leader=self._client_addr_of.get(hint) if hint else None)

    # -- requests ---------------------------------------------------------

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (without its id); raises RaftKVError for error answers."""
        op = request.get("op")
        operation = OPERATIONS.get(op) if isinstance(op, str) else None
        if operation is None:
            raise ProtocolError(unknown_operation(op))
        if operation.kind is Kind.NODE:
            return await _SERVED[operation.name][1](self, request)
        if operation.kind is Kind.READ and request.get("consistency") == "stale":
            return {**self._stale_read(request), "stale": True}
        if operation.read_index and self.replica.serves_read_index():
            return await self._read_at_index(request)
        if not self.replica.is_leader():
            raise self._not_leader()
        command = {k: v for k, v in request.items() if k not in ("id", "consistency")}
        return await self._submit(command)

    # -- operations answered here, outside the log (raftkv/operations.py) ------

    async def _op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _read_at_index(self, request: dict[str, Any]) -> dict[str, Any]:
        """A linearizable read without a log entry: once the leader has confirmed it
        leads and its store has committed the index it noted, a read transaction
        begun now sees every write acknowledged before this read arrived
        (raftkv/node/read_index.py says why)."""
        loop, handover = self._loop, self._handover
        assert loop is not None and handover is not None
        confirmed: asyncio.Future[None] = loop.create_future()

        def settle(err: RaftKVError | None) -> None:
            if confirmed.done():
                return  # the client went away
            if err is not None:
                confirmed.set_exception(self._with_client_hint(err))
            else:
                confirmed.set_result(None)

        def on_raft_thread(_index: int | None, err: RaftKVError | None) -> None:
            handover.call(settle, err)

        self.replica.read_index(on_raft_thread)
        await confirmed
        return self._read_store(request, "a read")

    def _stale_read(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._read_store(request, "a stale read")

    def _read_store(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        # A snapshot installed under the read replaces the store's file; try again
        # (each try is short).
        for _ in range(10):
            try:
                return self.replica.store.read(request)
            except RuntimeError:
                continue
        raise UnavailableError(f"the replica is too busy for {what}")

    def status(self) -> dict[str, Any]:
        store = self.replica.store  # read without the log: a replica's own view, for operators
        return {"name": self.name, "group": self.group_id, "addr": self.client_addr,
                **self.replica.status(), "pending_requests": len(self._pending),
                **self.keeper.status(), "cells_expired": self.expirer.expired,
                "config_num": store.config_num,
                "shards_served": None if store.owned is None else len(store.owned),
                "shards_incoming": len(store.incoming), "shards_frozen": len(store.frozen)}

    # -- connections ------------------------------------------------------

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._open) >= self.settings.max_connections:
            self._over_cap.note(peer)
            writer.transport.abort()
            return
        self._open.add(writer)
        try:
            channel = await self._authenticate(reader, writer, peer)
            if channel is not None:
                await self._serve_requests(reader, writer, channel, peer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: Any) -> protocol.Channel | None:
        """The handshake, within its deadline and under the handshake cap; None when refused."""
        self._handshaking[writer] = None
        if len(self._handshaking) > MAX_HANDSHAKING:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            oldest.transport.abort()  # its handshake fails at once and ends its task
        sealed = self.settings.encryption == "always" or not (
            isinstance(peer, tuple) and protocol.is_loopback(peer[0]))
        try:
            return await protocol.server_handshake(reader, writer, self.secret, sealed=sealed)
        except (ProtocolError, OSError) as exc:
            self._refused.note(f"{peer}: {exc}")
            return None
        finally:
            self._handshaking.pop(writer, None)

    async def _serve_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              channel: protocol.Channel, peer: Any) -> None:
        slots = asyncio.Semaphore(MAX_REQUESTS_PER_CONNECTION)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    request = await protocol.read_frame_async(reader, channel)
                except ProtocolError as exc:
                    log.warning("malformed frame from %s: %s", peer, exc)
                    _send(writer, channel, (protocol.encode({"id": None, **exc.to_wire()}),))
                    break
                if request is None:
                    break
                await slots.acquire()
                operation = OPERATIONS.get(op) if isinstance(op := request.get("op"), str) else None
                blob_slots = self._blob_slots if operation is not None and operation.chunk else None
                if blob_slots is not None:
                    await blob_slots.acquire()
                task = asyncio.create_task(
                    self._answer(request, writer, channel, slots, blob_slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter,
                      channel: protocol.Channel, slots: asyncio.Semaphore,
                      blob_slots: asyncio.Semaphore | None) -> None:
        request_id = request.pop("id", None)
        op = request.get("op")
        began = time.perf_counter()
        try:
            try:
                answer = {"id": request_id, "ok": await self.handle(request)}
            except RaftKVError as exc:
                answer = {"id": request_id, **exc.to_wire()}
            except Exception:
                log.exception("internal error on %r", op)
                answer = {"id": request_id, "error": "RaftKVError", "message": "internal error"}
            finally:
                slots.release()
            _observe(op, answer, time.perf_counter() - began)
            del request  # a chunk's bytes, for blob_put: free them before waiting to send
            payload = answer["ok"].get("data") if op in _PAYLOAD_OPS and "ok" in answer else None
            if isinstance(payload, bytes) and payload:
                answer["ok"]["data"] = protocol.PAYLOAD
                _send(writer, channel, protocol.encode_parts(answer, payload))
            else:
                _send(writer, channel, (protocol.encode(answer),))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if blob_slots is not None:
                blob_slots.release()

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._handover = Handover(self._loop)
        self._blob_slots = asyncio.Semaphore(MAX_BLOB_OPS)
        host, port = split_addr(self.client_addr)
        server = await asyncio.start_server(self.serve_connection, host, port,
                                            reuse_address=True, limit=READ_BUFFER)
        log.info("raftkv-node %s ready on %s", self.name, self.client_addr)
        self.keeper.start()
        self.expirer.start()
        async with server:
            await stop.wait()
            await asyncio.to_thread(self.keeper.stop)
            await asyncio.to_thread(self.expirer.stop)
            # Since 3.12 the server's exit waits for every connection to end; the
            # peers' keepers and idle clients would keep theirs open for ever.
            for writer in list(self._open):
                writer.close()
        self.backup_offers.close_all()
        self.replica.destroy()


# Every operation answered by the server itself, with its handler; fails at import
# when the registry and its ``_op_`` methods disagree.
_SERVED: dict[str, tuple[Operation, Callable[[NodeServer, dict[str, Any]],
                                             Awaitable[dict[str, Any]]]]] = \
    bind_handlers(NodeServer, HANDLER_PREFIX, (Kind.NODE,))
_PAYLOAD_OPS = frozenset({"blob_get", "snapshot_read"})  # answers sent without copying their bytes
_FLOAT64 = struct.Struct(">Bd")  # msgpack's float 64: 0xcb, then the IEEE double


def _send(writer: asyncio.StreamWriter, channel: protocol.Channel, frame: Sequence[bytes]) -> None:
    """Put one frame on the wire, sealed if the channel is: no await in between,
    so frames are sealed in the order they are sent."""
    parts = channel.seal(frame)
    if len(parts) == 1:
        writer.write(parts[0])
    else:
        writer.writelines(parts)


class _Report:
    """A warning that a flood would repeat for every connection: logged at most once
    per :data:`REPORT_INTERVAL`, with how many it stands for."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._count = 0
        self._next = 0.0

    def note(self, detail: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            log.warning("%s: %d since the last report (latest: %s)", self.what, self._count, detail)
            self._count = 0
            self._next = now + REPORT_INTERVAL


class _Batch:
    """The requests of one Raft entry, settled once: by the engine or by expiry."""

    __slots__ = ("expiry", "futures", "settled")

    def __init__(self, futures: list[asyncio.Future[dict[str, Any]]]) -> None:
        self.futures = futures
        self.settled = False
        self.expiry: asyncio.TimerHandle | None = None


def _observe(op: object, answer: dict[str, Any], seconds: float) -> None:
    """One request's metrics (raftkv/replica_metrics.py): labelled by the operation's
    registered name and the error's class name only, so a client cannot mint labels."""
    name = op if isinstance(op, str) and op in OPERATIONS else "unknown"
    REQUESTS.observe(name, answer.get("error", "ok"), seconds)


class Companion(Protocol):
    """A thread that runs beside a replica (a higher layer's, e.g. shards' reconfigurer);
    a :class:`raftkv.background.BackgroundLoop` is one (what they return is not used)."""

    def start(self) -> object: ...
    def stop(self) -> object: ...


def keep_private(data_dir: Path) -> None:
    """Whatever this process writes -- journal, snapshots, chunks -- only its user may
    read: files 0600 and directories 0700, whoever started it and with what umask."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # one made before, by an older version, is closed too


def run_node(config_path: str, name: str, data_dir: Path,
             companions: Callable[[ClusterConfig, NodeServer], list[Companion]] | None = None,
             ) -> None:
    """Run one storage replica, and what ``companions`` adds, until SIGTERM or SIGINT."""
    setup_logging(f"replica {name}")
    keep_private(data_dir)
    try:
        cluster = load_cluster(config_path)
        server = NodeServer(cluster, name, data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    beside = companions(cluster, server) if companions else []
    try:
        metrics = serve_from_env()
    except (ConfigError, OSError) as exc:
        raise click.ClickException(f"metrics: {exc}") from exc
    REGISTRY.register(ReplicaCollector(server.status))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for companion in beside:
            companion.start()
        try:
            await server.run(stop)
        finally:
            for companion in beside:
                await asyncio.to_thread(companion.stop)
            if metrics is not None:
                metrics.shutdown()

    asyncio.run(serve())


def node_options[F: Callable[..., Any]](func: F) -> F:
    """The command line of a storage replica."""
    for option in reversed((
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     envvar="RAFTCLOUD_CONFIG", required=True, help="The cluster file."),
        click.option("--name", required=True, help="This replica's name in the cluster file."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     required=True,
                     help="Where this replica keeps its journal, snapshot and chunks."),
    )):
        func = option(func)
    return func


@click.command()
@node_options
def main(config_path: str, name: str, data_dir: Path) -> None:
    """Run one storage replica (without shard moves: see ``shards.node``)."""
    run_node(config_path, name, data_dir)


if __name__ == "__main__":
    main()

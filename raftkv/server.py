"""``raftkv-node``: one replica's process -- the client port in front of a :class:`Replica`.

Requests arrive pipelined over authenticated connections (:mod:`raftkv.protocol`,
served by :mod:`raftkv.serving`, which bounds what a connection may cost).
Writes go through the Raft log; linearizable reads of the table are answered by
the leader from its store once it has confirmed it still leads (ReadIndex,
raftkv/node/read_index.py), or through the log while fewer than a majority of
the group speak that (an upgrade in progress).  Every answer is linearizable; a
replica that is not the leader answers ``NotLeader`` with a hint.  Requests that
arrive together are packed into one Raft entry up to the entry cap (group
commit, :mod:`raftkv.group_commit`).  Blob chunks are stored and served beside
Raft (:mod:`raftkv.services`, :mod:`raftkv.blobs`), and kept complete and free of
garbage by a :class:`~raftkv.repair.BlobKeeper`.

This module holds the replica's process: its settings, the server that sends each
request where it is answered (``handle``), and the command line.  What a replica
writes to disk is readable by its own user only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import click
from prometheus_client import REGISTRY

from .answers import Handover
from .backup_offers import Offers
from .blobs import BlobStore
from .cluster import CONFIG_GROUP_ID, ClusterConfig, load_cluster, split_addr
from .errors import ConfigError, NotLeader, ProtocolError, RaftKVError, UnavailableError
from .expiry import EXPIRY_INTERVAL, CellExpirer
from .group_commit import GroupCommit
from .logs import setup_logging
from .metrics import serve_from_env
from .node import Replica, ReplicaConfig
from .operations import HANDLER_PREFIX, OPERATIONS, Kind, Operation, bind_handlers, unknown_operation
from .repair import BlobKeeper
from .replica_metrics import ReplicaCollector
from .services import ReplicaServices
from .serving import MAX_BLOB_OPS, READ_BUFFER, ConnectionServing
from .serving import MAX_HANDSHAKING as MAX_HANDSHAKING  # re-exported: the port's limit, tested

log = logging.getLogger("raftkv.server")


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


class NodeServer(ConnectionServing, GroupCommit, ReplicaServices):
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
        self._init_connections()
        self._init_group_commit()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handover: Handover | None = None  # the tick thread's calls into the loop
        self.backup_offers = Offers()  # frozen states held open for backups
        self._watching_offers: asyncio.TimerHandle | None = None

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

"""A storage group learns configurations and moves its shards itself (6.824 ShardKV).

Every storage replica runs a :class:`Reconfigurer` thread; it acts only while
its replica leads the group, and everything it does is a command through the
group's own log (:mod:`raftkv.ownership`), so a new leader simply carries on
where the old one stopped.  Each pass looks at the group's state and takes the
next step:

- shards *incoming* in the group's configuration ``n``: pull each from the
  group that held it in ``n - 1`` -- export pages there (any of its replicas
  that has frozen the shard answers, outside its log), the blob chunks its
  cells name, import pages here -- then adopt it (serve it);
- shards *frozen* (moving out in ``n``): drop each once its new owner has
  adopted it, so the old copy is kept exactly as long as someone may need it;
- settled: if the config group has configuration ``n + 1``, begin it.

Configurations are applied one at a time, in order.  Two groups swapping shards
do not wait for each other: each only needs the other to have *begun* the
configuration (frozen what it gives away), never to have finished it.  A group
that was down through several changes catches up one configuration at a time.
The config group is only asked when a group is settled (the moves of a begun
configuration carry the other groups' addresses), so it stays off the data
path, and a move in progress goes on without it.

When the config group holds no configuration yet, the first reconfigurer to
look stores configuration 1: the cluster file's static map, which is where the
data already is.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import msgpack
from prometheus_client import Counter

import raftkv
from raftkv.background import STOP_TIMEOUT, BackgroundLoop
from raftkv.blobs import data_chunks, parse_manifest
from raftkv.cluster import ClusterConfig
from raftkv.errors import NotLeader, ProtocolError, RaftKVError, UnavailableError

from .config import UNASSIGNED, Config, ConfigStore
from .shardmap import ShardMap

log = logging.getLogger(__name__)

# How far reconfigurations have come, on the replica that leads them (with the
# replica's raftkv_config_num and raftkv_shards_incoming/_frozen: docs/operations.md,
# "Metrics").
STEPS = Counter("shards_reconfig_steps", "Reconfiguration steps this replica took while "
                "leading: began (a configuration), adopted or dropped (a shard).", ["step"])
ROWS_PULLED = Counter("shards_reconfig_rows_pulled", "Rows copied from a shard's old owner.")

POLL = 0.25                 # seconds between passes of a settled leader (a read in each log)
IMPORT_BYTES = 16 * 1024    # one import command's cells: half of a Raft entry's cap
INTENT_NAMES = 500          # chunk names per intent command (32 bytes each: under the cap)
PULL_LEASE = 600.0          # seconds a pull's intent protects its chunks ...
PULL_PARALLEL = 4           # chunks copied at once
RENEW_EVERY = 120.0         # ... renewed this often while the chunks are being copied
PULL_CHUNKS = 60_000        # chunks under one intent at most (the store allows 70,000)
WARN_AFTER = 20             # failed passes at one shard before it is worth a warning


# One row of an ``export_shard`` page, as the wire carries it:
# ``[row, [[col, version, value, is_blob(, expiry)], ...]]``.
ExportedRow = list[Any]


def first_config(cluster: ClusterConfig) -> Config:
    """Configuration 1: the cluster file's static map (where an unmanaged cluster's data is)."""
    return Config(1, ShardMap.static(cluster).owners,
                  {g.id: tuple(g.client_addrs) for g in cluster.groups})


def settled(state: dict[str, Any], num: int) -> bool:
    """Whether a group's ``shard_state`` shows configuration ``num`` finished."""
    config_num: int = state["config_num"]
    return config_num > num or (
        config_num == num and not state["incoming"] and not state["frozen"])


def adopted(state: dict[str, Any], num: int, shard: int) -> bool:
    """Whether the group with ``state`` has taken ``shard`` over in configuration ``num``."""
    config_num: int = state["config_num"]
    if config_num != num:
        return config_num > num  # it cannot leave ``num`` with the shard awaited
    return shard not in {entry[0] for entry in state["incoming"]}


class Moves(NamedTuple):
    """What group ``gid`` does in a configuration: the arguments of its ``begin_config``."""

    shards: list[int]            # every shard it holds in the configuration
    incoming: list[list[Any]]    # [shard, old owner, [its replicas' addresses]]
    outgoing: list[list[Any]]    # [shard, new owner, [its replicas' addresses]]


def moves_of(gid: int, previous: Config, config: Config) -> Moves:
    """Group ``gid``'s shards in ``config``, and each move with the other group and its
    replicas' addresses."""
    mine = config.shards_of(gid)
    incoming = [[s, owner, list(previous.groups[owner])] for s in mine
                if (owner := previous.owners[s]) not in (gid, UNASSIGNED)]
    outgoing = [[s, owner, list(config.groups[owner])] for s in previous.shards_of(gid)
                if (owner := config.owners[s]) != gid]
    return Moves(mine, incoming, outgoing)


class Reconfigurer(BackgroundLoop):
    """Drive one storage group through the configurations while this replica leads."""

    def __init__(self, cluster: ClusterConfig, group_id: int,
                 is_leader: Callable[[], bool], *, poll: float = POLL) -> None:
        assert cluster.config_group is not None
        self.cluster = cluster
        self.group_id = group_id
        self._is_leader = is_leader
        self._own = raftkv.Client(cluster.group(group_id).client_addrs, cluster.secret)
        self._config_client = raftkv.Client(cluster.config_group.client_addrs, cluster.secret)
        self._configs = ConfigStore(self._config_client, cluster.shards)
        self._known: dict[int, Config] = {}                # configurations never change
        self._groups: dict[tuple[str, ...], raftkv.Client] = {}
        self._failures: dict[int, int] = {}                # shard -> failed passes in a row
        super().__init__("shards-reconfig", poll, first_delay=poll)

    def stop(self, timeout: float | None = STOP_TIMEOUT) -> bool:
        ended = super().stop(timeout)
        for client in (self._own, self._config_client, *self._groups.values()):
            client.close()
        return ended

    def _leading(self) -> bool:
        return self._is_leader() and not self.stopping

    def step(self) -> float:
        """A pass while this replica leads; a busy group's next pass comes sooner."""
        if not self._is_leader():
            return self.interval
        try:
            busy = self.advance()
        except UnavailableError as exc:
            # The group or the config group is down or not there yet, or a step's
            # configuration is pending (ConfigurationPending): the next pass retries.
            log.debug("group %d: reconfiguration waits: %s", self.group_id, exc)
            busy = False
        except RaftKVError as exc:
            # Not transient (a malformed answer, a refused command): worth a look,
            # and the next pass tries again from the group's state.
            if not self.stopping:
                log.warning("group %d: reconfiguration pass refused: %s: %s",
                            self.group_id, type(exc).__name__, exc)
            busy = False
        return self.interval / 5 if busy else self.interval

    # -- one pass -----------------------------------------------------------------

    def advance(self) -> bool:
        """One pass; whether it got anywhere (then the next pass comes sooner)."""
        state = self._own.shard_state()
        num: int = state["config_num"]
        # One unreachable or broken peer holds up only the shards it gives or takes.
        if state["incoming"]:
            return all([self._each(shard, self._pull, num, shard, tuple(addrs))
                        for shard, _gid, addrs in state["incoming"] if self._leading()])
        if state["frozen"]:
            return all([self._each(shard, self._drop_if_adopted, num, shard, tuple(addrs))
                        for shard, _gid, addrs in state["frozen"]])
        latest = self._configs.latest_num()
        if latest == 0:
            self._configs.bootstrap(first_config(self.cluster))
        elif latest > num:
            self._begin(self._config(num), self._config(num + 1))
        return latest != num

    def _each(self, shard: int, step: Callable[..., None], *args: Any) -> bool:
        """``step(*args)`` for one shard; False if it failed (it is retried next pass)."""
        try:
            step(*args)
        except RaftKVError as exc:
            failures = self._failures[shard] = self._failures.get(shard, 0) + 1
            if failures % WARN_AFTER == 0:  # a peer down for long, or data it cannot serve
                log.warning("group %d: shard %d has not moved after %d tries: %s",
                            self.group_id, shard, failures, exc)
            else:
                log.debug("group %d: shard %d waits: %s", self.group_id, shard, exc)
            return False
        self._failures.pop(shard, None)
        return True

    def _drop_if_adopted(self, num: int, shard: int, dest: tuple[str, ...]) -> None:
        if adopted(self._group(dest).shard_state(), num, shard):
            self._own.drop_shard(num, shard)
            STEPS.labels("dropped").inc()
            log.info("group %d: dropped shard %d (configuration %d)", self.group_id, shard, num)

    def _begin(self, previous: Config, config: Config) -> None:
        moves = moves_of(self.group_id, previous, config)
        self._own.begin_config(config.num, *moves)
        STEPS.labels("began").inc()
        log.info("group %d: began configuration %d (%d shards in, %d out)", self.group_id,
                 config.num, len(moves.incoming), len(moves.outgoing))

    # -- pulling a shard --------------------------------------------------------

    def _pull(self, num: int, shard: int, source: tuple[str, ...]) -> None:
        """Copy ``shard`` from its old owner (replicas ``source``), then serve it."""
        src = self._group(source)
        after: list[str] | None = None
        counter = 0
        for _ in range(10_000_000):  # pages; bounded by the shard's cells
            if not self._leading():
                return  # a deposed leader leaves the rest to its successor
            page = src.export_shard(num, shard, after)
            counter = page["counter"]
            ROWS_PULLED.inc(len(page["rows"]))
            for batch in _batches(page["rows"]):
                self._import(src, num, shard, batch, counter)
            after = page["after"]
            if after is None:
                break
        # An empty shard still carries its version counter over.
        self._import(src, num, shard, [], counter)
        self._own.adopt_shard(num, shard)
        STEPS.labels("adopted").inc()
        log.info("group %d: adopted shard %d (configuration %d)", self.group_id, shard, num)

    def _import(self, src: raftkv.Client, num: int, shard: int, batch: list[ExportedRow],
                counter: int) -> None:
        """One import command, after the chunks its blob cells name.

        The chunks arrive before the cells that name them, so, like any upload,
        they are first named in an intent (raftkv.repair's rule), renewed while
        they are copied, and the import carries it: if it lapsed meanwhile (a
        collector may have taken them), the import is refused and the next pass
        copies again.  The intent ends with the import, in the same command.
        """
        names = list(self._chunks_of(src, batch))
        if len(names) > PULL_CHUNKS and sum(len(cells) for _row, cells in batch) > 1:
            for row, cells in batch:  # one intent per value: each fits an upload's bound
                for cell in cells:
                    self._import(src, num, shard, [[row, [cell]]], counter)
            return
        if not self._leading():
            raise NotLeader("no longer the leader: the successor pulls")  # before any copying
        if not names:
            self._own.import_shard(num, shard, batch, counter)
            return
        upload = secrets.randbits(63)
        try:
            for i in range(0, len(names), INTENT_NAMES):
                self._intent(upload, names[i:i + INTENT_NAMES], new=i == 0)
            self._copy_chunks(src, upload, names)
            self._own.import_shard(num, shard, batch, counter, upload=upload)  # retires the intent
        except BaseException:
            # A failed pull must not leave its intent to pile up until the lease
            # ends (the next pass starts a new one): end it, if we still can.
            with contextlib.suppress(RaftKVError):
                self._own.intent_end(upload)
            raise

    def _copy_chunks(self, src: raftkv.Client, upload: int, names: list[str]) -> None:
        """Each chunk from the old owner onto a majority here, a few at a time."""
        renewed = time.monotonic()
        with ThreadPoolExecutor(PULL_PARALLEL, thread_name_prefix="shards-pull") as pool:
            in_flight: set[Future[None]] = set()
            for name in names:
                if len(in_flight) >= 2 * PULL_PARALLEL:  # at most this many chunks in memory
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()  # a failed copy fails the import, retried next pass
                if time.monotonic() - renewed > RENEW_EVERY:
                    self._intent(upload, [], new=False)
                    renewed = time.monotonic()
                in_flight.add(pool.submit(self._copy_chunk, src, name))
            for future in in_flight:
                future.result()

    def _copy_chunk(self, src: raftkv.Client, name: str) -> None:
        self._own.put_chunk(name, src.fetch_chunk(name))

    def _intent(self, upload: int, names: list[str], *, new: bool) -> None:
        self._own.intent(upload, [bytes.fromhex(n) for n in names], lease=PULL_LEASE, new=new)

    def _chunks_of(self, src: raftkv.Client, batch: list[ExportedRow]) -> Iterator[str]:
        """The names of every chunk (index and data) of the batch's blob cells."""
        for row, cells in batch:
            for col, _version, value, is_blob, *_expiry in cells:  # an expiring cell has 5
                if not is_blob:
                    continue
                try:
                    parsed = parse_manifest(value)
                except ProtocolError:
                    # Not a manifest at all: the old owner holds the same bytes and no
                    # chunks for them; moving the cell as it is loses nothing.
                    log.warning("group %d: cell %r/%r is marked large but holds no manifest",
                                self.group_id, row, col)
                    continue
                yield from parsed.index
                yield from data_chunks(parsed, src.fetch_chunk)

    # -- helpers ------------------------------------------------------------------

    def _config(self, num: int) -> Config:
        if num not in self._known:
            self._known[num] = self._configs.query(num)
        return self._known[num]

    def _group(self, addrs: tuple[str, ...]) -> raftkv.Client:
        if addrs not in self._groups:
            self._groups[addrs] = raftkv.Client(addrs, self.cluster.secret)
        return self._groups[addrs]


def _batches(rows: list[ExportedRow]) -> list[list[ExportedRow]]:
    """Rows split into import commands of at most about IMPORT_BYTES each (cells may split)."""
    batches: list[list[ExportedRow]] = []
    batch: list[ExportedRow] = []
    size = 0
    for row, cells in rows:
        for cell in cells:
            cell_size = len(msgpack.packb(cell, use_bin_type=True)) + len(row)
            if batch and size + cell_size > IMPORT_BYTES:
                batches.append(batch)
                batch, size = [], 0
            if batch and batch[-1][0] == row:
                batch[-1][1].append(cell)
            else:
                batch.append([row, [cell]])
            size += cell_size
    if batch:
        batches.append(batch)
    return batches

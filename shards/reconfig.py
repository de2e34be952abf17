"""A storage group learns configurations and moves its shards itself (6.824 ShardKV).

Every storage replica runs a :class:`Reconfigurer` thread; it acts only while
its replica leads the group, and everything it does is a command through the
group's own log (:mod:`raftkv.ownership`), so a new leader simply carries on
where the old one stopped.  Each pass looks at the group's state and takes the
next step:

- shards *incoming* in the group's configuration ``n``: pull each from the
  group that held it in ``n - 1`` -- export pages there, the blob chunks its
  cells name, import pages here -- then adopt it (serve it);
- shards *frozen* (moving out in ``n``): drop each once its new owner has
  adopted it, so the old copy is kept exactly as long as someone may need it;
- settled: if the config group has configuration ``n + 1``, begin it.

Configurations are applied one at a time, in order.  Two groups swapping shards
do not wait for each other: each only needs the other to have *begun* the
configuration (frozen what it gives away), never to have finished it.  A group
that was down through several changes catches up one configuration at a time.
The config group is only asked when a group is settled, so it stays off the
data path.

When the config group holds no configuration yet, the first reconfigurer to
look stores configuration 1: the cluster file's static map, which is where the
data already is.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import msgpack

import raftkv
from raftkv.blobs import data_chunks, parse_manifest
from raftkv.cluster import ClusterConfig
from raftkv.errors import RaftKVError

from .config import UNASSIGNED, Config, ConfigStore
from .shardmap import ShardMap

log = logging.getLogger(__name__)

POLL = 0.25                 # seconds between passes of a settled leader (a read in each log)
EXPORT_ROWS = 200           # rows asked for per export page
IMPORT_BYTES = 16 * 1024    # one import command's cells: half of a Raft entry's cap
INTENT_NAMES = 500          # chunk names per intent command (32 bytes each: under the cap)
PULL_LEASE = 3600.0         # seconds a batch's intent protects its chunks (one batch's copy)


def first_config(cluster: ClusterConfig) -> Config:
    """Configuration 1: the cluster file's static map (where an unmanaged cluster's data is)."""
    return Config(1, ShardMap.static(cluster).owners,
                  {g.id: tuple(g.client_addrs) for g in cluster.groups})


def settled(state: dict[str, Any], num: int) -> bool:
    """Whether a group's ``shard_state`` shows configuration ``num`` finished."""
    return state["config_num"] > num or (
        state["config_num"] == num and not state["incoming"] and not state["frozen"])


def adopted(state: dict[str, Any], num: int, shard: int) -> bool:
    """Whether the group with ``state`` has taken ``shard`` over in configuration ``num``."""
    if state["config_num"] != num:
        return state["config_num"] > num  # it cannot leave ``num`` with the shard awaited
    return shard not in {s for s, _ in state["incoming"]}


class Reconfigurer:
    """Drive one storage group through the configurations while this replica leads."""

    def __init__(self, cluster: ClusterConfig, group_id: int,
                 is_leader: Callable[[], bool], *, poll: float = POLL) -> None:
        assert cluster.config_group is not None
        self.cluster = cluster
        self.group_id = group_id
        self.poll = poll
        self._is_leader = is_leader
        self._own = raftkv.Client(cluster.group(group_id).client_addrs, cluster.secret)
        self._config_client = raftkv.Client(cluster.config_group.client_addrs, cluster.secret)
        self._configs = ConfigStore(self._config_client, cluster.shards)
        self._known: dict[int, Config] = {}                # configurations never change
        self._groups: dict[tuple[str, ...], raftkv.Client] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shards-reconfig", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for client in (self._own, self._config_client, *self._groups.values()):
            client.close()

    def _run(self) -> None:
        busy = False
        while not self._stop.wait(self.poll / 5 if busy else self.poll):
            if not self._is_leader():
                busy = False
                continue
            try:
                busy = self.step()
            except RaftKVError as exc:
                # A peer or the config group is down or not there yet: the next pass retries.
                log.debug("group %d: reconfiguration waits: %s", self.group_id, exc)
                busy = False
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad pass
                log.exception("group %d: reconfiguration pass failed", self.group_id)
                busy = False

    # -- one pass -----------------------------------------------------------------

    def step(self) -> bool:
        """One pass; whether the group is moving (so the next pass comes sooner)."""
        state = self._own.execute({"op": "shard_state"}, write=False)
        num = state["config_num"]
        # One unreachable peer holds up only the shards it gives or takes.
        if state["incoming"]:
            for shard, source in state["incoming"]:
                if self._stop.is_set():
                    break
                self._each(shard, self._pull, num, shard, source)
            return True
        if state["frozen"]:
            for shard in state["frozen"]:
                self._each(shard, self._drop_if_adopted, num, shard)
            return True
        latest = self._configs.latest_num()
        if latest == 0:
            self._configs.bootstrap(first_config(self.cluster))
        elif latest > num:
            self._begin(self._config(num), self._config(num + 1))
        return latest != num

    def _each(self, shard: int, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except RaftKVError as exc:
            log.debug("group %d: shard %d waits: %s", self.group_id, shard, exc)

    def _drop_if_adopted(self, num: int, shard: int) -> None:
        current = self._config(num)
        owner = self._group(current.groups[current.owners[shard]])
        if adopted(owner.execute({"op": "shard_state"}, write=False), num, shard):
            self._own.execute({"op": "drop_shard", "config": num, "shard": shard}, write=True)
            log.info("group %d: dropped shard %d (configuration %d)", self.group_id, shard, num)

    def _begin(self, previous: Config, config: Config) -> None:
        gid = self.group_id
        mine = config.shards_of(gid)
        incoming = [[s, previous.owners[s]] for s in mine
                    if previous.owners[s] not in (gid, UNASSIGNED)]
        outgoing = [s for s in previous.shards_of(gid) if config.owners[s] != gid]
        self._own.execute({"op": "begin_config", "config": config.num, "shards": mine,
                           "incoming": incoming, "outgoing": outgoing}, write=True)
        log.info("group %d: began configuration %d (%d shards in, %d out)",
                 gid, config.num, len(incoming), len(outgoing))

    def _pull(self, num: int, shard: int, source: int) -> None:
        """Copy ``shard`` from the group that held it in ``num - 1``, then serve it."""
        src = self._group(self._config(num - 1).groups[source])
        after, counter = "", 0
        for _ in range(1_000_000):  # pages; a shard of a million pages is not a shard
            page = src.execute({"op": "export_shard", "config": num, "shard": shard,
                                "after": after, "limit": EXPORT_ROWS}, write=False)
            counter = page["counter"]
            for batch in _batches(page["rows"]):
                self._import(src, num, shard, batch, counter)
            if not page["more"] or not page["rows"] or self._stop.is_set():
                break
            after = page["rows"][-1][0]
        if self._stop.is_set():
            return
        # An empty shard still carries its version counter over.
        self._import(src, num, shard, [], counter)
        self._own.execute({"op": "adopt_shard", "config": num, "shard": shard}, write=True)
        log.info("group %d: adopted shard %d from group %d (configuration %d)",
                 self.group_id, shard, source, num)

    def _import(self, src: raftkv.Client, num: int, shard: int, batch: list,
                counter: int) -> None:
        """One import command, after the chunks its blob cells name.

        The chunks arrive before the cells that name them, so, like any upload,
        they are first named in an intent (raftkv.repair's rule): no garbage
        collector here can take them in between.  The intent ends once the
        imported cells protect them.
        """
        names = self._chunks_of(src, batch)
        upload = secrets.randbits(63)
        for i in range(0, len(names), INTENT_NAMES):
            self._own.execute({"op": "intent", "upload": upload, "lease": PULL_LEASE,
                               "digests": [bytes.fromhex(n) for n in names[i:i + INTENT_NAMES]],
                               "new": i == 0}, write=True)
        try:
            for name in names:
                self._own.put_chunk(name, src.fetch_chunk(name))
            self._own.execute({"op": "import_shard", "config": num, "shard": shard,
                               "rows": batch, "counter": counter}, write=True)
        finally:
            if names:
                with contextlib.suppress(RaftKVError):  # else it expires with its lease
                    self._own.execute({"op": "intent_end", "upload": upload}, write=True)

    @staticmethod
    def _chunks_of(src: raftkv.Client, batch: list) -> list[str]:
        """The names of every chunk (index and data) of the batch's blob cells."""
        names: list[str] = []
        for _row, cells in batch:
            for _col, _version, value, is_blob in cells:
                if is_blob:
                    parsed = parse_manifest(value)
                    names += [*parsed.index, *data_chunks(parsed, src.fetch_chunk)]
        return names

    def _config(self, num: int) -> Config:
        if num not in self._known:
            self._known[num] = self._configs.query(num)
        return self._known[num]

    def _group(self, addrs: tuple[str, ...]) -> raftkv.Client:
        if addrs not in self._groups:
            self._groups[addrs] = raftkv.Client(addrs, self.cluster.secret)
        return self._groups[addrs]


def _batches(rows: list) -> list[list]:
    """Rows split into import commands of at most about IMPORT_BYTES each (cells may split)."""
    batches: list[list] = []
    batch: list = []
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

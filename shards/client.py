"""``shards.Client``: the store as the apps see it -- every group behind one object."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar, cast

import raftkv
from raftkv.client import cells_request
from raftkv.cluster import ClusterConfig
from raftkv.errors import RaftKVError, WrongShard
from raftkv.interface import Cell, Condition, Consistency, Mutation, Readable, Unchanged
from raftkv.keys import shard_of

from .config import Config, ConfigStore
from .shardmap import ShardMap

T = TypeVar("T")
Answer = Cell | Unchanged | None
GROUPS_AT_ONCE = 16  # groups one get_cells call reads in parallel (threads of the client)


class Client:
    """Route each request to the group that owns its row's shard.

    Thread-safe.  Create one per process, after any fork (it owns sockets and
    threads).  Methods and errors are those of :class:`raftkv.Client`: the store
    interface (:class:`raftkv.interface.ShardedStore`), plus the cluster's parts.
    """

    def __init__(self, cluster: ClusterConfig, *, timeout: float = 10.0) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.shard_map = ShardMap.static(cluster)
        self._groups = {g.id: raftkv.Client(g.client_addrs, cluster.secret, timeout=timeout)
                        for g in cluster.all_groups()}
        self._lock = threading.Lock()
        self._closed = False
        self._fan_out: ThreadPoolExecutor | None = None  # get_cells' groups, made on first use

    def shard_of(self, row: str) -> int:
        return shard_of(row, self.cluster.shards)

    def group_client(self, gid: int, addrs: Sequence[str] = ()) -> raftkv.Client:
        """Group ``gid``'s client; ``addrs`` introduce a group this client has not met."""
        with self._lock:
            if gid not in self._groups and addrs:
                self._meet_group(gid, addrs)
            return self._groups[gid]

    def group_of_shard(self, shard: int) -> int:
        """The id of the group that serves ``shard``, as far as we know."""
        return self.shard_map.group_of(shard)

    def group_for(self, row: str) -> raftkv.Client:
        """The client of the group that serves ``row``'s shard, as far as we know."""
        return self._groups[self.shard_map.group_of(self.shard_of(row))]

    def use_config(self, config: Config) -> None:
        """Route by ``config`` from now on (if it is newer than what we use)."""
        with self._lock:
            if config.num <= self.shard_map.num or config.num == 0:
                return
            for gid, addrs in config.groups.items():
                if gid not in self._groups:
                    self._meet_group(gid, addrs)
            self.shard_map = ShardMap(config.num, config.owners)

    def _meet_group(self, gid: int, addrs: Sequence[str]) -> None:
        """A client for a group this client has not met (called under the lock)."""
        group = raftkv.Client(addrs, self.cluster.secret, timeout=self.timeout)
        if self._closed:
            group.close()  # met after close(): its calls fail, and it opens no socket
        self._groups[gid] = group

    def refresh(self) -> None:
        """Learn the latest configuration; without a config group the map is static."""
        config_group = self.config_group()
        if config_group is None:
            return
        try:
            self.use_config(ConfigStore(config_group, self.cluster.shards).query())
        except RaftKVError:
            pass  # the config group is down: keep routing as we did, and retry later

    def _on_row(self, row: str, call: Callable[[raftkv.Client], T], *, retry: bool = True) -> T:
        return self._routed(self.shard_of(row), call, retry=retry)

    def _routed(self, shard: int, call: Callable[[raftkv.Client], T], *,
                retry: bool = True) -> T:
        """``call`` on the owning group; on WrongShard learn the new owner and go there.

        A WrongShard answer means the request did not apply (raftkv.ownership), so
        sending it again elsewhere is safe.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                return call(self._groups[self.shard_map.group_of(shard)])
            except WrongShard as exc:
                if not retry:
                    self.refresh()
                    raise
                delay = self._after_wrong_shard(exc, deadline, delay)

    def _after_wrong_shard(self, exc: WrongShard, deadline: float, delay: float) -> float:
        """Learn the shard's new owner and wait ``delay`` before the next try (raising
        ``exc`` if that would pass ``deadline``); the delay before the one after."""
        self.refresh()
        if time.monotonic() + delay > deadline:
            raise exc
        time.sleep(delay)
        return min(delay * 2, 0.5)

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        return self._on_row(row, lambda g: g.get(row, col, consistency=consistency))

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        return self._on_row(row, lambda g: g.put(row, col, value, ttl=ttl))

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        if isinstance(stream, bytes):
            return self._on_row(row, lambda g: g.put_stream(row, col, stream, ttl=ttl))
        seekable = getattr(stream, "seekable", None)  # a stream may offer read() only
        if not (callable(seekable) and seekable()):
            # A second try could not read it again: learn the new owner, but raise.
            return self._on_row(row, lambda g: g.put_stream(row, col, stream, ttl=ttl),
                                retry=False)
        rewindable = cast(BinaryIO, stream)  # it said it is seekable
        start = rewindable.tell()

        def attempt(group: raftkv.Client) -> int:
            rewindable.seek(start)
            return group.put_stream(row, col, rewindable, ttl=ttl)
        return self._on_row(row, attempt)

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        return self._on_row(row, lambda g: g.get_stream(row, col, consistency=consistency,
                                                        offset=offset))

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        return self._on_row(row, lambda g: g.get_into(row, col, out, consistency=consistency))

    def delete(self, row: str, col: str) -> bool:
        return self._on_row(row, lambda g: g.delete(row, col))

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        return self._on_row(row, lambda g: g.cput(row, col, new, old=old, if_version=if_version,
                                                  ttl=ttl))

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        return self._on_row(row, lambda g: g.mutate_row(row, conditions, mutations, ttl=ttl))

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Answer]:
        """One request per group that serves some of the rows, all sent at once; a group
        that answers WrongShard (a shard moved) has its cells routed again, as ``get``."""
        request = cells_request(cells, known)  # the bound is the call's, whatever the groups
        answers: list[Answer] = [None] * len(request)
        pending = list(range(len(request)))
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while pending:
            by_group: dict[int, list[int]] = {}
            for i in pending:
                by_group.setdefault(self.shard_map.group_of(self.shard_of(request[i][0])),
                                    []).append(i)
            outcomes = self._read_groups(by_group, request, consistency)
            pending, refusals = [], []
            for gid, outcome in outcomes.items():
                if isinstance(outcome, WrongShard):
                    pending += by_group[gid]
                    refusals.append(outcome)
                    continue
                for i, answer in zip(by_group[gid], outcome, strict=True):
                    answers[i] = answer
            if refusals:
                delay = self._after_wrong_shard(refusals[0], deadline, delay)
        return answers

    def _read_groups(self, by_group: dict[int, list[int]], request: list[list[Any]],
                     consistency: Consistency) -> dict[int, list[Answer] | WrongShard]:
        """Each group's answers to its cells, or its WrongShard; the groups are read at
        once, one request each.  Any other error is raised."""
        def read(gid: int) -> list[Answer] | WrongShard:
            indices = by_group[gid]
            try:
                return self._groups[gid].get_cells(
                    [(request[i][0], request[i][1]) for i in indices],
                    known=[request[i][2] for i in indices], consistency=consistency)
            except WrongShard as exc:
                return exc

        if len(by_group) == 1:  # no thread hop for the common case
            return {gid: read(gid) for gid in by_group}
        pool = self._pool()
        futures = {gid: pool.submit(read, gid) for gid in by_group}
        return {gid: future.result() for gid, future in futures.items()}

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._fan_out is None:
                self._fan_out = ThreadPoolExecutor(max_workers=GROUPS_AT_ONCE,
                                                   thread_name_prefix="shards-get-cells")
            return self._fan_out

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        return self._on_row(row, lambda g: g.get_row(row, prefix, after=after, limit=limit,
                                                     reverse=reverse, consistency=consistency))

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        return self._routed(shard, lambda g: g.scan(shard, after_row, limit,
                                                    consistency=consistency))

    def config_group(self) -> raftkv.Client | None:
        """The config group's client (configurations, node registry), if there is one."""
        if self.cluster.config_group is None:
            return None
        return self._groups[self.cluster.config_group.id]

    def status(self) -> list[dict[str, Any]]:
        """Every replica's status (the config group's as group 0), named as in the cluster file."""
        out = []
        for group in self.cluster.all_groups():
            for replica, status in zip(group.replicas, self._groups[group.id].status(), strict=True):
                out.append({**status, "name": replica.name, "group": group.id,
                            "addr": replica.client})
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            groups = list(self._groups.values())
        for group in groups:
            group.close()
        if self._fan_out is not None:
            self._fan_out.shutdown(wait=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Numbered shard configurations: Join, Leave, Move, Query (6.824 ShardKV's controller).

A configuration says which storage group owns each shard, and which replicas
each group has.  Every change makes configuration ``num + 1``; old ones stay
queryable.  Rebalancing is a pure function of the previous configuration and
the set of groups, so it gives the same answer wherever it runs; it is even
(the shard counts of any two groups differ by at most one) and moves as few
shards as possible: only shards of departed groups and the surplus of groups
above their share change hands.

:class:`ConfigStore` keeps the configurations in a raftkv group of their own
(the config group): configuration ``n`` is one cell, written together with
the ``latest`` pointer in a single conditional row mutation, so two
administrators changing the configuration at once cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgpack

from raftkv.errors import ConditionFailed, ConfigError, UnavailableError
from raftkv.interface import KeyValueStore

UNASSIGNED = 0  # the owner of every shard before the first Join


@dataclass(frozen=True)
class Config:
    num: int                                      # 0 is the empty configuration
    owners: tuple[int, ...]                       # owners[shard] = group id, 0 = none
    groups: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # gid -> client addrs

    @classmethod
    def empty(cls, shards: int) -> Config:
        return cls(num=0, owners=(UNASSIGNED,) * shards)

    def shards_of(self, gid: int) -> list[int]:
        return [s for s, owner in enumerate(self.owners) if owner == gid]

    def pack(self) -> bytes:
        return msgpack.packb({"num": self.num, "owners": list(self.owners),
                              "groups": {g: list(a) for g, a in self.groups.items()}})

    @classmethod
    def unpack(cls, data: bytes) -> Config:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return cls(num=raw["num"], owners=tuple(raw["owners"]),
                   groups={int(g): tuple(a) for g, a in raw["groups"].items()})


def rebalance(owners: Sequence[int], gids: Sequence[int]) -> tuple[int, ...]:
    """Owners after spreading the shards evenly over ``gids``, moving as few as possible."""
    if not gids:
        return (UNASSIGNED,) * len(owners)
    gids = sorted(set(gids))
    counts = {g: 0 for g in gids}
    for owner in owners:
        if owner in counts:
            counts[owner] += 1
    base, extra = divmod(len(owners), len(gids))
    # The groups that already hold the most keep the extra shard each: fewest moves.
    by_load = sorted(gids, key=lambda g: (-counts[g], g))
    target = {g: base + (1 if i < extra else 0) for i, g in enumerate(by_load)}
    result = list(owners)
    free: list[int] = []
    kept = dict.fromkeys(gids, 0)
    for shard, owner in enumerate(owners):
        if owner in target and kept[owner] < target[owner]:
            kept[owner] += 1
        else:
            free.append(shard)  # orphaned, or above its group's share
    for gid in gids:
        while kept[gid] < target[gid]:
            result[free.pop(0)] = gid
            kept[gid] += 1
    return tuple(result)


def join(config: Config, new_groups: Mapping[int, Sequence[str]]) -> Config:
    """Add groups (id -> replica client addresses) and rebalance."""
    for gid, addrs in new_groups.items():
        if gid <= 0:
            raise ConfigError(f"group ids are positive, not {gid}")
        if gid in config.groups:
            raise ConfigError(f"group {gid} has already joined")
        if not addrs:
            raise ConfigError(f"group {gid} has no replicas")
    groups = {**config.groups, **{g: tuple(a) for g, a in new_groups.items()}}
    return Config(config.num + 1, rebalance(config.owners, list(groups)), groups)


def leave(config: Config, gids: Sequence[int]) -> Config:
    """Remove groups and give their shards to the others."""
    unknown = set(gids) - set(config.groups)
    if unknown:
        raise ConfigError(f"no such group: {sorted(unknown)}")
    groups = {g: a for g, a in config.groups.items() if g not in gids}
    if not groups and any(owner != UNASSIGNED for owner in config.owners):
        raise ConfigError("the last groups cannot leave: their shards would have nowhere to go")
    return Config(config.num + 1, rebalance(config.owners, list(groups)), groups)


def move(config: Config, shard: int, gid: int) -> Config:
    """Give one shard to one group, without rebalancing the rest."""
    if gid not in config.groups:
        raise ConfigError(f"no such group: {gid}")
    if not 0 <= shard < len(config.owners):
        raise ConfigError(f"no such shard: {shard}")
    owners = list(config.owners)
    owners[shard] = gid
    return Config(config.num + 1, tuple(owners), dict(config.groups))


class ConfigStore:
    """The configurations, kept in the config group through a raftkv client."""

    ROW = "{config}/configs"
    LATEST = "latest"
    ATTEMPTS = 20  # concurrent changes each retry on top of the winner

    def __init__(self, client: KeyValueStore, shards: int) -> None:
        self._client = client
        self._shards = shards

    @staticmethod
    def column(num: int) -> str:
        return f"n:{num:012d}"

    def latest_num(self) -> int:
        """The latest configuration's number (one read through the log); 0 when there is none."""
        latest = self._client.get(self.ROW, self.LATEST)
        return 0 if latest is None else int(latest.value)

    def bootstrap(self, first: Config) -> Config:
        """Store ``first`` as configuration 1 unless there is one already; the one stored."""
        assert first.num == 1
        column = self.column(1)
        try:
            self._client.mutate_row(self.ROW, [("absent", column)], [
                ("put", column, first.pack()), ("put", self.LATEST, b"1")])
        except ConditionFailed:
            return self.query(1)  # someone else's, made from the same cluster file
        return first

    def query(self, num: int = -1) -> Config:
        """Configuration ``num``, or the latest for -1 (read through the log)."""
        if num < 0:
            latest = self._client.get(self.ROW, self.LATEST)
            if latest is None:
                return Config.empty(self._shards)
            num = int(latest.value)
        if num == 0:
            return Config.empty(self._shards)
        cell = self._client.get(self.ROW, self.column(num))
        if cell is None:
            raise ConfigError(f"no configuration {num}")
        return Config.unpack(cell.value)

    def change(self, step: Callable[[Config], Config]) -> Config:
        """Apply ``step(latest) -> next`` atomically; retried when another change won."""
        for _ in range(self.ATTEMPTS):
            current = self.query()
            proposed = step(current)
            column = self.column(proposed.num)
            try:
                self._client.mutate_row(self.ROW, [("absent", column)], [
                    ("put", column, proposed.pack()),
                    ("put", self.LATEST, str(proposed.num).encode())])
            except ConditionFailed:
                continue
            return proposed
        raise UnavailableError("the configuration kept changing under us; try again")

    def join(self, new_groups: Mapping[int, Sequence[str]]) -> Config:
        return self.change(lambda c: join(c, new_groups))

    def leave(self, gids: Sequence[int]) -> Config:
        return self.change(lambda c: leave(c, gids))

    def move(self, shard: int, gid: int) -> Config:
        return self.change(lambda c: move(c, shard, gid))

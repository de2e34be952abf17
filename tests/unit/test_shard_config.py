"""Shard configurations: rebalancing is deterministic, even, and moves as few shards as possible."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.errors import ConfigError
from shards.config import UNASSIGNED, Config, join, leave, move, rebalance

SHARDS = 64
gid_sets = st.sets(st.integers(1, 12), max_size=10)


def _owners(draw_gids: set[int], data) -> tuple[int, ...]:
    choices = sorted(draw_gids) + [UNASSIGNED, 99]  # 99: a group that has left
    return tuple(data.draw(st.sampled_from(choices)) for _ in range(SHARDS))


def _minimal_moves(owners, gids) -> int:
    """A lower bound: orphans must move, and surplus above the largest share must move."""
    counts = Counter(o for o in owners if o in gids)
    orphans = sum(1 for o in owners if o not in gids)
    base, extra = divmod(len(owners), len(gids))
    ranked = sorted(gids, key=lambda g: (-counts[g], g))
    target = {g: base + (1 if i < extra else 0) for i, g in enumerate(ranked)}
    return orphans + sum(max(0, counts[g] - target[g]) for g in gids)


@given(gids=gid_sets, data=st.data())
def test_rebalance_is_even_minimal_and_deterministic(gids, data) -> None:
    owners = _owners(gids, data)
    after = rebalance(owners, sorted(gids))
    assert after == rebalance(owners, sorted(gids, reverse=True))  # order of input irrelevant
    if not gids:
        assert set(after) == {UNASSIGNED}
        return
    counts = Counter(after)
    assert set(counts) == gids
    assert max(counts.values()) - min(counts.values()) <= 1
    moved = sum(1 for a, b in zip(owners, after, strict=True) if a != b)
    assert moved == _minimal_moves(owners, gids)


def test_join_leave_move_number_the_configurations() -> None:
    c0 = Config.empty(SHARDS)
    c1 = join(c0, {1: ["a:1", "a:2", "a:3"]})
    assert c1.num == 1 and set(c1.owners) == {1}
    c2 = join(c1, {2: ["b:1"], 3: ["c:1"]})
    assert c2.num == 2 and sorted(Counter(c2.owners).values()) == [21, 21, 22]
    moved = sum(1 for a, b in zip(c1.owners, c2.owners, strict=True) if a != b)
    assert moved == 42  # only what the newcomers need
    c3 = leave(c2, [1])
    assert set(c3.owners) == {2, 3} and c3.groups.keys() == {2, 3}
    assert all(a == b for a, b in zip(c2.owners, c3.owners, strict=True) if a != 1)
    c4 = move(c3, 5, 2)
    assert c4.owners[5] == 2 and c4.num == 4
    assert Config.unpack(c4.pack()) == c4


@pytest.mark.parametrize("bad", [
    lambda c: join(c, {1: ["again:1"]}),
    lambda c: join(c, {0: ["zero:1"]}),
    lambda c: join(c, {7: []}),
    lambda c: leave(c, [42]),
    lambda c: leave(c, [1]),
    lambda c: move(c, 5, 42),
    lambda c: move(c, SHARDS, 1),
])
def test_invalid_changes_are_refused(bad) -> None:
    config = join(Config.empty(SHARDS), {1: ["a:1"]})
    with pytest.raises(ConfigError):
        bad(config)

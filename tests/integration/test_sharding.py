"""Shards over several groups (ShardKV's static tests): a group down takes exactly its
shards with it, and the config group is not on the data path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from raftkv.errors import UnavailableError, WrongShard
from shards.migrate import Migrator

from .._procs import wait_for
from ..cluster import KVCluster, row_per_shard, running

pytestmark = pytest.mark.cluster


@pytest.fixture
def two_groups(tmp_path):
    with running(KVCluster(tmp_path / "kv", groups=2, config_group=True)) as cluster:
        yield cluster



def test_with_one_group_down_exactly_its_shards_fail(two_groups) -> None:
    with two_groups.client(timeout=2.0) as client:
        rows = row_per_shard(client, "k")
        for shard, row in rows.items():
            client.put(row, "c", b"%d" % shard)
        owner = {shard: client.shard_map.group_of(shard) for shard in rows}
        assert set(owner.values()) == {1, 2}
        for name in ("g2a", "g2b", "g2c"):
            two_groups.kill(name)

        def probe(shard: int) -> bool:
            try:
                assert client.get(rows[shard], "c").value == b"%d" % shard
                client.put(rows[shard], "c2", b"after")
                return True
            except UnavailableError:
                return False
        with ThreadPoolExecutor(16) as pool:
            works = dict(zip(rows, pool.map(probe, rows), strict=True))
    assert {s for s, ok in works.items() if ok} == {s for s, g in owner.items() if g == 1}


def test_the_config_group_is_not_on_the_data_path(two_groups) -> None:
    with two_groups.client() as client:
        migrator = Migrator(client)
        migrator.wait_for(migrator.current())  # the groups are managed: they answer WrongShard
    for name in ("ca", "cb", "cc"):
        two_groups.kill(name)
    with two_groups.client(timeout=5.0) as client:
        rows = row_per_shard(client, "k")
        for shard, row in rows.items():
            client.put(row, "c", b"%d" % shard)
        for shard, row in rows.items():
            assert client.get(row, "c").value == b"%d" % shard


def test_a_stale_read_at_the_wrong_group_is_refused_not_empty(two_groups) -> None:
    with two_groups.client() as client:
        rows = row_per_shard(client, "s")
        shard = next(s for s in rows if client.shard_map.group_of(s) == 1)
        client.put(rows[shard], "c", b"here")
        # A stale read may reach a follower that has not applied the write yet:
        # wait until every replica of group 1 has before reading one.
        def applied() -> list[int]:
            return [s.get("applied_index", 0) for s in client.status() if s.get("group") == 1]
        target = max(applied())
        wait_for(lambda: min(applied()) >= target, 10, "every replica of group 1 to apply it")
        assert client.get(rows[shard], "c", consistency="stale").value == b"here"
        wrong = client.group_client(2)
        with pytest.raises(WrongShard):  # not "no such cell": group 2 never had it
            wrong.get(rows[shard], "c", consistency="stale")


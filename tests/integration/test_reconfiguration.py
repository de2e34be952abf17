"""Groups that learn configurations themselves, through crashes (ShardKV's harder tests):
a group down across several changes, every process restarted cold at once, and
join and leave under concurrent load with the history checked."""

from __future__ import annotations

import time

import pytest

from shards.config import Config, join, leave, move
from shards.migrate import Migrator

from .._procs import wait_for
from ..cluster import KVCluster, row_per_shard, running
from ..faults import Workload

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path):
    with running(KVCluster(tmp_path / "kv", groups=2, config_group=True)) as c:
        yield c



def _filled(client) -> tuple[Migrator, Config, dict[int, str]]:
    """A migrator, the first configuration, and one row per shard holding its number."""
    migrator = Migrator(client, wait=90)
    first = migrator.current()
    rows = row_per_shard(client, "r")
    for shard, row in rows.items():
        client.put(row, "c", b"%d" % shard)
    return migrator, first, rows


def _kill_group(cluster: KVCluster, gid: int) -> None:
    for replica in cluster.cluster.group(gid).replicas:
        cluster.kill(replica.name)


def _moving_state(client, name: str) -> tuple[int | None, int | None, int | None]:
    """Replica ``name``'s (configuration, shards incoming, shards frozen), as it reports them."""
    status = next(s for s in client.status() if s["name"] == name)
    return status.get("config_num"), status.get("shards_incoming"), status.get("shards_frozen")


def test_a_group_down_across_several_changes_catches_up(cluster) -> None:
    with cluster.client(timeout=3.0) as client:
        migrator, first, rows = _filled(client)
        ones, twos = first.shards_of(1), first.shards_of(2)
        _kill_group(cluster, 2)
        # Three changes while group 2 is down: it gains a shard, gives one, gains another.
        migrator.store.change(lambda c: move(c, ones[0], 2))
        migrator.store.change(lambda c: move(c, twos[0], 1))
        last = migrator.store.change(lambda c: move(c, ones[1], 2))
        assert last.num == first.num + 3
        # Group 1 begins the first change on its own and freezes what it gives away;
        # a shard that is not moving is served all along.
        leader = cluster.leader(1)
        wait_for(lambda: _moving_state(client, leader)[0] == first.num + 1, 20,
                 "group 1 to begin the next configuration")
        client.put(rows[ones[2]], "during", b"still served")
        for name in ("g2a", "g2b", "g2c"):
            cluster.start(name)
        migrator.wait_for(last)  # both groups went through every configuration, in order
        client.refresh()
        assert client.shard_map.num == last.num
        assert [client.shard_map.group_of(s) for s in (ones[0], twos[0], ones[1])] == [2, 1, 2]
        for shard, row in rows.items():
            assert client.get(row, "c").value == b"%d" % shard
        assert client.get(rows[ones[2]], "during").value == b"still served"


def test_every_process_restarted_cold_at_once(cluster) -> None:
    with cluster.client() as client:
        migrator, first, rows = _filled(client)
        moved = migrator.reconfigure(lambda c: move(c, first.shards_of(1)[0], 2))
    for name in cluster.procs:  # config group too: every process dies with SIGKILL
        cluster.kill(name)
    cluster.start()
    with cluster.client() as client:
        migrator = Migrator(client, wait=60)
        assert migrator.current() == moved
        for shard, row in rows.items():
            assert client.get(row, "c").value == b"%d" % shard
        # And the groups go on changing configuration after the restart.
        back = migrator.reconfigure(lambda c: move(c, first.shards_of(1)[0], 1))
        assert back.num == moved.num + 1
        for shard, row in rows.items():
            client.put(row, "c2", b"after %d" % shard)
            assert client.get(row, "c").value == b"%d" % shard


def test_every_process_restarted_cold_in_the_middle_of_a_move(cluster) -> None:
    with cluster.client(timeout=3.0) as client:
        migrator, first, rows = _filled(client)
        a, b = first.shards_of(1)[0], first.shards_of(2)[0]
        _kill_group(cluster, 2)

        def swap(config: Config) -> Config:
            owners = list(config.owners)
            owners[a], owners[b] = 2, 1
            return Config(config.num + 1, tuple(owners), dict(config.groups))
        target = migrator.store.change(swap)
        # Group 1 begins the swap: it freezes a and awaits b, which group 2 cannot send.
        leader = cluster.leader(1)

        wait_for(lambda: _moving_state(client, leader) == (target.num, 1, 1), 20,
                 "group 1 to be half-way through the swap")
    for name in cluster.procs:  # now every process dies, with the move half done
        cluster.kill(name)
    cluster.start()
    with cluster.client() as client:
        Migrator(client, wait=90).wait_for(target)
        client.refresh()
        assert (client.shard_map.group_of(a), client.shard_map.group_of(b)) == (2, 1)
        for shard, row in rows.items():
            assert client.get(row, "c").value == b"%d" % shard


def test_join_and_leave_under_load_keep_every_history_linearizable(cluster, tmp_path) -> None:
    with cluster.client() as admin:
        migrator = Migrator(admin, wait=60)
        first = migrator.current()
        rows = row_per_shard(admin, "r")
        # Cells on both groups' shards: some move on leave, the others stay put.
        picked = tuple(rows[s] for s in (*first.shards_of(1)[:2], *first.shards_of(2)[:2]))
        workload = Workload(lambda: cluster.client(timeout=8.0), clients=6, keys=8, ops=300,
                            seconds=30.0, seed=11, rows=picked)
        workload.start()
        try:
            time.sleep(1.0)
            began = time.monotonic_ns()
            alone = migrator.reconfigure(lambda c: leave(c, [2]))
            time.sleep(1.0)
            addrs = cluster.cluster.group(2).client_addrs
            both = migrator.reconfigure(lambda c: join(c, {2: addrs}))
            ended = time.monotonic_ns()
            time.sleep(1.0)
        finally:
            workload.stop()
    assert set(alone.owners) == {1}
    assert sorted(both.owners.count(g) for g in (1, 2)) == [len(both.owners) // 2] * 2
    # Clients kept working between the two changes, on the cells that moved too
    # (keys 2, 3, 6 and 7 live in rows of group 2's shards).
    done = {op.key for op in workload.recorder.history
            if op.ret is not None and began <= op.call and op.ret <= ended}
    assert done >= {"k2", "k3", "k6", "k7"}, done
    workload.check(tmp_path)


def test_a_group_that_joins_fresh_takes_its_share(tmp_path) -> None:
    """Configuration 1 names group 1 alone, before any storage replica starts: group 2
    comes up empty, serves nothing, then joins -- and clients, whose static map would
    send half the shards to group 2, follow the stored configurations instead."""
    cluster = KVCluster(tmp_path / "kv", groups=2, config_group=True)
    try:
        for name in ("ca", "cb", "cc"):
            cluster.start(name)
        cluster.leader(0)
        with cluster.client() as client:
            migrator = Migrator(client, wait=60)
            addrs = {1: cluster.cluster.group(1).client_addrs}
            alone = migrator.store.bootstrap(Config(1, (1,) * cluster.cluster.shards, addrs))
            assert set(alone.owners) == {1}
            cluster.start()  # both storage groups
            migrator.wait_for(alone)
            rows = row_per_shard(client, "f")
            for shard, row in rows.items():
                client.put(row, "c", b"%d" % shard)
            assert client.shard_map.num == 1
            both = migrator.reconfigure(
                lambda c: join(c, {2: cluster.cluster.group(2).client_addrs}))
            assert sorted(both.owners.count(g) for g in (1, 2)) == [len(both.owners) // 2] * 2
        with cluster.client() as fresh:
            for shard, row in rows.items():
                assert fresh.get(row, "c").value == b"%d" % shard
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


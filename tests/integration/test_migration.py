"""Shards moving between groups while clients work (ShardKV's reconfiguration tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raftkv import Client as GroupClient
from raftkv.errors import ConfigurationPending, WrongShard
from shards.config import Config, join, leave
from shards.migrate import Migrator

from .._procs import wait_for
from ..cluster import KVCluster, row_per_shard, running
from ..faults import ROW, Workload

pytestmark = pytest.mark.cluster

FAST_GC = "\n[blobs]\ngc_interval = 0.5\ngc_grace = 0.5\nrepair_interval = 0.5\n"


@pytest.fixture
def cluster(tmp_path):
    with running(KVCluster(tmp_path / "kv", groups=2, config_group=True, extra=FAST_GC)) as c:
        yield c



def test_moving_shards_under_load_keeps_every_history_linearizable(cluster, tmp_path) -> None:
    """A shard moves away, back (with a replica killed) and away again while clients work."""
    with cluster.client() as admin:
        migrator = Migrator(admin)
        shard = admin.shard_of(ROW)
        home = migrator.current().owners[shard]
        away = 2 if home == 1 else 1
        workload = Workload(lambda: cluster.client(timeout=8.0), clients=6, ops=300,
                            seconds=20.0, seed=7)
        workload.start()
        try:
            time.sleep(1.0)
            migrator.reconfigure(lambda c: _moved(c, shard, away))
            time.sleep(1.0)
            cluster.kill(f"g{away}c")  # a replica dies in the middle of it all
            migrator.reconfigure(lambda c: _moved(c, shard, home))
            time.sleep(1.0)
            cluster.start(f"g{away}c")
            migrator.reconfigure(lambda c: _moved(c, shard, away))
            time.sleep(1.0)
        finally:
            workload.stop()
        admin.refresh()
        assert admin.shard_map.group_of(shard) == away  # it really moved, three times
    workload.check(tmp_path)


def _moved(config: Config, shard: int, gid: int) -> Config:
    owners = list(config.owners)
    owners[shard] = gid
    return Config(config.num + 1, tuple(owners), dict(config.groups))


def test_leave_and_join_move_everything_blobs_included(cluster) -> None:
    big = os.urandom(40_000)  # above the inline limit: a blob
    with cluster.client() as client:
        rows = row_per_shard(client, "m")
        for shard, row in rows.items():
            client.put(row, "c", b"%d" % shard)
        leaving = [s for s, g in enumerate(Migrator(client).current().owners) if g == 2]
        client.put(rows[leaving[0]], "big", big)
        wait_for(lambda: all(s.get("blob_bytes", 0) >= len(big) for s in client.status()
                             if s["group"] == 2), 20, "group 2 to count the blob's bytes")
        config = Migrator(client).reconfigure(lambda c: _leave(c))
        assert set(config.owners) == {1}
    with cluster.client() as fresh:  # starts from the static map: learns by WrongShard
        for shard, row in rows.items():
            assert fresh.get(row, "c").value == b"%d" % shard
        assert fresh.get(rows[leaving[0]], "big").value == big
    group2 = cluster.cluster.group(2)
    with GroupClient(group2.client_addrs, cluster.cluster.secret, timeout=5) as old:
        with pytest.raises(WrongShard):
            old.get(rows[leaving[0]], "c")

        def forgotten() -> bool:  # the source dropped the shards, and GC took the chunks
            return all(s.get("blob_chunks", 1) == 0 and s.get("blob_bytes", 1) == 0
                       for s in old.status() if s["alive"])
        wait_for(forgotten, 30, "group 2 to collect the moved chunks")
    with cluster.client() as client:
        config = Migrator(client).reconfigure(lambda c: _join(c, cluster))
        counts = sorted(len(config.shards_of(g)) for g in (1, 2))
        assert counts[1] - counts[0] <= 1
        for shard, row in rows.items():
            assert client.get(row, "c").value == b"%d" % shard
        assert client.get(rows[leaving[0]], "big").value == big


def _leave(config: Config) -> Config:
    return leave(config, [2])


def _join(config: Config, cluster: KVCluster) -> Config:
    return join(config, {2: cluster.cluster.group(2).client_addrs})


def test_two_groups_swapping_shards_in_one_change(cluster) -> None:
    with cluster.client() as client:
        migrator = Migrator(client)
        first = migrator.current()
        a, b = first.shards_of(1)[0], first.shards_of(2)[0]
        row = next(r for r in (f"{{swap{i}}}" for i in range(10_000))
                   if client.shard_of(r) == a)
        client.put(row, "c", b"a")
        def swap(c: Config) -> Config:
            owners = list(c.owners)
            owners[a], owners[b] = 2, 1
            return Config(c.num + 1, tuple(owners), dict(c.groups))
        swapped = migrator.reconfigure(swap)
        assert swapped.owners[a] == 2 and swapped.owners[b] == 1
        assert client.get(row, "c").value == b"a"


def test_a_step_with_an_old_configuration_number_is_refused(cluster) -> None:
    with cluster.client() as client:
        migrator = Migrator(client)
        shard = 0
        target = 2 if migrator.current().owners[shard] == 1 else 1
        migrator.reconfigure(lambda c: _moved(c, shard, target))
        group = client.group_client(target)
        # The group is in configuration 2 now: steps of 1 (a slow peer's, a stale
        # reconfigurer's) are refused, and so is skipping ahead.
        for stale in (lambda: group.begin_config(4, [], [], []),
                      lambda: group.import_shard(1, shard, [], 0),
                      lambda: group.adopt_shard(1, shard),
                      lambda: group.drop_shard(1, shard)):
            with pytest.raises(ConfigurationPending):
                stale()
        with pytest.raises(ConfigurationPending):
            group.export_shard(1, shard)
        assert group.shard_state()["config_num"] == 2


def test_raftkv_ctl_moves_a_shard_and_shows_where_it_went(cluster) -> None:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(cluster.path),
                               "--json", *args], capture_output=True, text=True, timeout=120)
    with cluster.client() as client:
        target = 2 if Migrator(client).current().owners[5] == 1 else 1
    moved = ctl("move", "5", str(target))
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["owners"][5] == target
    table = json.loads(ctl("shards").stdout)
    assert table[5]["group"] == target
    latest = json.loads(ctl("config").stdout)
    assert latest["num"] == json.loads(moved.stdout)["num"] and latest["owners"][5] == target
    first = json.loads(ctl("config", "1").stdout)
    assert first["num"] == 1 and first["owners"][5] != target  # old ones stay queryable
    missing = ctl("config", "99")
    assert missing.returncode == 1 and "no configuration 99" in missing.stderr
    refused = ctl("move", "5", "9")
    assert refused.returncode == 1 and "no such group" in refused.stderr
    human = subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(cluster.path),
                            "move", "5", str(3 - target)], capture_output=True, text=True,
                           timeout=120)
    assert human.returncode == 0 and "moving shards" in human.stderr  # the progress bar

"""Cells that expire, on a real group: gone on every replica, through restarts, and on
an idle group too (the leader's time entries move the clock)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import raftkv

from .._procs import SECRET, wait_for
from ..cluster import KVCluster, running

pytestmark = pytest.mark.cluster

INTERVAL = 0.5  # [store] expiry_interval here; 10 s by default


@pytest.fixture
def cluster(tmp_path) -> Iterator[KVCluster]:
    with running(KVCluster(tmp_path / "kv", extra=f"[store]\nexpiry_interval = {INTERVAL}\n"
                           )) as cluster:
        yield cluster


def _replicas(cluster: KVCluster) -> list[raftkv.Client]:
    """One client per replica: a stale read through it shows that replica's own state."""
    return [raftkv.Client([r.client], SECRET, timeout=5.0)
            for r in cluster.cluster.group(1).replicas]


def _gone_everywhere(replicas: list[raftkv.Client], row: str, col: str) -> bool:
    return all(r.get(row, col, consistency="stale") is None for r in replicas)


def _cells(client: raftkv.Client) -> list[int]:
    return [s.get("cells", -1) for s in client.status()]


def test_expired_cells_are_gone_on_every_replica_and_stay_gone_after_a_restart(cluster) -> None:
    group = cluster.cluster.group(1)
    replicas = _replicas(cluster)
    with raftkv.Client(group.client_addrs, SECRET) as client:
        client.put("keep", "c", b"permanent")
        client.put("keep", "was-expiring", b"v", ttl=1.0)
        client.put("keep", "was-expiring", b"now permanent")  # a write without ttl
        client.mutate_row("session", [], [("put", "a", b"1"), ("put", "b", b"2")], ttl=1.0)
        client.cput("counter", "n", b"1", old=None, ttl=1.0)
        assert set(client.get_row("session")) == {"a", "b"}
        # Hidden, then removed (not only hidden) on each replica by the leader's entries.
        wait_for(lambda: _cells(client) == [2, 2, 2], 15, "expired cells removed everywhere")
        for replica in replicas:
            assert replica.get_row("session", consistency="stale") == {}
            assert replica.get("counter", "n", consistency="stale") is None
            assert replica.get("keep", "was-expiring", consistency="stale").value == \
                b"now permanent"
        # Written just before the whole group stops: its expiry must survive the restart.
        client.put("late", "c", b"v", ttl=3.0)
    for replica in group.replicas:
        cluster.kill(replica.name)
    cluster.start()
    cluster.leader(1)
    with raftkv.Client(group.client_addrs, SECRET) as client:
        assert client.get("counter", "n") is None and client.get_row("session") == {}
        wait_for(lambda: _gone_everywhere(replicas, "late", "c"), 20, "late cell to expire")
        wait_for(lambda: _cells(client) == [2, 2, 2], 15, "the late cell removed everywhere")
        assert client.get("keep", "c").value == b"permanent"
    for replica in replicas:
        replica.close()


def test_an_idle_groups_expiry_advances_without_writes(cluster) -> None:
    group = cluster.cluster.group(1)
    replicas = _replicas(cluster)
    with raftkv.Client(group.client_addrs, SECRET) as client:
        client.put("idle", "c", b"v", ttl=1.0)
    start = time.monotonic()
    # Every replica holds it before its ttl runs out: a follower applies it once the
    # leader's commit notice arrives, a moment after the client's answer.  (A very slow
    # machine may already be past the ttl.)
    while not all(r.get("idle", "c", consistency="stale") is not None for r in replicas):
        assert time.monotonic() - start <= 1.0, "a replica never held the cell within its ttl"
        time.sleep(0.005)
    # No client writes or reads through the log from here: only the leader's time entries.
    wait_for(lambda: _gone_everywhere(replicas, "idle", "c"), 1.0 + INTERVAL + 8,
             "an idle group to expire the cell on every replica")
    for replica in replicas:
        replica.close()

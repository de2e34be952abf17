"""Steady leadership: a replica that rejoins its group leaves the term and the leader alone.

docs/engine-fixes.md, "A rejoining replica deposes the leader": without PreVote
a replica that was cut off, or restarted behind, bumps its term and deposes a
healthy leader when it comes back.  Each test polls every replica's term and
role throughout (:class:`TermWatch`) and checks what it saw.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..cluster import KVCluster, running
from ..terms import TermWatch, caught_up, settled, statuses

pytestmark = pytest.mark.cluster


def test_a_follower_cut_off_for_10_s_rejoins_without_a_term_change(lab_cluster) -> None:
    cluster = lab_cluster
    lab = cluster.lab
    assert lab is not None
    leader, term = settled(cluster)
    follower = next(n for n in cluster.procs if n != leader)
    with cluster.client() as client:
        client.put("steady", "c", b"before")
    with TermWatch(cluster) as watch:
        # No writes while it is away: its log stays as good as the others', so only
        # "they still hear their leader" keeps it from standing.
        lab.isolate(cluster.host_of[follower])
        time.sleep(10.0)
        lab.heal()
        with cluster.client() as client:
            client.put("steady", "c", b"after")
        caught_up(cluster, follower, leader)
        time.sleep(2.0)
    watch.assert_steady(term, leader)
    with cluster.client() as client:
        assert client.get("steady", "c", consistency="stale").value == b"after"


@pytest.fixture
def compacting_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A snapshot every 20 entries: a follower that misses a few MB needs one."""
    with running(KVCluster(tmp_path / "kv", extra="\n[raft]\nsnapshot_entries = 20\n")) as cluster:
        yield cluster


def test_a_follower_restarted_behind_a_snapshot_rejoins_without_a_term_change(
        compacting_cluster) -> None:
    cluster = compacting_cluster
    leader, term = settled(cluster)
    follower, other = (n for n in cluster.procs if n != leader)
    value = b"v" * (8 * 1024)   # inline cells (below the blob threshold): in the log
    with TermWatch(cluster) as watch:
        cluster.kill(follower)
        with cluster.client() as client, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: client.put(f"{{s}}{i}", "c", value), range(512)))  # 4 MiB
        # A snapshot may still be being written (paced) as the last puts land.
        deadline = time.monotonic() + 10
        while (before := statuses(cluster)[leader])["log_entries"] >= 100 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert before["log_entries"] < 100, "the leader's journal was not trimmed"
        started = time.monotonic()
        cluster.start(follower)
        caught_up(cluster, follower, leader)
        took = time.monotonic() - started
        time.sleep(2.0)   # a few election timeouts after it rejoined
    watch.assert_steady(term, leader)
    after = statuses(cluster)
    assert after[follower]["snapshot_bytes"] > 0, "the follower caught up without a snapshot"
    # The measure of the leader's stalls during the catch-up, as the other follower saw them.
    print(f"caught up in {took:.1f} s; longest leader gap seen by {other}: "
          f"{after[other]['longest_leader_gap']} s, by {follower}: "
          f"{after[follower]['longest_leader_gap']} s")


def test_a_killed_leader_is_replaced_promptly_and_rejoins_quietly(fresh_cluster) -> None:
    cluster = fresh_cluster
    old, old_term = settled(cluster)
    cluster.kill(old)
    killed_at = time.monotonic()
    new = cluster.leader(timeout=10.0)
    elected_after = time.monotonic() - killed_at
    term = statuses(cluster)[new]["term"]  # the survivor voted in it: it is there too
    assert new != old and term > old_term
    # Elections take the death to be noticed and one or two timeouts (0.4-1.4 s).
    assert elected_after < 5.0, f"a new leader only after {elected_after:.1f} s"
    print(f"new leader after {elected_after:.2f} s (term {old_term} -> {term})")
    with TermWatch(cluster) as watch:
        cluster.start(old)   # behind by the new term's entries: it must follow, not stand
        with cluster.client() as client:
            client.put("quiet", "c", b"x")
        caught_up(cluster, old, new)
        time.sleep(2.0)      # a few election timeouts after it rejoined
    watch.assert_steady(term, new, restarted=old)

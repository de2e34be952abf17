"""One fault per run while recorded clients work; every history must check linearizable.

The fault model is etcd's robustness suite: kill -9 of the leader, a paused
leader, all replicas restarted at once, and the leader cut off from its peers
(network namespaces, docs/testing.md).  On failure the history is kept beside the
replicas' data directories in the test's tmp_path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.errors import UnavailableError
from raftkv.node import LEADER_FALLBACK

from .._procs import wait_for
from ..cluster import KVCluster
from ..faults import Workload

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _workload(cluster: KVCluster, seed: int) -> Workload:
    return Workload(lambda: cluster.client(timeout=4.0), clients=6, ops=300, seconds=14.0,
                    seed=seed)


def _run(cluster: KVCluster, keep: Path, fault, seed: int) -> None:
    """Traffic for 2 s, the fault, traffic until the clients' budget ends; then check."""
    workload = _workload(cluster, seed)
    workload.start()
    try:
        time.sleep(2.0)
        fault()
        time.sleep(3.0)  # and the recovery, under traffic
    finally:
        workload.stop()
    workload.check(keep)


def test_leader_killed_and_restarted(fresh_cluster, tmp_path) -> None:
    def fault() -> None:
        leader = fresh_cluster.leader()
        fresh_cluster.kill(leader)
        time.sleep(3.0)
        fresh_cluster.start(leader)
    _run(fresh_cluster, tmp_path, fault, seed=1)


def test_leader_paused(fresh_cluster, tmp_path) -> None:
    def fault() -> None:
        leader = fresh_cluster.leader()
        fresh_cluster.pause(leader)   # deposed while it sleeps; wakes up still "leader"
        time.sleep(4.0)
        fresh_cluster.resume(leader)
    _run(fresh_cluster, tmp_path, fault, seed=2)


def test_every_replica_restarted_at_once(fresh_cluster, tmp_path) -> None:
    def fault() -> None:
        for name in list(fresh_cluster.procs):
            fresh_cluster.kill(name)
        fresh_cluster.start()
    _run(fresh_cluster, tmp_path, fault, seed=3)


def test_leader_cut_off_from_its_peers(lab_cluster, tmp_path) -> None:
    lab = lab_cluster.lab
    assert lab is not None
    isolated: list[str] = []

    def fault() -> None:
        leader = lab_cluster.leader()
        isolated.append(leader)
        # Clients still reach the old leader; its peers do not.  It must not
        # answer anything it has not committed with the new majority.
        lab.isolate(lab_cluster.host_of[leader])
        time.sleep(5.0)
        new_leader = lab_cluster.leader()
        assert new_leader != leader
        lab.heal()
    _run(lab_cluster, tmp_path, fault, seed=4)
    with lab_cluster.client() as client:  # the healed replica rejoins the group
        def rejoined() -> bool:
            status = {s["name"]: s for s in client.status()}
            return status[isolated[0]].get("role") in ("follower", "leader")
        wait_for(rejoined, 20, f"{isolated[0]} to rejoin")


def _leader_about_to_be_cut_off(lab_cluster, row: str, value: bytes):
    """(lab, secret, the leader's client address, the others') after writing ``value``."""
    lab = lab_cluster.lab
    assert lab is not None
    replicas = {r.name: r for r in lab_cluster.cluster.groups[0].replicas}
    leader = lab_cluster.leader()
    with lab_cluster.client() as client:
        client.put(row, "c", value)
    others = [r.client for name, r in replicas.items() if name != leader]
    return lab, lab_cluster.cluster.secret, leader, replicas[leader].client, others


def test_a_cut_off_leader_serves_no_stale_read_and_steps_down(lab_cluster) -> None:
    lab, secret, leader, leader_addr, others = _leader_about_to_be_cut_off(
        lab_cluster, "deposed", b"old")

    lab.isolate(lab_cluster.host_of[leader])
    cut_at = time.monotonic()
    with Client(others, secret, timeout=10.0) as majority:
        majority.put("deposed", "c", b"new")   # committed by the new leader
    with Client([leader_addr], secret, timeout=0.5) as old_leader:
        stepped_down_after = None
        while time.monotonic() - cut_at < LEADER_FALLBACK + 5:
            try:
                cell = old_leader.get("deposed", "c")
            except UnavailableError:
                cell = None                # no answer, or "not the leader": both fine
            assert cell is None or cell.value == b"new", "a deposed leader served a stale read"
            role = old_leader.status()[0].get("role")
            if role != "leader":
                stepped_down_after = time.monotonic() - cut_at
                break
        assert stepped_down_after is not None, "the cut-off leader never stepped down"
        assert stepped_down_after < LEADER_FALLBACK + 2
    lab.heal()
    with lab_cluster.client() as client:
        assert client.get("deposed", "c").value == b"new"


def test_a_deposed_leader_serves_no_batched_read_below_the_majoritys_writes(lab_cluster) -> None:
    """ReadIndex's leadership round under load (raftkv/node/read_index.py).

    The leader is cut off while eight clients read from it, many reads waiting
    in each confirmation round, and the new majority acknowledges one write
    after another.  Until it steps down the old leader still thinks it leads
    and holds the old values: a read it answers without hearing from a
    majority after the read arrived is below a write acknowledged before the
    read began.  Every read it answers must be at least that write.
    """
    lab, secret, leader, leader_addr, others = _leader_about_to_be_cut_off(
        lab_cluster, "counter", b"0")
    acked = [0]               # the last value the majority acknowledged
    stepped_down: list[int] = []  # acked[0] when the old leader stopped leading
    stale: list[tuple[int, int]] = []
    served = [0]
    stop = threading.Event()
    deadline = time.monotonic() + LEADER_FALLBACK + 8

    def write() -> None:
        with Client(others, secret, timeout=10.0) as majority:
            for value in range(1, 10_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                majority.put("counter", "c", str(value).encode())
                acked[0] = value

    def read() -> None:
        with Client([leader_addr], secret, timeout=0.5) as old_leader:
            for _ in range(10_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                floor = acked[0]
                try:
                    cell = old_leader.get("counter", "c")
                except UnavailableError:
                    continue  # no answer, or "not the leader": both fine
                served[0] += 1
                assert cell is not None
                if int(cell.value) < floor:
                    stale.append((floor, int(cell.value)))

    def watch() -> None:
        with Client([leader_addr], secret, timeout=0.5) as old_leader:
            while time.monotonic() < deadline:
                if old_leader.status()[0].get("role") != "leader":
                    stepped_down.append(acked[0])
                    return
                time.sleep(0.05)

    lab.isolate(lab_cluster.host_of[leader])
    threads = [threading.Thread(target=f, daemon=True) for f in (write, watch, *[read] * 8)]
    for thread in threads:
        thread.start()
    threads[1].join(LEADER_FALLBACK + 10)
    stop.set()
    for thread in threads:
        thread.join(15)
    assert stepped_down, "the cut-off leader never stepped down"
    # The window this test looks into: writes acknowledged while the old leader led.
    assert stepped_down[0] >= 1, "no write was acknowledged before the old leader stepped down"
    assert stale == [], (f"the deposed leader served {len(stale)} stale reads of {served[0]} "
                         f"(floor, value): {stale[:5]}")
    lab.heal()
    with lab_cluster.client() as client:
        assert int(client.get("counter", "c").value) >= acked[0]

"""Backup and restore of a whole cluster, under load: `raftkv-ctl snapshot save` on a
cluster that two writers keep busy, `raftcloud restore` into a new cluster on other
ports, and the restored data checked against what the writers were told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import raftkv
from raftkv.backupfile import BackupReader
from raftkv.errors import RaftKVError
from shards.backup import save_backup

from ..cluster import KVCluster, row_per_shard, running

pytestmark = pytest.mark.cluster

WRITES = 4000          # per writer, at most
WRITE_SECONDS = 60.0   # and for at most this long


def tool(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Chain:
    """A writer that puts n into row ``first`` and, once that is acknowledged, into row
    ``second`` (of another group), for n = 1, 2, ...: any restored ``second`` = n needs
    ``first`` >= n, or the backup is not one moment of the cluster."""

    first: str
    second: str
    acked: list[tuple[float, int]] = field(default_factory=list)  # (when, n) of second's puts
    acked_first: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self, client, stop: threading.Event) -> None:
        deadline = time.monotonic() + WRITE_SECONDS
        for n in range(1, WRITES + 1):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                client.put(self.first, "n", str(n).encode())
                self.acked_first.append((time.monotonic(), n))
                client.put(self.second, "n", str(n).encode())
                self.acked.append((time.monotonic(), n))
            except RaftKVError as exc:
                self.errors.append(repr(exc))
                return


def last_before(acked: list[tuple[float, int]], moment: float) -> int:
    return max((n for when, n in acked if when < moment), default=0)


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVCluster]:
    """Two storage groups and a config group: the cluster to back up."""
    with running(KVCluster(tmp_path_factory.mktemp("old"), groups=2, config_group=True)) as cluster:
        yield cluster


def rows_of_two_groups(client) -> tuple[list[str], list[str]]:
    by_group: dict[int, list[str]] = {}
    for shard, row in row_per_shard(client).items():
        by_group.setdefault(client.group_of_shard(shard), []).append(row)
    first, second = sorted(by_group)
    return by_group[first], by_group[second]


def test_no_write_in_a_backup_lacks_one_acknowledged_before_it_was_sent(old, tmp_path, monkeypatch):
    """The cut is one moment of the cluster, not one per group: a write acknowledged
    in group 1 after group 1's state was opened, then a write in group 2 before group 2's
    was, would put the effect in the backup without its cause.  The freeze holds the
    first write back until every group is open (without it, this fails)."""
    with old.client() as client:
        rows1, rows2 = rows_of_two_groups(client)
        cause, effect = rows1[5], rows2[5]
        client.put(cause, "n", b"0")
        client.put(effect, "n", b"0")
        group1 = client.group_client(client.group_of_shard(client.shard_of(cause)))
        opened_first = threading.Event()
        original = raftkv.Client.backup_open

        failures: list[BaseException] = []

        def chain() -> None:
            # A client of its own, patient: the freeze holds this write back for a second.
            with old.client(timeout=30.0) as writer:
                try:
                    writer.put(cause, "n", b"1")
                    writer.put(effect, "n", b"1")
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    failures.append(exc)

        def backup_open(self: raftkv.Client, token: int) -> dict[str, Any]:
            if self is not group1:
                opened_first.wait(10)
                return original(self, token)
            answer = original(self, token)
            if not writers:
                writers.append(threading.Thread(target=chain))
                writers[0].start()
                writers[0].join(1.0)  # done at once unless the group is frozen
            opened_first.set()
            return answer

        writers: list[threading.Thread] = []
        monkeypatch.setattr(raftkv.Client, "backup_open", backup_open)
        save_backup(client, tmp_path / "b.backup", progress=print)  # shown if this fails
        monkeypatch.undo()
        writers[0].join(40)
        assert not failures, failures
        assert client.get(effect, "n").value == b"1"  # the chain went through after the thaw
    with open(tmp_path / "b.backup", "rb") as f:
        saved = {c.row: c.value for record in BackupReader(f) if isinstance(record, list)
                 for c in record if c.row in (cause, effect)}
    assert int(saved[effect]) <= int(saved[cause]), saved


def test_a_backup_taken_under_load_restores_into_a_new_cluster(old, tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 5)  # four chunks, beside Raft
    with old.client() as client:
        rows1, rows2 = rows_of_two_groups(client)
        chains = [Chain(rows1[0], rows2[0]), Chain(rows1[1], rows2[1]),
                  Chain(rows2[2], rows1[2])]
        client.put_stream("{files}/big", "data", blob)
        client.put("{files}/small", "data", b"before the save", ttl=3600)
        stop = threading.Event()
        threads = [threading.Thread(target=c.run, args=(client, stop)) for c in chains]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # the writers are under way
            began = time.monotonic()
            saved = tool("shards.cli", "--config", str(old.path), "--json", "-v",
                         "snapshot", "save", str(tmp_path / "cluster.backup"))
            time.sleep(0.5)  # and go on after it
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert saved.returncode == 0, saved.stderr
    summary = json.loads(saved.stdout)
    print(saved.stderr, summary)
    assert summary["groups"] == 3 and summary["chunks"] >= 4, summary
    for chain in chains:
        assert not chain.errors, chain.errors  # a freeze's refusals are retried unseen
        assert last_before(chain.acked, began) > 0, "the writers had not started"

    new = KVCluster(tmp_path / "new", groups=2, config_group=True)  # other ports, same ids
    restored = tool("deploy.launcher", "restore", str(tmp_path / "cluster.backup"),
                    "--config", str(new.path), "--data-dir", str(tmp_path / "new"))
    assert restored.returncode == 0, restored.stderr
    assert "restored 3 groups" in restored.stdout
    with running(new), new.client() as client:
        client.refresh()
        for chain in chains:
            first = int(client.get(chain.first, "n").value)
            second_cell = client.get(chain.second, "n")
            second = 0 if second_cell is None else int(second_cell.value)
            # Every write acknowledged before the save began is there...
            assert first >= last_before(chain.acked_first, began)
            assert second >= last_before(chain.acked, began)
            # ... and nothing that was not written, and no write without its cause.
            assert first <= max(n for _, n in chain.acked_first) + 1
            assert second <= first, (chain, first, second)
        _size, pieces = client.get_stream("{files}/big", "data")
        assert b"".join(pieces) == blob
        assert client.get("{files}/small", "data").value == b"before the save"
        # The restored cluster takes writes, at its own addresses.
        client.put("{files}/small", "data", b"after the restore")
        assert client.get("{files}/small", "data").value == b"after the restore"
        config = json.loads(tool("shards.cli", "--config", str(new.path), "--json",
                                 "config").stdout)
        addresses = {str(g.id): list(g.client_addrs) for g in new.cluster.groups}
        assert config["groups"] == addresses

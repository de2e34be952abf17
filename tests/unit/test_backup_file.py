"""A backup file is data: a whole one restores, a damaged or hostile one is refused with
a clear error and leaves nothing behind (raftkv/backupfile.py, shards/restore.py)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.launcher import main as raftcloud
from raftkv import snapshots
from raftkv.backupfile import (
    MAGIC,
    BackupCell,
    BackupDamaged,
    BackupWriter,
    GroupHeader,
    secret_check,
)
from raftkv.blobs import make_manifest
from raftkv.cluster import ClusterConfig, load_cluster
from raftkv.keys import shard_of
from raftkv.node.seed import SEED_INDEX
from raftkv.store import Store
from shards.restore import WORK_DIR, RestoreRefused, restore_backup

from .._procs import SECRET
from ..cluster import write_cluster_file

CHUNK = os.urandom(40_000)
CHUNK_NAME = hashlib.sha256(CHUNK).hexdigest()
MANIFEST = make_manifest(len(CHUNK), [hashlib.sha256(CHUNK).digest()])[0]


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterConfig:
    return load_cluster(write_cluster_file(tmp_path / "cfg", groups=1))


def cells(shards: int) -> list[BackupCell]:
    made = [BackupCell(shard_of(f"row{i:03}", shards), f"row{i:03}", "c", i + 1, False, None,
                       f"value {i}".encode()) for i in range(50)]
    made.append(BackupCell(shard_of("files", shards), "files", "big", 51, True, None, MANIFEST))
    made.append(BackupCell(shard_of("later", shards), "later", "ttl", 52, False, 2e9, b"expires"))
    return sorted(made, key=BackupCell.key)


def write_backup(path: Path, shards: int, *, chunk: bool = True,
                 body: list[BackupCell] | None = None, secret: bytes = SECRET) -> Path:
    writer = BackupWriter(path, shards, [1], 1.7e9, secret)
    writer.group(GroupHeader(1, 1234, 1.8e9, {s: 52 for s in range(shards)}, 1, None))
    writer.cells_page(cells(shards) if body is None else body)
    if chunk:
        writer.chunk(CHUNK_NAME, CHUNK)
    writer.finish()
    return path


def restore(path: Path, cluster: ClusterConfig, data: Path) -> None:
    with open(path, "rb") as stream:
        restore_backup(stream, cluster, data)


def test_a_whole_backup_restores_to_every_replica(tmp_path, cluster):
    backup = write_backup(tmp_path / "b", cluster.shards)
    restore(backup, cluster, tmp_path / "data")
    replicas = [r.name for r in cluster.groups[0].replicas]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(replicas)
    for name in replicas:
        replica = tmp_path / "data" / name
        assert (replica / "blobs" / CHUNK_NAME[:2] / CHUNK_NAME).read_bytes() == CHUNK
        store = Store(cluster.shards, path=tmp_path / f"check-{name}")
        bookkeeping = snapshots.load_snapshot(store, replica / "raft" / snapshots.SNAPSHOT_FILE)
        assert bookkeeping[0][1] == SEED_INDEX and store.applied_index == SEED_INDEX
        assert store.read({"op": "get", "row": "row007", "col": "c"})["value"] == b"value 7"
        assert store.read({"op": "get", "row": "files", "col": "big"})["blob"]
        assert store.clock == 1.8e9
        # The next write of a shard gets a version above every restored one.
        store.apply_entry([1.9e9, {"op": "put", "cid": 1, "seq": 1, "row": "row001",
                                   "col": "new", "value": b"x"}], SEED_INDEX + 1)
        assert store.read({"op": "get", "row": "row001", "col": "new"})["version"] > 52
        store.close()


def damaged_copies(good: bytes) -> dict[str, bytes]:
    header_end = len(MAGIC)
    return {
        "empty": b"",
        "not a backup": b"PK\x03\x04" + good[4:],
        "a byte flipped in a value": good.replace(b"value 17", b"value 18"),
        "cut short": good[:len(good) // 2],
        "cut before the end record": good[:good.rfind(b"\x92\xa3end") - 4],
        "bytes after the end": good + b"\x00",
        "a length of 4 GiB": good[:header_end] + struct.pack(">I", 0xFFFFFFFF) + good[header_end + 4:],
        "a record that is not msgpack": good[:header_end] + struct.pack(">I", 3) + b"\xc1\xc1\xc1",
    }


@pytest.mark.parametrize("damage", list(damaged_copies(b"x" * 100)))
def test_a_damaged_backup_is_refused_and_leaves_nothing(tmp_path, cluster, damage):
    good = write_backup(tmp_path / "b", cluster.shards).read_bytes()
    bad = tmp_path / "bad"
    bad.write_bytes(damaged_copies(good)[damage])
    with pytest.raises(BackupDamaged):
        restore(bad, cluster, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # no replica directory, no work left


def test_a_pickle_is_never_unpickled(tmp_path, cluster):
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit())
    for content in (payload, MAGIC + struct.pack(">I", len(payload)) + payload):
        (tmp_path / "b").write_bytes(content)
        with pytest.raises(BackupDamaged):
            restore(tmp_path / "b", cluster, tmp_path / "data")
    assert not marker.exists()


def hostile_backup(path: Path, shards: int, records: list[list[object]]) -> Path:
    """A file with a valid frame and digest around whatever ``records`` say."""
    digest = hashlib.sha256()
    out = io.BytesIO()

    def put(data: bytes) -> None:
        out.write(data)
        digest.update(data)
    put(MAGIC)
    header = {"format": 1, "shards": shards, "created": 1.7e9, "groups": [1],
              "secret_check": secret_check(SECRET)}
    header["header_sha256"] = hashlib.sha256(msgpack.packb(header, use_bin_type=True)).digest()
    for record in [["cluster", header],
                   *records]:
        packed = msgpack.packb(record, use_bin_type=True)
        put(struct.pack(">I", len(packed)) + packed)
    end = msgpack.packb(["end", {"groups": 1, "cells": 1, "chunks": 0,
                                 "sha256": digest.digest()}], use_bin_type=True)
    path.write_bytes(out.getvalue() + struct.pack(">I", len(end)) + end)
    return path


GROUP = ["group", {"gid": 1, "applied_index": 1, "clock": 1.0, "counters": {}, "config_num": 1,
                   "owned": None}]


# Row "r" is of shard 29 of the test cluster's 64 ("a" of 3, "b" of 57, "files" of 25).
@pytest.mark.parametrize("cell", [
    [28, "r", "c", 1, False, None, b"v"],                  # a row in another shard than its own
    [9999, "r", "c", 1, False, None, b"v"],                # a shard the cluster does not have
    [29, "r", "c", 0, False, None, b"v"],                   # version 0
    [29, "r", "c", 1 << 63, False, None, b"v"],             # a version above the store's fields
    [29, "r", "c", 1, False, float("inf"), b"v"],           # an expiry that is no time
    [29, "r", "c", 1, False, -1.0, b"v"],                  # nor is one before 1970
    [54, "r" * 600, "c", 1, False, None, b"v"],             # a key too long for the store
    [29, "r", "c", 1, True, None, b"not a manifest"],       # a blob cell without a manifest
    [29, "r", "c", 1, False, None, b"v" * 100_000],         # a value above any cell's
    [29, "r", "c", 1, False, None, "text, not bytes"],
    [29, "r", "c", 1, False, None],                          # a field missing
])
def test_a_hostile_cell_is_refused(tmp_path, cluster, cell):
    path = hostile_backup(tmp_path / "b", cluster.shards, [GROUP, ["cells", [cell]]])
    with pytest.raises(BackupDamaged):
        restore(path, cluster, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("records", [
    [["cells", [[29, "r", "c", 1, False, None, b"v"]]]],                      # cells before a group
    [GROUP, GROUP],                                                          # a group twice
    [["group", {**GROUP[1], "gid": 7}]],                                     # a group not listed
    [GROUP, ["chunk", [CHUNK_NAME, CHUNK + b"!"]]],                          # a chunk not its name
    [GROUP, ["cells", [[57, "b", "c", 1, False, None, b"v"],
                       [3, "a", "c", 1, False, None, b"v"]]]],              # out of order
    [GROUP, ["cells", [[25, "files", "big", 7, True, None, MANIFEST]]]],     # its chunk missing
    [GROUP, ["surprise", {}]],
])
def test_a_hostile_sequence_of_records_is_refused(tmp_path, cluster, records):
    path = hostile_backup(tmp_path / "b", cluster.shards, records)
    with pytest.raises(BackupDamaged):
        restore(path, cluster, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_a_backup_of_another_shape_of_cluster_is_refused(tmp_path, cluster):
    with pytest.raises(RestoreRefused, match="shards"):
        restore(write_backup(tmp_path / "b", cluster.shards + 1), cluster, tmp_path / "data")
    two_groups = load_cluster(write_cluster_file(tmp_path / "cfg2", groups=2))
    other_ids = write_cluster_file(tmp_path / "cfg3", groups=2)
    other_ids.write_text(other_ids.read_text().replace("id = 1", "id = 3"))
    with pytest.raises(RestoreRefused, match="groups"):
        restore(write_backup(tmp_path / "b", cluster.shards), load_cluster(other_ids),
                tmp_path / "data3")
    # A cluster with more groups than the backup takes it: the others start empty.
    restore(write_backup(tmp_path / "b", cluster.shards), two_groups, tmp_path / "data2")


def test_a_backup_of_a_cluster_with_another_secret_needs_new_secret(tmp_path, cluster):
    backup = write_backup(tmp_path / "b", cluster.shards, secret=b"another secret, 32 bytes long...")
    with pytest.raises(RestoreRefused, match="another secret"):
        restore(backup, cluster, tmp_path / "data")
    with open(backup, "rb") as stream:
        restore_backup(stream, cluster, tmp_path / "data", new_secret=True)


def test_a_restore_never_overwrites(tmp_path, cluster):
    backup = write_backup(tmp_path / "b", cluster.shards)
    restore(backup, cluster, tmp_path / "data")
    with pytest.raises(RestoreRefused, match="already exist"):
        restore(backup, cluster, tmp_path / "data")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_byte_changed_is_refused(tmp_path_factory, cluster, position, flip):
    tmp = tmp_path_factory.mktemp("flip")
    good = bytearray(write_backup(tmp / "b", cluster.shards).read_bytes())
    good[int(position * len(good))] ^= flip
    (tmp / "bad").write_bytes(bytes(good))
    with pytest.raises(BackupDamaged):
        restore(tmp / "bad", cluster, tmp / "data")
    assert not (tmp / "data" / WORK_DIR).exists()


def test_raftcloud_restore_says_in_one_line_why_it_refuses(tmp_path, cluster):
    bad = tmp_path / "bad"
    bad.write_bytes(b"definitely not a backup")
    config = tmp_path / "cfg" / "cluster.toml"
    result = CliRunner().invoke(raftcloud, ["restore", str(bad), "--config", str(config),
                                            "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {bad} cannot be restored: not a raftkv backup file (it does not begin as one); "
        "nothing was written"]
    good = write_backup(tmp_path / "b", cluster.shards)
    result = CliRunner().invoke(raftcloud, ["restore", str(good), "--config", str(config),
                                            "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "restored 1 groups, 52 cells and 1 chunks" in result.output

"""A snapshot is written paced and synced in steps, so the journal's fsyncs never wait
behind gigabytes of it (docs/state-on-disk.md, "Snapshots")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from raftkv import snapshots
from raftkv.store import Store


def _store_with(tmp_path: Path, megabytes: int) -> Store:
    store = Store(4, path=tmp_path / "state")
    value = os.urandom(100_000)
    for i in range(megabytes * 10):
        store.apply_entry([1.0, {"op": "put", "row": f"r{i}", "col": "c", "value": value,
                                 "cid": 1, "seq": i + 1, "ack": i}], i + 1)
    return store


def test_the_copy_is_synced_in_steps_paced_and_whole(tmp_path, monkeypatch) -> None:
    store = _store_with(tmp_path, 12)
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
    target = tmp_path / "raft.snapshot"
    began = time.monotonic()
    snapshots.write_snapshot(target, b"bookkeeping", store.copy_image, rate=10e6)
    took = time.monotonic() - began
    size = target.stat().st_size
    assert size > 12e6
    assert len(syncs) >= size // snapshots.SYNC_STEP - 1  # a sync every step, not one at the end
    assert took >= (size - 2 * snapshots.SYNC_STEP) / 10e6  # at most the rate
    # The file is a whole snapshot: another store installs it and holds every value.
    other = Store(4, path=tmp_path / "other")
    other.install(target, snapshots.read_header(target).offset)
    assert other.applied_index == store.applied_index == 120
    assert other.read({"op": "get", "row": "r119", "col": "c"})["found"]


def test_a_copy_that_fails_ends_both_threads_and_says_why(tmp_path) -> None:
    store = _store_with(tmp_path, 1)
    store.close()  # the environment is gone: LMDB's copy fails at once
    with pytest.raises(Exception):  # noqa: B017, PT011 - lmdb's own error
        snapshots.write_snapshot(tmp_path / "s", b"", store.copy_image)


def test_a_target_that_fails_stops_the_copy_without_hanging(tmp_path, monkeypatch) -> None:
    store = _store_with(tmp_path, 8)

    def full_disk(fd: int, data: object, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshots, "pwrite_all", full_disk)
    began = time.monotonic()
    with pytest.raises(OSError, match="No space"):
        snapshots.write_snapshot(tmp_path / "s", b"", store.copy_image)
    assert time.monotonic() - began < 5  # LMDB's thread saw the pipe close and ended


def test_a_snapshot_being_written_is_given_up_at_once(tmp_path) -> None:
    store = _store_with(tmp_path, 12)
    target = tmp_path / "raft.snapshot"
    slow = snapshots.BackgroundSnapshot(target, b"", store.copy_image, rate=1e6)  # 12 s
    time.sleep(0.2)
    began = time.monotonic()
    slow.cancel()
    assert time.monotonic() - began < 2
    assert slow.ok is False and not target.exists()
    assert not target.with_name(target.name + ".tmp").exists()

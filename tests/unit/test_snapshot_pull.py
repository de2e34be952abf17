"""A follower pulls the leader's snapshot beside Raft (raftkv/snapshot_pull.py): the
leader's offers, and the follower's pull against a real file, without processes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from raftkv import snapshot_pull, snapshots
from raftkv.errors import Refused, UnavailableError
from raftkv.snapshot_pull import Offers, Pull

IMAGE = os.urandom(3 << 20) + b"end"  # not a multiple of any read size


def a_snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "raft.snapshot"
    snapshots.write_snapshot(path, b"bookkeeping", lambda fd: os.write(fd, IMAGE))
    return path


def pull_from(offers: Offers, tmp_path: Path, token: bytes, size: int,
              done: list[bytes], read: int = 256 << 10) -> Pull:
    def read_range(source: str, token: bytes, offset: int, length: int) -> bytes:
        return offers.get(token).read(offset, length)
    return Pull(token, size, "leader:1", read, read_range,
                lambda source, token: done.append(token),
                tmp_path / "raft.snapshot.pulled", tmp_path / "data.mdb.pulled",
                snapshots.image_offset)


def test_a_pull_writes_the_file_and_its_image_and_says_done(tmp_path: Path) -> None:
    source = a_snapshot(tmp_path)
    offers = Offers()
    offer = offers.open(source, 1e12)
    done: list[bytes] = []
    pull = pull_from(offers, tmp_path, offer.token, offer.size, done)
    pull.join(10)
    assert pull.fetched and done == [offer.token]
    assert pull.snapshot.read_bytes() == source.read_bytes()
    assert pull.image.read_bytes() == IMAGE   # ready to be renamed over the store's file
    offers.finish(offer.token)
    offers.finish(offer.token)                # said again after a lost answer: still fine
    assert offer.done
    with pytest.raises(Refused):
        offers.get(offer.token)               # finished: no more reads


def test_a_pull_of_a_token_the_leader_does_not_know_ends_and_leaves_no_file(tmp_path: Path) -> None:
    source = a_snapshot(tmp_path)
    offers = Offers()
    offer = offers.open(source, 1e12)
    offers.close(offer)                       # the leader stopped leading, say
    done: list[bytes] = []
    pull = pull_from(offers, tmp_path, offer.token, offer.size, done)
    pull.join(10)
    assert not pull.running() and not pull.fetched and pull.failed_at is not None
    assert not done
    assert not pull.snapshot.exists() and not pull.image.exists()


def test_a_pull_whose_leader_goes_away_ends(tmp_path: Path) -> None:
    calls = 0

    def gone(source: str, token: bytes, offset: int, length: int) -> bytes:
        nonlocal calls
        calls += 1
        raise UnavailableError("connection lost")
    pull = Pull(b"t" * 16, 10 << 20, "leader:1", 1 << 20, gone, lambda s, t: None,
                tmp_path / "s", tmp_path / "i", snapshots.image_offset)
    pull.join(10)
    assert not pull.running() and pull.failed_at is not None
    assert calls <= snapshot_pull.IN_FLIGHT
    assert not (tmp_path / "s").exists() and not (tmp_path / "i").exists()


def test_an_abandoned_pull_removes_its_files_and_the_next_waits_for_it(tmp_path: Path) -> None:
    source = a_snapshot(tmp_path)
    offers = Offers()
    offer = offers.open(source, 1e12)
    release = threading.Event()

    def slow(source: str, token: bytes, offset: int, length: int) -> bytes:
        release.wait(10)
        return offers.get(token, done=True).read(offset, length)
    first = Pull(offer.token, offer.size, "leader:1", 256 << 10, slow, lambda s, t: None,
                 tmp_path / "raft.snapshot.pulled", tmp_path / "data.mdb.pulled",
                 snapshots.image_offset)
    done: list[bytes] = []
    second = Pull(offer.token, offer.size, "leader:1", 256 << 10,
                  lambda s, t, o, n: offers.get(t).read(o, n), lambda s, t: done.append(t),
                  first.snapshot, first.image, snapshots.image_offset, previous=first)
    time.sleep(0.2)
    assert second.running() and not done     # waits for the first, which holds the files
    release.set()
    second.join(10)
    first.join(10)
    assert not first.fetched and second.fetched and done == [offer.token]
    assert second.image.read_bytes() == IMAGE


def test_an_offer_closed_during_a_read_keeps_its_descriptor_until_the_read_ends(
        tmp_path: Path) -> None:
    source = a_snapshot(tmp_path)
    offers = Offers()
    offer = offers.open(source, 1e12)
    fd = offer._fd
    offer._readers += 1                       # a read in flight on a server thread
    offers.close(offer)
    os.fstat(fd)                              # still open: its number cannot be reused
    offer._readers -= 1
    offer.close()                             # a second close changes nothing
    with pytest.raises(Refused):
        offer.read(0, 10)
    assert len(offers) == 0


def test_reads_are_held_to_the_transfers_rate(tmp_path: Path) -> None:
    offer = Offers().open(a_snapshot(tmp_path), 8e6)
    assert offer.reserve(snapshot_pull.MAX_READ) == 0        # the first reads go at once
    assert offer.reserve(4_000_000) == pytest.approx(0.5, abs=0.05)
    assert offer.reserve(4_000_000) == pytest.approx(1.0, abs=0.05)
    assert snapshot_pull.read_size(8e6) == 2_000_000
    assert snapshot_pull.read_size(1e12) == snapshot_pull.MAX_READ


def test_a_pull_that_cannot_write_its_files_reports_the_disk(tmp_path: Path) -> None:
    source = a_snapshot(tmp_path)
    offers = Offers()
    offer = offers.open(source, 1e12)
    failures: list[str] = []
    pull = Pull(offer.token, offer.size, "leader:1", 256 << 10,
                lambda s, t, o, n: offers.get(t).read(o, n), lambda s, t: None,
                tmp_path / "missing" / "raft.snapshot.pulled", tmp_path / "data.mdb.pulled",
                snapshots.image_offset, disk_failed=failures.append)
    pull.join(10)
    assert not pull.fetched and len(failures) == 1 and "writing the snapshot" in failures[0]

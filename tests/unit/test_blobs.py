"""Blobs without processes: manifests, the chunk store, upload intents in the state
machine, the collector's sweep rule and the zero-copy frame encoding."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

import raftkv.blobs as blobs
from raftkv import protocol
from raftkv.blobs import (
    CHUNK_SIZE,
    BlobStore,
    CorruptChunk,
    data_chunks,
    make_manifest,
    manifest_of,
    parse_manifest,
    read_index,
)
from raftkv.cluster import BlobSettings
from raftkv.errors import ProtocolError
from raftkv.repair import BlobKeeper
from raftkv.store import Store
from raftkv.transfer import skip_bytes
from tests._memstore import intents_of


def digest(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


# -- manifests ---------------------------------------------------------------------

def test_a_small_manifest_lists_its_chunks() -> None:
    manifest, index = make_manifest(100, [digest(1), digest(2)])
    assert index == []
    parsed = parse_manifest(manifest)
    assert parsed.size == 100 and parsed.count == 2 and not parsed.index
    assert list(data_chunks(parsed, lambda name: pytest.fail("no index to load"))) == \
        [digest(1).hex(), digest(2).hex()]


def test_a_large_manifest_lists_index_chunks_that_list_the_chunks(monkeypatch) -> None:
    monkeypatch.setattr(blobs, "INDEX_FANOUT", 3)
    digests = [digest(i) for i in range(blobs.MAX_DIRECT_CHUNKS + 4)]
    manifest, index = make_manifest(12345, digests)
    assert len(index) == -(-len(digests) // 3) and all(len(c) <= 3 * 32 for c in index)
    parsed = parse_manifest(manifest)
    assert parsed.count == len(digests) and not parsed.chunks
    stored = {hashlib.sha256(c).hexdigest(): c for c in index}
    assert list(parsed.index) == list(stored)
    assert list(data_chunks(parsed, stored.__getitem__)) == [d.hex() for d in digests]
    assert len(manifest) < 1000


def test_the_chunks_from_a_given_one_load_only_the_index_chunks_they_need(monkeypatch) -> None:
    monkeypatch.setattr(blobs, "INDEX_FANOUT", 3)
    digests = [digest(i) for i in range(blobs.MAX_DIRECT_CHUNKS + 4)]
    manifest, index = make_manifest(12345, digests)
    parsed = parse_manifest(manifest)
    stored = {hashlib.sha256(c).hexdigest(): c for c in index}
    loaded: list[str] = []

    def load(name: str) -> bytes:
        loaded.append(name)
        return stored[name]
    for first in (0, 1, 3, 4, 40, len(digests) - 1, len(digests), len(digests) + 5):
        loaded.clear()
        assert list(data_chunks(parsed, load, first)) == [d.hex() for d in digests[first:]]
        assert loaded == list(parsed.index)[first // 3:], first
    small = parse_manifest(make_manifest(100, [digest(1), digest(2)])[0])
    assert list(data_chunks(small, lambda name: pytest.fail("no index"), 1)) == [digest(2).hex()]


@pytest.mark.parametrize("skip", [0, 1, 4, 5, 9, 12])
def test_skipping_bytes_trims_the_first_chunks_and_closes_the_source(skip: int) -> None:
    closed = []

    def source():
        try:
            yield from (b"abcd", b"", b"efghi", b"jk")
        finally:
            closed.append(True)
    assert b"".join(skip_bytes(source(), skip)) == b"abcdefghijk"[skip:]
    assert all(skip_bytes(source(), skip)), "no empty chunk is yielded"
    stream = skip_bytes(source(), skip)
    next(stream, None)
    stream.close()
    assert closed[-1]


def test_manifests_are_a_function_of_the_value(monkeypatch) -> None:
    monkeypatch.setattr(blobs, "MAX_DIRECT_CHUNKS", 2)
    value = os.urandom(3 * CHUNK_SIZE + 5)
    assert manifest_of(value) == manifest_of(bytes(value))
    changed = value[:-1] + bytes([value[-1] ^ 1])  # "?" would equal a random last byte 1 in 256
    assert manifest_of(value) != manifest_of(changed)
    assert parse_manifest(manifest_of(value)).index  # three chunks > 2: indexed


@pytest.mark.parametrize("junk", [b"", b"\x93\x01\x02\x03", b"\x81\xa1v\x03",
                                  b"\x83\xa1v\x01\xa4size\x01\xa6chunks\x91\xc4\x02ab"])
def test_garbage_is_not_a_manifest(junk: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_manifest(junk)


def test_an_index_chunk_is_whole_digests() -> None:
    assert read_index(digest(1) + digest(2)) == [digest(1).hex(), digest(2).hex()]
    with pytest.raises(ProtocolError):
        read_index(digest(1)[:31])


# -- the chunk store ---------------------------------------------------------------

@pytest.mark.parametrize("direct", [True, False])
def test_the_chunk_store_keeps_exact_bytes_of_any_size(tmp_path: Path, direct: bool) -> None:
    store = BlobStore(tmp_path / "b")
    store._direct = direct and store._direct
    for size in (1, 4095, 4096, 4097, 12345, CHUNK_SIZE):
        data = os.urandom(size)
        name = hashlib.sha256(data).hexdigest()
        assert store.put(name, data) and store.has(name)
        assert store.get(name) == data
        assert not store.put(name, data)  # already there
    assert store.stats()["blob_chunks"] == 6
    assert not any(f.temporary for f in store.files())


def test_the_chunk_store_refuses_bytes_that_do_not_match_their_name(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ProtocolError):
        store.put(hashlib.sha256(b"a").hexdigest(), b"b")
    with pytest.raises(ProtocolError):
        store.put("../../etc/passwd", b"a")


def test_a_corrupt_chunk_is_reported_and_dropped(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(5000)
    name = hashlib.sha256(data).hexdigest()
    store.put(name, data)
    (tmp_path / name[:2] / name).write_bytes(b"x" + data[1:])
    with pytest.raises(CorruptChunk):
        store.get(name)
    assert not store.has(name) and store.get(name) is None


def test_readers_racing_on_a_corrupt_copy_report_it_once_and_keep_its_repair(
        tmp_path: Path, monkeypatch) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(5000)
    name = hashlib.sha256(data).hexdigest()
    store.put(name, data)
    (tmp_path / name[:2] / name).write_bytes(b"x" + data[1:])
    real, both_read = blobs.chunk_name, threading.Barrier(2)

    def slow_hash(chunk: bytes) -> str:  # both readers hold the bad bytes before either checks
        if chunk[:1] == b"x":
            both_read.wait(timeout=30)
        return real(chunk)
    monkeypatch.setattr(blobs, "chunk_name", slow_hash)
    reported: list[bool] = []

    def reader() -> None:
        try:
            store.get(name)
        except CorruptChunk:
            reported.append(True)
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert reported == [True]  # one corruption, one report (and one repair to count)

    # A late reader of the bad copy must not delete the good one a repair put back.
    (tmp_path / name[:2] / name).write_bytes(b"x" + data[1:])
    read_bad, repaired = threading.Event(), threading.Event()

    def late_hash(chunk: bytes) -> str:
        if chunk[:1] == b"x" and threading.current_thread().name == "late":
            read_bad.set()
            repaired.wait(timeout=5)
        return real(chunk)
    monkeypatch.setattr(blobs, "chunk_name", late_hash)
    late = threading.Thread(target=reader, name="late")
    late.start()
    read_bad.wait(timeout=5)
    with pytest.raises(CorruptChunk):
        store.get(name)           # the first reader reports and deletes the bad copy
    store.put(name, data)         # a repair puts the good copy back
    repaired.set()
    late.join(10)
    assert store.get(name) == data


def test_storing_an_existing_chunk_refreshes_it_for_the_collector(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"y" * 100
    name = hashlib.sha256(data).hexdigest()
    store.put(name, data)
    path = tmp_path / name[:2] / name
    os.utime(path, (1000, 1000))
    assert store.delete_if_older(name, 999) == 0  # not older than the cutoff
    store.put(name, data)
    assert store.delete_if_older(name, time.time() - 60) == 0  # refreshed just now
    assert store.delete_if_older(name, time.time() + 60) == 100
    assert not store.has(name)


# -- upload intents in the state machine ---------------------------------------------

class Writer:
    def __init__(self, store: Store) -> None:
        self.store, self.seq = store, 0

    def __call__(self, **command: object) -> dict:
        self.seq += 1
        return self.store.apply({**command, "cid": 9, "seq": self.seq, "ack": self.seq - 1})


def test_an_intent_protects_chunks_until_the_write_that_uses_them() -> None:
    store = Store(shards=4)
    write = Writer(store)
    assert write(op="intent", upload=5, digests=[digest(1)], lease=10.0, now=100.0, new=True) == \
        {"expires": 110.0}
    assert write(op="intent", upload=5, digests=[digest(2)], lease=10.0, now=101.0) == \
        {"expires": 111.0}
    assert store.live_chunks() == ([], {digest(1), digest(2)})
    manifest = make_manifest(2 * CHUNK_SIZE, [digest(1), digest(2)])[0]
    assert "version" in write(op="put", row="r", col="c", value=manifest, blob=True, upload=5)
    # One step: the cell references the chunks, and the intent is gone.
    assert store.live_chunks() == ([manifest], set())
    assert store.stats()["upload_intents"] == 0 and store.stats()["blob_cells"] == 1


def test_a_write_whose_intent_expired_fails_and_a_lost_cput_retires_its_intent() -> None:
    store = Store(shards=4)
    write = Writer(store)
    write(op="intent", upload=1, digests=[digest(1)], lease=5.0, now=100.0, new=True)
    write(op="intent", upload=2, digests=[digest(2)], lease=50.0, now=100.0, new=True)
    assert write(op="expire_intents", now=106.0) == {"expired": 1}
    assert write(op="put", row="r", col="c", value=b"m", blob=True, upload=1)["error"] == \
        "UploadExpired"
    assert write(op="intent", upload=1, digests=[], lease=5.0, now=107.0)["error"] == \
        "UploadExpired"  # renewing a lapsed intent must not revive it without its chunks
    assert write(op="cput", row="r", col="c", value=b"m", blob=True, if_version=7,
                 upload=2)["error"] == "ConditionFailed"
    assert intents_of(store) == {}
    assert store.stats()["cells"] == 0


def test_the_intent_clock_never_runs_backwards() -> None:
    store = Store(shards=4)
    write = Writer(store)
    write(op="intent", upload=1, digests=[], lease=10.0, now=200.0, new=True)
    # A new leader with a clock behind the old one's does not stretch leases.
    assert write(op="intent", upload=2, digests=[], lease=10.0, now=150.0, new=True) == \
        {"expires": 210.0}
    assert write(op="expire_intents", now=205.0) == {"expired": 0}
    assert write(op="expire_intents", now=211.0) == {"expired": 2}


@pytest.mark.parametrize("command", [
    {"op": "intent", "upload": "x", "digests": [], "lease": 1, "now": 1, "new": True},
    {"op": "intent", "upload": 1, "digests": [b"short"], "lease": 1, "now": 1, "new": True},
    {"op": "intent", "upload": 1, "digests": [], "lease": "long", "now": 1, "new": True},
    {"op": "put", "row": "r", "col": "c", "value": b"v", "upload": [1]},
    {"op": "expire_intents", "now": "later"},
])
def test_malformed_intent_commands_are_refused(command: dict) -> None:
    store = Store(shards=4)
    assert Writer(store)(**command)["error"] == "ProtocolError"
    assert intents_of(store) == {}


def test_intents_and_blob_cells_survive_a_snapshot() -> None:
    store = Store(shards=4)
    write = Writer(store)
    write(op="intent", upload=3, digests=[digest(3)], lease=10.0, now=50.0, new=True)
    write(op="put", row="r", col="big", value=b"manifest", blob=True)
    write(op="put", row="r", col="small", value=b"v")
    copy = Store(shards=4)
    copy.restore(store.snapshot())
    assert intents_of(copy) == intents_of(store) and copy.clock == 50.0
    assert copy.live_chunks() == ([b"manifest"], {digest(3)})
    write(op="put", row="r", col="big", value=b"inline now")
    write(op="delete", row="r", col="small")
    assert store.live_chunks() == ([], {digest(3)})


def test_a_noop_is_a_barrier_counted_alike_on_every_replica() -> None:
    leader, follower = Store(shards=4), Store(shards=4)
    for store in (leader, follower):
        Writer(store)(op="put", row="r", col="c", value=b"v")
    follower.read({"op": "get", "row": "r", "col": "c"})  # a stale read counts nothing
    assert leader.apply({"op": "noop"}) == follower.apply({"op": "noop"}) == {"applied": 2}


# -- the collector's rule --------------------------------------------------------------

def _keeper(tmp_path: Path, grace: float) -> tuple[BlobKeeper, BlobStore]:
    store = BlobStore(tmp_path / "blobs")
    keeper = BlobKeeper(Store(shards=4), store, ["127.0.0.1:1"], "127.0.0.1:1", b"s" * 16,
                        BlobSettings(gc_grace=grace), lambda: False)
    return keeper, store


def _chunk(store: BlobStore, text: bytes, age: float) -> str:
    name = hashlib.sha256(text).hexdigest()
    store.put(name, text)
    when = time.time() - age
    os.utime(store.root / name[:2] / name, (when, when))
    return name


def test_the_sweep_deletes_only_old_unreferenced_chunks_after_the_grace(tmp_path: Path) -> None:
    keeper, store = _keeper(tmp_path, grace=0.2)
    live = _chunk(store, b"live", age=100)
    garbage = _chunk(store, b"garbage", age=100)
    fresh = _chunk(store, b"fresh", age=0)   # written after the round began: an upload's
    t0 = time.time() - 1
    keeper.sweep({live}, t0)
    assert store.has(garbage)                 # first seen unreferenced: a candidate
    time.sleep(0.25)
    keeper.sweep({live}, t0)
    assert not store.has(garbage) and store.has(live) and store.has(fresh)
    assert keeper.status()["gc_chunks_deleted"] == 1
    assert keeper.status()["gc_candidates"] == 1  # fresh: too young, still watched


def test_a_candidate_that_becomes_live_again_starts_over(tmp_path: Path) -> None:
    keeper, store = _keeper(tmp_path, grace=0.2)
    name = _chunk(store, b"again", age=100)
    keeper.sweep(set(), time.time())
    keeper.sweep({name}, time.time())         # an intent names it now
    time.sleep(0.25)
    keeper.sweep(set(), time.time())          # unreferenced again: a new candidate
    assert store.has(name)


# -- frames with a large payload ---------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, CHUNK_SIZE])
def test_frames_with_a_spliced_payload_equal_plain_frames(size: int) -> None:
    data = os.urandom(size)
    for message in ({"op": "blob_put", "name": "n", "data": protocol.PAYLOAD, "id": 7},
                    {"id": 1, "ok": {"found": True, "data": protocol.PAYLOAD}}):
        parts = protocol.encode_parts(message, data)
        assert all(parts)  # no empty part: asyncio's writelines would spin on it
        plain = {k: ({**v, "data": data} if isinstance(v, dict) else
                     data if v is protocol.PAYLOAD else v) for k, v in message.items()}
        assert b"".join(parts) == protocol.encode(plain)

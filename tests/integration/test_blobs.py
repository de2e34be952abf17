"""Large values as blobs beside Raft (docs/store-promises.md, "Blobs"), on real replica processes.

Round trips of 10 MB and 200 MB random values, a kill -9 in the middle of an
upload, a wiped and a corrupted blob store repairing themselves under reads,
garbage collection of overwritten, deleted and abandoned uploads (but never of
one in progress), concurrent CPUT-by-version on one large cell, peak memory of
client and nodes while a 200 MB value moves, and the Raft snapshot with 1 GiB stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import raftkv.blobs
from raftkv import errors
from raftkv.blobs import CHUNK_SIZE, data_chunks, parse_manifest
from raftkv.client import INLINE_LIMIT
from raftkv.transfer import ReplicaPenalty

from .._procs import wait_for
from ..blobwork import Checker, RandomStream, peak_rss
from ..cluster import KVCluster, running

pytestmark = pytest.mark.cluster

MiB = 1024 * 1024
# Upkeep at test speed: repair passes every 0.3 s, GC rounds every 0.5 s, and a
# chunk is deleted after one second unreferenced.
FAST_UPKEEP = "\n[blobs]\nrepair_interval = 0.3\ngc_interval = 0.5\ngc_grace = 1.0\n"
# The 200 MB test asserts this bound on the growth of each process's peak RSS.
# Streaming keeps a client near WINDOW + INTENT_GROUP chunks (24 MiB) and a node
# near MAX_BLOB_OPS chunks plus socket buffers; anything that held the value
# whole, or even half of it, would exceed it.
MEMORY_BOUND = 100 * MiB


@pytest.fixture
def upkeep_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A 3-replica group of the test's own with fast repair and garbage collection."""
    with running(KVCluster(tmp_path / "kv", extra=FAST_UPKEEP)) as cluster:
        yield cluster


def statuses(cluster: KVCluster) -> dict[str, dict]:
    with cluster.client(timeout=5) as client:
        return {s["name"]: s for s in client.status()}


def chunk_files(cluster: KVCluster, name: str) -> dict[str, Path]:
    root = cluster.root / name / "blobs"
    return {p.name: p for p in root.glob("??/*") if not p.name.endswith(".tmp")}


def chunks_of(client, row: str, col: str) -> list[str]:
    """Every chunk a blob cell references: index chunks first, then data chunks in order."""
    group = client.group_for(row)
    result = group._read({"op": "get", "row": row, "col": col}, "linearizable")
    assert result["found"] and result["blob"]
    manifest = parse_manifest(result["value"])
    return list(manifest.index) + list(data_chunks(manifest, group.fetch_chunk))


def stream_names(size: int, seed: int) -> list[str]:
    stream = RandomStream(size, seed)
    return [hashlib.sha256(block).hexdigest() for block in iter(lambda: stream.read(CHUNK_SIZE), b"")]


def worker(cluster: KVCluster, *args: str) -> subprocess.Popen[bytes]:
    """``python -m tests.blobwork`` against the cluster, in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "tests.blobwork", "--config", str(cluster.path),
                             *args], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])


# -- round trips -------------------------------------------------------------------

def test_10mb_random_value_round_trips_byte_for_byte_every_way(kv_cluster) -> None:
    data = os.urandom(10 * MiB + 12345)
    with kv_cluster.client() as client:
        version = client.put("{blob}/ten", "v", data)
        assert client.get("{blob}/ten", "v") == (data, version)
        size, chunks = client.get_stream("{blob}/ten", "v")
        assert size == len(data) and b"".join(chunks) == data
        # From an offset: the chunks before the one holding it are never fetched.
        group, fetched = client.group_for("{blob}/ten"), []
        fetch = group.fetch_chunk
        group.fetch_chunk = lambda name, addrs=None: fetched.append(name) or fetch(name, addrs)
        try:
            for offset in (1, CHUNK_SIZE - 1, CHUNK_SIZE, 9 * CHUNK_SIZE + 7, len(data),
                           len(data) + 9):
                fetched.clear()
                size, chunks = client.get_stream("{blob}/ten", "v", offset=offset)
                assert size == len(data) and b"".join(chunks) == data[offset:], offset
                assert len(fetched) == len(range(min(offset, len(data)) // CHUNK_SIZE, 11))
        finally:
            del group.fetch_chunk
        out = io.BytesIO()
        assert client.get_into("{blob}/ten", "v", out) == version
        assert out.getvalue() == data
        streamed = client.put_stream("{blob}/ten", "s", io.BufferedReader(io.BytesIO(data), 7777))
        assert client.get("{blob}/ten", "s") == (data, streamed)
        # Sizes at every boundary: inline limit, one chunk, whole chunks.
        for n in (0, INLINE_LIMIT, INLINE_LIMIT + 1, CHUNK_SIZE, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1):
            value = os.urandom(n)
            v = client.put_stream("{blob}/edge", str(n), io.BytesIO(value))
            assert client.get("{blob}/edge", str(n)) == (value, v), n
        assert client.get_into("{blob}/ten", "absent", io.BytesIO()) is None


@pytest.mark.slow
def test_200mb_value_moves_with_bounded_memory_in_client_and_nodes(fresh_cluster) -> None:
    size = 200 * MiB + 99
    pids = {name: proc.popen.pid for name, proc in fresh_cluster.procs.items()}
    before = {name: peak_rss(pid) for name, pid in pids.items()}
    started = time.monotonic()
    proc = worker(fresh_cluster, "--row", "{big}/200", "--size", str(size), "--seed", "200")
    out, _ = proc.communicate(timeout=120)
    report = json.loads(out)
    grew = {name: peak_rss(pid) - before[name] for name, pid in pids.items()}
    client_grew = report["rss_end"] - report["rss_start"]
    print(f"200 MB: put {report['put_s'][0]:.1f}s, get {report['get_s'][0]:.1f}s, "
          f"total {time.monotonic() - started:.1f}s; peak RSS growth: client "
          f"{client_grew / MiB:.0f} MiB, " + ", ".join(f"{n} {g / MiB:.0f} MiB" for n, g in grew.items()))
    assert report["ok"], "the value read back differs from the one written"
    assert client_grew < MEMORY_BOUND
    assert all(g < MEMORY_BOUND for g in grew.values()), grew


@pytest.mark.slow
def test_a_gibibyte_value_round_trips_and_the_snapshot_stays_small(tmp_path: Path) -> None:
    with running(KVCluster(tmp_path / "kv", extra="\n[raft]\nsnapshot_entries = 20\n")) as cluster:
        size = 1024 * MiB + 1  # 1025 chunks: a manifest with an index chunk
        proc = worker(cluster, "--row", "{big}/gib", "--size", str(size), "--seed", "1024")
        out, _ = proc.communicate(timeout=240)
        report = json.loads(out)
        assert report["ok"], "the value read back differs from the one written"
        with cluster.client() as client:
            for i in range(30):  # enough log entries for a snapshot after the value's
                client.put("{big}/small", str(i), b"x")
            assert len(chunks_of(client, "{big}/gib", "data")) == 1025 + 1
        snapshots = wait_for(lambda: [s["snapshot_bytes"] for s in statuses(cluster).values()
                                      if s["snapshot_bytes"]], 20, "snapshots")
        print(f"1 GiB: put {report['put_s'][0]:.1f}s, get {report['get_s'][0]:.1f}s; "
              f"snapshots {snapshots} bytes")
        assert max(snapshots) < 1 * MiB


# -- failures during and after uploads ---------------------------------------------

class _SlowStream(RandomStream):
    """A RandomStream that takes its time, and tells how far the upload got."""

    def __init__(self, size: int, seed: int, delay: float, stall_at: int = -1,
                 stall: float = 0.0) -> None:
        super().__init__(size, seed)
        self.delay, self.stall_at, self.stall = delay, stall_at, stall
        self.position = 0

    def read(self, size: int | None = -1) -> bytes:
        if 0 <= self.stall_at <= self.position:
            self.stall_at = -1
            time.sleep(self.stall)
        time.sleep(self.delay)
        data = super().read(size)
        self.position += len(data)
        return data


def test_kill_9_of_the_leader_during_an_upload_is_all_or_nothing(upkeep_cluster) -> None:
    old, new_size = os.urandom(6 * MiB), 48 * MiB
    new_digest = hashlib.sha256(RandomStream(new_size, 7).read()).digest()
    seen: dict[str, int] = {"old": 0, "new": 0, "failed": 0}
    stop = threading.Event()
    with upkeep_cluster.client(timeout=20) as client:
        client.put("{k9}/cell", "v", old)

        def reader() -> None:
            with upkeep_cluster.client(timeout=20) as reading:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        value = reading.get("{k9}/cell", "v").value
                    except errors.UnavailableError:
                        seen["failed"] += 1
                        continue
                    digest = hashlib.sha256(value).digest()
                    assert value == old or digest == new_digest, "a half-written value was read"
                    seen["old" if value == old else "new"] += 1

        reading = threading.Thread(target=reader)
        reading.start()
        stream = _SlowStream(new_size, 7, delay=0.05)
        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                outcome["version"] = client.put_stream("{k9}/cell", "v", stream)
            except errors.RaftKVError as exc:
                outcome["error"] = exc

        uploading = threading.Thread(target=upload)
        uploading.start()
        wait_for(lambda: stream.position > new_size // 3, 30, "a third of the upload")
        victim = upkeep_cluster.leader()
        upkeep_cluster.kill(victim)
        uploading.join(60)
        stop.set()
        reading.join(60)
        final = client.get("{k9}/cell", "v").value
        if "version" in outcome:
            assert hashlib.sha256(final).digest() == new_digest
        elif isinstance(outcome["error"], errors.OutcomeUnknown):
            assert final == old or hashlib.sha256(final).digest() == new_digest
        else:
            assert final == old, f"failed upload ({outcome['error']!r}) became visible"
        print(f"upload outcome {outcome}; reads: {seen}")
        assert seen["old"] > 0
        # The victim comes back and fetches the chunks it missed from its peers.
        upkeep_cluster.start(victim)
        needed = set(chunks_of(client, "{k9}/cell", "v"))
        wait_for(lambda: needed <= set(chunk_files(upkeep_cluster, victim)), 30,
                 f"{victim} to repair the chunks it missed")
        wait_for(lambda: statuses(upkeep_cluster)[victim]["chunks_missing"] == 0, 10,
                 f"{victim} to report nothing missing")


def test_a_wiped_blob_store_repairs_itself_while_reads_keep_working(
        upkeep_cluster, monkeypatch) -> None:
    values = {"a": os.urandom(12 * MiB + 5)}
    with upkeep_cluster.client() as client:
        client.put("{wipe}/x", "a", values["a"])
        # A value whose manifest lists an index chunk (as any value above 64 MiB does).
        monkeypatch.setattr(raftkv.blobs, "MAX_DIRECT_CHUNKS", 4)
        values["b"] = os.urandom(9 * MiB)
        client.put("{wipe}/x", "b", values["b"])
        assert parse_manifest(client.group_for("{wipe}/x")._read(
            {"op": "get", "row": "{wipe}/x", "col": "b"}, "linearizable")["value"]).index
        needed = set(chunks_of(client, "{wipe}/x", "a")) | set(chunks_of(client, "{wipe}/x", "b"))
        victim = upkeep_cluster.leader()  # clients read its chunks first for a third of them
        wait_for(lambda: needed <= set(chunk_files(upkeep_cluster, victim)), 20, "all chunks")
        wiped = upkeep_cluster.root / victim / "wiped"
        (upkeep_cluster.root / victim / "blobs").rename(wiped)  # at once, as the node sees it
        shutil.rmtree(wiped)
        reads = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for col, value in values.items():
                assert client.get("{wipe}/x", col).value == value
                reads += 1
            status = statuses(upkeep_cluster)[victim]
            if needed <= set(chunk_files(upkeep_cluster, victim)) and status["chunks_missing"] == 0:
                break
        else:
            pytest.fail(f"{victim} did not repair: {statuses(upkeep_cluster)[victim]}")
        print(f"{victim} repaired {status['chunks_repaired']} chunks during {reads} reads")
        assert status["chunks_repaired"] >= len(needed)
        assert status["chunks_referenced"] == len(needed)


def test_a_corrupt_chunk_is_read_correctly_elsewhere_and_repaired(upkeep_cluster) -> None:
    data = os.urandom(5 * MiB)
    addrs = upkeep_cluster.cluster.groups[0].client_addrs
    name_of = {r.client: r.name for r in upkeep_cluster.cluster.groups[0].replicas}
    with upkeep_cluster.client() as client:
        client.put("{rot}/x", "v", data)
        names = chunks_of(client, "{rot}/x", "v")
        wait_for(lambda: all(set(names) <= set(chunk_files(upkeep_cluster, n))
                             for n in name_of.values()), 20, "every chunk everywhere")
        # A fresh client asks the replicas in this order: spoil the copies it reads first.
        first, second = (name_of[a] for a in ReplicaPenalty().order(addrs, names[0])[:2])
        for victim in (first, second):
            path = chunk_files(upkeep_cluster, victim)[names[0]]
            spoiled = bytearray(path.read_bytes())
            spoiled[1000] ^= 0xFF
            path.write_bytes(bytes(spoiled))
        torn = name_of[ReplicaPenalty().order(addrs, names[1])[0]]
        path = chunk_files(upkeep_cluster, torn)[names[1]]
        path.write_bytes(path.read_bytes()[:4096])
        # A copy no reader asks for (the last in every order): only the scrub finds it.
        unread = name_of[ReplicaPenalty().order(addrs, names[2])[-1]]
        path = chunk_files(upkeep_cluster, unread)[names[2]]
        rotten = bytearray(path.read_bytes())
        rotten[-1] ^= 0x01
        path.write_bytes(bytes(rotten))
    with upkeep_cluster.client() as client:
        assert client.get("{rot}/x", "v").value == data
    corrupt = {n: s["chunks_corrupt"] for n, s in statuses(upkeep_cluster).items()}
    assert corrupt[first] >= 1 and corrupt[second] >= 1 and corrupt[torn] >= 1, corrupt

    def healed() -> bool:
        for victim, name in ((first, names[0]), (second, names[0]), (torn, names[1]),
                             (unread, names[2])):
            path = chunk_files(upkeep_cluster, victim).get(name)
            if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != name:
                return False
        return True
    wait_for(healed, 30, "the spoiled copies to be repaired")
    # Each spoiled copy was found once: by a read, or (the unread one) by the scrub.
    spoiled = {n: [first, second, torn, unread].count(n) for n in name_of.values()}
    assert {n: s["chunks_corrupt"] for n, s in statuses(upkeep_cluster).items()} == spoiled


# -- garbage collection --------------------------------------------------------------

def test_gc_reclaims_overwritten_and_deleted_values(upkeep_cluster) -> None:
    names = list(upkeep_cluster.procs)
    with upkeep_cluster.client() as client:
        client.put("{gc}/x", "a", os.urandom(6 * MiB))
        client.put("{gc}/x", "b", os.urandom(6 * MiB))
        client.put("{gc}/x", "c", b"small")
        wait_for(lambda: all(len(chunk_files(upkeep_cluster, n)) == 12 for n in names), 20,
                 "both values on every replica")
        replacement = os.urandom(6 * MiB)
        client.put("{gc}/x", "a", replacement)
        client.delete("{gc}/x", "b")
        live = set(chunks_of(client, "{gc}/x", "a"))
        wait_for(lambda: all(set(chunk_files(upkeep_cluster, n)) == live for n in names), 30,
                 "garbage collection to leave exactly the live chunks")
        assert client.get("{gc}/x", "a").value == replacement
        assert client.get("{gc}/x", "c").value == b"small"
    for name, status in statuses(upkeep_cluster).items():
        assert status["gc_chunks_deleted"] >= 12, (name, status)
        assert status["gc_bytes_freed"] >= 12 * MiB
    blob_bytes = sum(p.stat().st_size for p in chunk_files(upkeep_cluster, names[0]).values())
    assert blob_bytes == 6 * MiB


def test_an_upload_in_progress_is_never_collected_but_an_abandoned_one_is(upkeep_cluster) -> None:
    names = list(upkeep_cluster.procs)
    # A slow upload: 10 MiB (the first eight chunks go out), then a stall of
    # 4 s (eight GC rounds, four grace periods, four leases), then 6 MiB more.
    slow = _SlowStream(16 * MiB, 11, delay=0.0, stall_at=10 * MiB, stall=4.0)
    with upkeep_cluster.client(timeout=20) as client:
        for group in client._groups.values():
            group.upload_lease = 1.0
        version = client.put_stream("{gc}/slow", "v", slow)
        sink = Checker(16 * MiB, 11)
        assert client.get_into("{gc}/slow", "v", sink) == version and sink.ok
        live = set(chunks_of(client, "{gc}/slow", "v"))
    # An uploader that stalls, holding its lease, then dies (kill -9).
    abandoned = set(stream_names(20 * MiB, 12)[:8])  # the first intent group's chunks
    proc = worker(upkeep_cluster, "--row", "{gc}/dead", "--size", str(20 * MiB), "--seed", "12",
                  "--op", "put", "--lease", "1.0", "--stall-after", str(9 * MiB))
    try:
        wait_for(lambda: all(abandoned <= set(chunk_files(upkeep_cluster, n)) for n in names), 30,
                 "the stalled upload's chunks on every replica")
        time.sleep(3.0)  # three leases, six GC rounds: renewed, so still there
        assert all(abandoned <= set(chunk_files(upkeep_cluster, n)) for n in names)
        assert all(s["upload_intents"] == 1 for s in statuses(upkeep_cluster).values())
    finally:
        proc.kill()  # SIGKILL: a crash, no goodbye to the group
        proc.communicate(timeout=10)
    wait_for(lambda: all(set(chunk_files(upkeep_cluster, n)) == live for n in names), 30,
             "the dead uploader's chunks to be collected")
    assert all(s["upload_intents"] == 0 for s in statuses(upkeep_cluster).values())


# -- conditional writes on large cells ---------------------------------------------

def test_concurrent_cput_by_version_on_one_large_cell(kv_cluster) -> None:
    row = "{race}/cell"
    with kv_cluster.client(timeout=30) as client:
        client.put(row, "v", os.urandom(3 * MiB))
        wins: list[tuple[int, int, bytes]] = []  # (version, thread, digest)
        losses = [0]
        lock = threading.Lock()

        def racer(t: int) -> None:
            mine = 0
            for _attempt in range(30):
                if mine == 2:
                    return
                cell = client.get(row, "v")
                value = os.urandom(2 * MiB + t)
                try:
                    version = client.cput(row, "v", value, if_version=cell.version)
                except errors.ConditionFailed as exc:
                    assert exc.version > cell.version
                    with lock:
                        losses[0] += 1
                    continue
                mine += 1
                with lock:
                    wins.append((version, t, hashlib.sha256(value).digest()))

        threads = [threading.Thread(target=racer, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        versions = [w[0] for w in wins]
        assert len(set(versions)) == len(versions) == 8, wins
        final = client.get(row, "v")
        last = max(wins)
        assert final.version == last[0] and hashlib.sha256(final.value).digest() == last[2]
        print(f"8 wins, {losses[0]} lost races")

        # By value: the large current value is the condition.
        with pytest.raises(errors.ConditionFailed):
            client.cput(row, "v", b"x", old=final.value[:-1] + b"?")
        by_value = client.cput(row, "v", os.urandom(CHUNK_SIZE + 1), old=final.value)
        # MUTATE_ROW: a condition on the large cell, two large puts and a delete, atomically.
        big1, big2 = os.urandom(3 * MiB), os.urandom(INLINE_LIMIT + 1)
        client.put(row, "gone", os.urandom(2 * MiB))
        with pytest.raises(errors.ConditionFailed):
            client.mutate_row(row, [("version", "v", by_value - 1)],
                              [("put", "m1", big1), ("delete", "gone")])
        versions = client.mutate_row(row, [("version", "v", by_value)],
                                     [("put", "m1", big1), ("put", "m2", big2),
                                      ("delete", "gone")])
        cells = client.get_row(row)
        assert cells["m1"] == (big1, versions["m1"]) and cells["m2"] == (big2, versions["m2"])
        assert "gone" not in cells
    # Every upload was retired by its write, won or lost.
    assert all(s["upload_intents"] == 0 for s in statuses(kv_cluster).values())

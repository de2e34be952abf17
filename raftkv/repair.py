"""One replica's upkeep of its blob store: repair missing chunks, collect garbage.

A :class:`BlobKeeper` runs in one thread of the node process, beside the event
loop, and talks to its group like any client (authenticated client ports).

**Referenced chunks** are those named by the manifests of the blob cells in the
replica's applied state: the data chunks of a small manifest, and for a large
one its index chunks and every chunk they list.

**Repair** (every ``repair_interval``, and soon after a read found a chunk
missing or corrupt): every referenced chunk that is not on disk is fetched from
a peer, verified against its name and stored.  A corrupt file is deleted when a
read notices it, so it is repaired like a missing one; and each pass also
re-reads a slice of the referenced chunks (``scrub_rate`` MB/s, in name order,
round and round), so a copy that rots unread is found too.

**Garbage collection** (every ``gc_interval``):

1. the leader expires upload intents whose lease ran out (a command carrying the
   leader's clock, so every replica agrees on what expired);
2. the replica notes the time ``t0`` and passes a barrier: a no-op through the
   log, then waits until its own state has applied it.  Its state now holds every
   cell and intent committed before ``t0``;
3. live = referenced chunks + the chunks named by live intents;
4. a file that is not live becomes a candidate; it is deleted once it has been a
   candidate for ``gc_grace`` seconds *and* it was last written or refreshed
   before ``t0``.

Why this never deletes a chunk it should keep: an uploader registers a chunk in
an intent through Raft *before* sending it.  If that intent was committed
before ``t0``, the barrier put it in this replica's state and the chunk is live.
If it was committed after ``t0``, the chunk reached this disk after ``t0`` (a
copy that was already here is refreshed by the upload's store), so it is too
young to delete.  An intent outlives the upload's cell write only by being
retired in the same command that writes the cell, and it expires only while
its uploader has stopped renewing it, in which case the final write fails with
``UploadExpired``.  The grace period gives readers of a value that has just been
overwritten or deleted time to finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .background import BackgroundLoop
from .blobs import CHUNK_SIZE, BlobStore, CorruptChunk, parse_manifest, read_index
from .client import Client
from .cluster import BlobSettings
from .errors import ProtocolError, RaftKVError
from .store import Store

log = logging.getLogger(__name__)

BARRIER_WAIT = 10.0       # seconds to wait for this replica to apply the GC barrier
WAKE_SPACING = 1.0        # at most one extra repair pass per second when reads ask for one
TEMP_FILE_AGE = 600.0     # a .tmp file this old belongs to a write that died


class BlobKeeper(BackgroundLoop):
    """Repairs and garbage-collects one replica's blob store, in a thread of its own."""

    def __init__(self, store: Store, blobs: BlobStore, group_addrs: Sequence[str], self_addr: str,
                 secret: bytes, settings: BlobSettings, is_leader: Callable[[], bool]) -> None:
        self._store = store
        self._blobs = blobs
        self._settings = settings
        self._is_leader = is_leader
        self._client = Client(group_addrs, secret, timeout=10.0)
        self._peers = tuple(a for a in group_addrs if a != self_addr)
        self._candidates: dict[str, float] = {}  # garbage chunk -> when first seen unreferenced
        self._scrubbed_up_to = ""                # the scrub's position in name order
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("chunks_referenced", "chunks_missing", "chunks_repairing", "chunks_repaired",
             "chunks_corrupt", "chunks_scrubbed", "repair_failures", "repair_passes", "gc_rounds",
             "gc_chunks_deleted", "gc_bytes_freed", "gc_candidates", "blob_chunks",
             "blob_bytes", "intents_expired"), 0)
        self._repair_asked = False               # a read asked for a repair pass (wake)
        self._last_pass = 0.0                    # monotonic time the last repair pass began
        self._scheduled = False                  # the first step sets the schedule
        self._next_repair = self._next_gc = 0.0  # monotonic times the next pass, round are due
        super().__init__("raftkv-keeper", settings.repair_interval)

    # -- control (start and stop: raftkv.background) ------------------------------

    def interrupt(self) -> None:
        self._client.close()  # a call in progress fails now instead of retrying

    def wake(self) -> None:
        """A read found a referenced chunk missing: repair soon."""
        with self._lock:
            self._repair_asked = True
        super().wake()

    def corrupt(self) -> None:
        """A read found a corrupt chunk (already deleted): count it and repair soon."""
        self._add(chunks_corrupt=1)
        self.wake()

    def status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _add(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._counts[key] += delta

    def _set(self, **values: int) -> None:
        with self._lock:
            self._counts.update(values)

    def step(self) -> float:
        """A repair pass when one is due or was asked for (at most one extra a second),
        a collection round when one is due; the delay until the next is due."""
        now = time.monotonic()
        if not self._scheduled:  # the first step, at start
            self._scheduled = True
            self._next_repair = now + min(self._settings.repair_interval, 1.0)
            self._next_gc = now + self._settings.gc_interval
        with self._lock:
            asked, self._repair_asked = self._repair_asked, False
        if asked and now - self._last_pass < WAKE_SPACING:
            self._next_repair = min(self._next_repair, self._last_pass + WAKE_SPACING)
            return self._until_due()
        try:
            if asked or now >= self._next_repair:
                self._last_pass = now
                self.repair_pass()
                self._next_repair = time.monotonic() + self._settings.repair_interval
            if now >= self._next_gc:
                self.gc_round()
                self._next_gc = time.monotonic() + self._settings.gc_interval
        except RaftKVError as exc:  # no leader, no majority: try again when next due
            log.info("blob upkeep pass stopped: %s", exc)
        return self._until_due()

    def _until_due(self) -> float:
        return min(self._next_repair, self._next_gc) - time.monotonic()

    # -- referenced chunks ----------------------------------------------------

    def _referenced(self) -> tuple[set[str], set[str], int]:
        """``(referenced chunks, chunks of live intents, index chunks unreadable anywhere)``."""
        manifests, protected = self._store.live_chunks()
        names: set[str] = set()
        unreadable = 0
        for manifest in set(manifests):
            try:
                parsed = parse_manifest(manifest)
            except ProtocolError as exc:
                log.warning("a blob cell holds no manifest: %s", exc)
                continue
            names.update(parsed.chunks)
            names.update(parsed.index)
            for name in parsed.index:
                data = self._index_chunk(name)
                if data is None:
                    unreadable += 1
                else:
                    names.update(read_index(data))
        return names, {d.hex() for d in protected}, unreadable

    def _index_chunk(self, name: str) -> bytes | None:
        try:
            data = self._blobs.get(name)
        except CorruptChunk:  # deleted now; fetched below
            self._add(chunks_corrupt=1)
            data = None
        if data is None:
            data = self._fetch(name)
        return data

    def _fetch(self, name: str) -> bytes | None:
        """Copy a chunk from a peer into the local store; None if no peer could serve it."""
        try:
            data = self._client.fetch_chunk(name, self._peers)
            self._blobs.put(name, data)
        except (RaftKVError, OSError) as exc:
            log.info("could not repair chunk %s: %s", name[:12], exc)
            self._add(repair_failures=1)
            return None
        self._add(chunks_repaired=1)
        return data

    # -- repair ---------------------------------------------------------------

    def repair_pass(self) -> None:
        """Fetch every referenced chunk this replica lacks."""
        referenced, _protected, unreadable = self._referenced()
        missing = [name for name in referenced if not self._blobs.has(name)]
        missing += self._scrub(referenced)
        self._set(chunks_referenced=len(referenced), chunks_missing=len(missing) + unreadable,
                  chunks_repairing=len(missing))
        if missing:
            log.info("repairing %d missing chunks from peers", len(missing))
            with ThreadPoolExecutor(self._settings.repair_parallel,
                                    thread_name_prefix="raftkv-repair") as pool:
                for repaired in pool.map(self._repair_one, missing):
                    self._add(chunks_repairing=-1, chunks_missing=-1 if repaired else 0)
        self._add(repair_passes=1)
        self._set(**self._blobs.stats())

    def _scrub(self, referenced: set[str]) -> list[str]:
        """Verify the next slice of referenced chunks; the ones found corrupt (now deleted)."""
        budget = self._settings.scrub_rate * 1e6 * self._settings.repair_interval
        order = sorted(referenced)
        start = next((i for i, name in enumerate(order) if name > self._scrubbed_up_to), 0)
        corrupt: list[str] = []
        done = 0.0
        for name in order[start:] + order[:start]:
            if done >= budget or self.stopping:
                break
            try:
                data = self._blobs.get(name)
            except CorruptChunk:
                log.warning("scrub: chunk %s was corrupt on disk: deleted, to be repaired",
                            name[:12])
                self._add(chunks_corrupt=1)
                corrupt.append(name)
                data = None
            done += len(data) if data else CHUNK_SIZE
            self._scrubbed_up_to = name
            self._add(chunks_scrubbed=1)
        return corrupt

    def _repair_one(self, name: str) -> bool:
        if self.stopping:
            return False
        return self._fetch(name) is not None

    # -- garbage collection ---------------------------------------------------

    def gc_round(self) -> None:
        """Expire lapsed intents (leader only), then sweep unreferenced chunks."""
        if self._is_leader():
            expired = self._client.expire_intents()
            self._add(intents_expired=expired)
        t0 = time.time()
        applied = self._client.noop()
        deadline = time.monotonic() + BARRIER_WAIT
        while self._store.applied < applied:
            if time.monotonic() > deadline or self.wait_stopping(0.02):
                log.info("skipping garbage collection: this replica lags behind the log")
                return
        referenced, protected, unreadable = self._referenced()
        if unreadable:
            log.warning("skipping garbage collection: %d index chunks are unreadable", unreadable)
            return
        self.sweep(referenced | protected, t0)

    def sweep(self, live: set[str], t0: float) -> None:
        """Delete files unreferenced for ``gc_grace`` and untouched since before ``t0``."""
        now = time.time()
        grace = self._settings.gc_grace
        candidates: dict[str, float] = {}
        deleted = freed = 0
        for f in self._blobs.files():
            if f.temporary:
                if f.mtime < t0 - max(grace, TEMP_FILE_AGE):
                    freed += self._blobs.delete_if_older(f.name, t0)
                continue
            if f.name in live:
                continue
            first_seen = self._candidates.get(f.name, now)
            if now - first_seen >= grace and f.mtime < t0:
                size = self._blobs.delete_if_older(f.name, t0)
                if size:
                    deleted += 1
                    freed += size
                    continue
            candidates[f.name] = first_seen
        self._candidates = candidates
        self._add(gc_rounds=1, gc_chunks_deleted=deleted, gc_bytes_freed=freed)
        self._set(gc_candidates=len(candidates), **self._blobs.stats())
        if deleted:
            log.info("garbage collection deleted %d chunks (%d bytes)", deleted, freed)

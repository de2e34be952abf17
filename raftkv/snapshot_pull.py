"""A lagging follower pulls the leader's snapshot over the client port, beside Raft.

Sent in pieces inside Raft's messages, a snapshot went at the pace of the
engine's send loop and was copied into the store on the follower's tick thread
(docs/state-on-disk.md, "Snapshots").  Like etcd and TiKV, the leader now only
*offers* it in a Raft message, and the follower fetches the file on a stream
of its own:

* the leader keeps the file open under a random token (an :class:`Offer`, held
  by the replica's :class:`Offers` and read by its server's ``snapshot_read``
  and ``snapshot_done`` operations, at most ``snapshot_send_rate`` bytes a
  second per transfer); an open descriptor stays valid when a newer snapshot
  replaces the file;
* the follower's :class:`Pull` thread reads it with a few requests in flight
  and writes it twice, whole to a snapshot file and the image alone to a file
  beside the store, fsyncs both, and says ``snapshot_done``; installing it is
  then two renames on the tick thread, no copy.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import ProtocolError, RaftKVError, Refused, TooLarge
from .files import create_private, pwrite_all

log = logging.getLogger(__name__)

MAX_READ = 4 << 20         # bytes one snapshot_read answers at most: within a client frame
MIN_READ = 64 << 10
READ_SECONDS = 0.25        # a read asks for about this long of the transfer's rate
IN_FLIGHT = 4              # reads a follower keeps in flight
READ_TIMEOUT = 10.0        # one read, or the done, without an answer: the pull failed
RETRY_AFTER = 1.0          # a failed pull of an offer still made is tried again after this
TOKEN_BYTES = 16


def read_size(rate: float) -> int:
    """The bytes a follower asks for at once: a quarter second at the rate, so no read
    waits long for its turn, within [:data:`MIN_READ`, :data:`MAX_READ`]."""
    return int(min(max(rate * READ_SECONDS, MIN_READ), MAX_READ))


# -- the leader's side -------------------------------------------------------------

class Offer:
    """One snapshot file kept open for one follower, read by the server's threads."""

    def __init__(self, path: Path, rate: float) -> None:
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size
        self.rate = rate
        self.done = False           # set by the server's thread, read by the tick thread
        self._lock = threading.Lock()
        self._readers = 0           # preads in flight: the descriptor closes after them
        self._closed = False
        self._reserved = 0          # bytes handed out or promised, for the rate
        self._started = time.monotonic()

    def reserve(self, length: int) -> float:
        """Seconds to wait before reading ``length`` more bytes at the transfer's rate;
        the first :data:`MAX_READ` bytes go at once."""
        with self._lock:
            self._reserved += length
            due = self._started + max(self._reserved - MAX_READ, 0) / self.rate
        return max(due - time.monotonic(), 0.0)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (blocking: call it from a worker thread)."""
        if offset < 0 or offset > self.size:
            raise Refused(f"offset {offset} is outside the snapshot's {self.size} bytes")
        with self._lock:
            if self._closed:
                raise Refused("the snapshot transfer was cancelled")
            self._readers += 1
        try:
            return os.pread(self._fd, min(length, self.size - offset), offset)
        finally:
            with self._lock:
                self._readers -= 1
                last = self._closed and self._readers == 0
            if last:
                os.close(self._fd)

    def close(self) -> None:
        """Forget the file; a read in flight finishes first (its descriptor number could
        otherwise be reused under it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = self._readers == 0
        if now:
            os.close(self._fd)


class Offers:
    """The transfers a leader offers, by token: made and cancelled on the tick thread,
    read by the server's."""

    def __init__(self) -> None:
        self._offers: dict[bytes, Offer] = {}   # replaced, never edited: read by other threads

    def open(self, path: Path, rate: float) -> Offer:
        offer = Offer(path, rate)
        self._offers = {**self._offers, offer.token: offer}
        return offer

    def get(self, token: object, *, done: bool = False) -> Offer:
        """The offer under ``token`` (``done``: also one the follower already finished)."""
        offer = self._offers.get(token) if isinstance(token, bytes) else None
        if offer is None or (offer.done and not done):
            raise Refused("no snapshot transfer under this token: it finished, was "
                          "cancelled, or this replica stopped leading")
        return offer

    def finish(self, token: object) -> None:
        """The follower holds the whole file, synced: the leader sends the last piece."""
        self.get(token, done=True).done = True

    def close(self, offer: Offer) -> None:
        self._offers = {t: o for t, o in self._offers.items() if t != offer.token}
        offer.close()

    def __len__(self) -> int:
        return len(self._offers)


class PullTransfer:
    """What the leader's serializer keeps for a follower that pulls: its answers to
    ``getTransmissionData`` are an offer until the follower is done, then the last piece."""

    def __init__(self, offers: Offers, path: Path, rate: float, source: str) -> None:
        self._offers = offers
        self.offer = offers.open(path, rate)
        self._info = {"pull": self.offer.token, "size": self.offer.size, "from": source,
                      "read": read_size(rate)}
        self.last_used = time.monotonic()

    def next_piece(self) -> tuple[bytes, bool, bool, int, dict[str, Any]]:
        self.last_used = time.monotonic()
        if self.offer.done:
            return b"", False, True, self.offer.size, {"pull": self.offer.token}
        return b"", True, False, 0, self._info

    def close(self) -> None:
        self._offers.close(self.offer)


# -- the follower's side -----------------------------------------------------------

class Pull:
    """One snapshot fetched from the leader's client port on a thread of its own.

    ``previous`` (a pull abandoned for this one) is waited for on the new thread,
    never on the tick thread, before the files it wrote are reused.
    """

    def __init__(self, token: bytes, size: int, source: str, read: int,
                 read_range: Callable[[str, bytes, int, int], bytes],
                 say_done: Callable[[str, bytes], None],
                 snapshot: Path, image: Path, header_end: Callable[[bytes], int],
                 previous: Pull | None = None,
                 disk_failed: Callable[[str], None] = lambda reason: None) -> None:
        self.token, self.size, self.source = token, size, source
        self.snapshot, self.image = snapshot, image  # where the file and its image go
        self._read_size = read
        self._read_range, self._say_done, self._header_end = read_range, say_done, header_end
        self._disk_failed = disk_failed  # this replica's own disk: it stops (raftkv.node)
        self._lock = threading.Lock()
        self.fetched = False        # both files whole and synced, the leader told
        self.failed_at: float | None = None
        self._abandoned = False
        self._previous = previous
        if previous is not None:
            previous.abandon()
        self._thread = threading.Thread(target=self._run, name="raftkv-snapshot-pull", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def abandon(self) -> None:
        """Stop (the thread removes its files at its next step); files of a pull already
        fetched are removed here."""
        with self._lock:
            self._abandoned = True
            finished = not self._thread.is_alive()
        if finished:
            self._remove_files()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _remove_files(self) -> None:
        for path in (self.snapshot, self.image):
            path.unlink(missing_ok=True)

    def _run(self) -> None:
        if self._previous is not None:
            self._previous.join()
            self._previous = None
        started = time.monotonic()
        try:
            self._fetch()
            with self._lock:
                if self._abandoned:
                    raise _Abandoned
                self.fetched = True  # before the leader hears: it then sends the last piece
            self._say_done(self.source, self.token)
            log.info("pulled the leader's snapshot from %s: %d bytes in %.1f s", self.source,
                     self.size, time.monotonic() - started)
        except _Abandoned:
            self._remove_files()
        except OSError as exc:  # the network's errors arrive as RaftKVError
            self._failed()
            self._disk_failed(f"writing the snapshot pulled from {self.source} failed ({exc!r})")
        except (RaftKVError, ValueError) as exc:
            log.warning("pulling the leader's snapshot from %s failed (%s); the next offer "
                        "tries again", self.source, exc)
            self._failed()

    def _failed(self) -> None:
        with self._lock:
            self.fetched = False
            self.failed_at = time.monotonic()
        self._remove_files()

    def _fetch(self) -> None:
        snapshot_fd = create_private(self.snapshot)
        try:
            image_fd = create_private(self.image)
            try:
                self._copy(snapshot_fd, image_fd)
                os.fsync(image_fd)
                os.fsync(snapshot_fd)
            finally:
                os.close(image_fd)
        finally:
            os.close(snapshot_fd)

    def _copy(self, snapshot_fd: int, image_fd: int) -> None:
        header_end: int | None = None
        with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="raftkv-pull-read") as pool:
            waiting: deque[tuple[int, int, Future[bytes]]] = deque()
            next_offset = 0
            try:
                while waiting or next_offset < self.size:
                    while next_offset < self.size and len(waiting) < IN_FLIGHT:
                        length = min(self._read_size, self.size - next_offset)
                        waiting.append((next_offset, length, pool.submit(
                            self._read_range, self.source, self.token, next_offset, length)))
                        next_offset += length
                    offset, length, future = waiting.popleft()
                    data = future.result()
                    if self._abandoned:
                        raise _Abandoned
                    if len(data) != length:
                        raise ProtocolError(f"{len(data)} bytes of the snapshot at {offset}, "
                                            f"not {length}")
                    if header_end is None:
                        header_end = self._header_end(data)  # the first read holds the header
                    pwrite_all(snapshot_fd, data, offset)
                    start = max(offset, header_end)
                    if start < offset + length:
                        pwrite_all(image_fd, memoryview(data)[start - offset:], start - header_end)
            finally:
                for _, _, future in waiting:
                    future.cancel()


class _Abandoned(Exception):
    """A newer offer, an in-band transfer or a stop took this pull's place."""


def check_offer(info: dict[str, Any]) -> tuple[bytes, int, str, int]:
    """(token, size, source, read size) of an offer from the leader; ValueError if it is not one."""
    token, size, source, read = info.get("pull"), info.get("size"), info.get("from"), \
        info.get("read", MAX_READ)
    if not (isinstance(token, bytes) and isinstance(size, int) and size > 0
            and isinstance(source, str) and isinstance(read, int) and 0 < read <= MAX_READ):
        raise ValueError(f"a malformed snapshot offer {info!r:.200}")
    return token, size, source, read


def check_read(offset: object, length: object) -> tuple[int, int]:
    """The offset and length of a snapshot_read request."""
    if not (isinstance(offset, int) and isinstance(length, int)) or offset < 0 or length <= 0:
        raise ProtocolError("snapshot_read takes a non-negative offset and a positive length")
    if length > MAX_READ:
        raise TooLarge(f"a snapshot_read returns at most {MAX_READ} bytes")
    return offset, length

"""A replica's snapshot file: the engine's bookkeeping and a copy of the store.

A snapshot is what lets the Raft journal be compacted and what a lagging
follower is sent (docs/state-on-disk.md, "Snapshots").  Its file is::

    MAGIC (8) | length (8) | the engine's bookkeeping (pickled by the engine) | the store's image

The image is an LMDB file copied from one read transaction
(:meth:`raftkv.store.Store.copy_image`) on a background thread, while the tick
thread goes on applying; the applied index inside it is at or past the entry
the bookkeeping names, and the store skips what it already holds.  The file
is written under a temporary name, fsynced and renamed, so the journal is only
ever compacted up to a snapshot that is on disk.

Files written before the store moved to disk (data format 1) have no magic:
``length | bookkeeping | msgpack of the whole state``; :func:`read_header`
tells them apart and the node loads them with :meth:`raftkv.store.Store.restore`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgpack

from .files import create_private, fsync_dir, pwrite_all
from .store import Store

log = logging.getLogger(__name__)

STATE_DIR = "state"               # the store (raftkv.statedb) in a replica's data directory
SNAPSHOT_FILE = "raft.snapshot"   # beside it, the journal's snapshot
MAGIC = b"RKVSNAP2"
LENGTH = struct.Struct(">Q")
MAX_BOOKKEEPING = 1 << 20  # two log entries and the node set: far less
MAX_WAIT = 0.01            # seconds a piece is held back at most (rate, a full connection)
MAX_PENDING = 1 << 20      # bytes a follower's connection may hold unsent before a piece waits
STALE_TRANSFER = 30.0      # seconds without a piece asked for: that follower is gone
WRITE_RATE = 64e6          # bytes a second a snapshot is written at, by default ([raft])
SYNC_STEP = 4 << 20        # a snapshot being written is synced every so many bytes
PIPE_READ = 1 << 20        # bytes read from LMDB's copy at once


@dataclass(frozen=True)
class Header:
    bookkeeping: bytes   # the engine's own part, as it gave it (pickled)
    offset: int          # where the rest begins: the store's image, or the whole state (legacy)
    legacy: bool         # format 1: the rest is msgpack of the whole state


def read_header(path: Path) -> Header:
    with open(path, "rb") as f:
        first = f.read(len(MAGIC))
        legacy = first != MAGIC
        if legacy:
            f.seek(0)
        raw = f.read(LENGTH.size)
        if len(raw) < LENGTH.size:
            raise ValueError("a snapshot file too short for its header")
        (size,) = LENGTH.unpack(raw)
        if size > MAX_BOOKKEEPING:
            raise ValueError("a snapshot file whose header is not one")
        bookkeeping = f.read(size)
        if len(bookkeeping) < size:
            raise ValueError("a snapshot file cut short")
        return Header(bookkeeping, f.tell(), legacy)


def image_offset(first: bytes) -> int:
    """Where the store's image begins in a snapshot file whose first bytes are ``first``;
    ValueError if they hold no whole header of this format."""
    if first[:len(MAGIC)] != MAGIC or len(first) < len(MAGIC) + LENGTH.size:
        raise ValueError("not the beginning of a snapshot of data format 2")
    size: int = LENGTH.unpack_from(first, len(MAGIC))[0]
    offset = len(MAGIC) + LENGTH.size + size
    if size > MAX_BOOKKEEPING or offset > len(first):
        raise ValueError("a snapshot header longer than its first piece")
    return offset


class Cancelled(Exception):
    """A snapshot being written was given up (the replica stops, or installs another)."""


def write_snapshot(path: Path, bookkeeping: bytes, copy_image: Callable[[int], None],
                   rate: float = WRITE_RATE, cancelled: threading.Event | None = None) -> None:
    """Write a snapshot to ``path`` (a temporary name: the caller renames it), fsynced;
    :class:`Cancelled` once ``cancelled`` is set."""
    fd = create_private(path)
    try:
        os.write(fd, MAGIC + LENGTH.pack(len(bookkeeping)) + bookkeeping)
        _copy_paced(copy_image, fd, rate, cancelled or threading.Event())
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_paced(copy_image: Callable[[int], None], fd: int, rate: float,
                cancelled: threading.Event) -> None:
    """The store's image into ``fd`` at most at ``rate`` bytes a second, synced every
    :data:`SYNC_STEP` and dropped from the page cache behind.

    Written at the disk's full speed, a copy of gigabytes filled the page cache
    with dirty pages and the disk's queue with their writes, and the journal's
    fsyncs (on the tick thread: a follower's acknowledgement, the leader's
    count) waited behind them for seconds.  Synced in small steps, the queue
    holds at most one step of the copy; paced, the copy leaves the disk room;
    dropped from the cache, it does not push out the store's pages, which
    serve reads (docs/state-on-disk.md, "Snapshots").  LMDB writes its copy into
    a pipe from a thread of its own (in C, without the GIL); this one moves it on.
    """
    read_end, write_end = os.pipe()
    try:  # fewer, larger reads; Linux allows 1 MiB to anyone
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_READ)
    except OSError:
        pass
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            copy_image(write_end)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            failure.append(exc)
        finally:
            os.close(write_end)

    producer = threading.Thread(target=produce, name="raftkv-snapshot-copy", daemon=True)
    producer.start()
    try:
        started = time.monotonic()
        offset = synced = os.lseek(fd, 0, os.SEEK_CUR)
        copied = 0
        while data := os.read(read_end, PIPE_READ):
            if cancelled.is_set():
                raise Cancelled
            pwrite_all(fd, data, offset)
            offset += len(data)
            copied += len(data)
            if offset - synced >= SYNC_STEP:
                os.fdatasync(fd)
                os.posix_fadvise(fd, synced, offset - synced, os.POSIX_FADV_DONTNEED)
                synced = offset
                early = copied / rate - (time.monotonic() - started)
                if early > 0 and cancelled.wait(early):
                    raise Cancelled
    finally:
        os.close(read_end)  # a producer still writing gets EPIPE and ends
        producer.join()
    if failure:
        raise failure[0]


def load_snapshot(store: Store, path: Path) -> tuple[Any, ...]:
    """Bring ``store`` up to the snapshot at ``path`` if it is behind it (or cannot be
    trusted); the engine's bookkeeping: (last applied entry, the one before, node set).

    A store at or past the snapshot's entry is kept as it is: the engine replays
    the journal from the snapshot, and the store skips what it holds already.
    """
    header = read_header(path)
    # The file is ours: written by this replica, or sent by an authenticated peer.
    data = tuple(pickle.loads(header.bookkeeping))
    index = data[0][1]
    if store.db.trusted and store.applied_index >= index:
        return data
    if header.legacy:  # data format 1: msgpack of the whole state
        with open(path, "rb") as f:
            f.seek(header.offset)
            store.restore(msgpack.unpackb(f.read(), raw=False, strict_map_key=False), index)
        store.db.mark_rebuilt()
    else:
        store.install(path, header.offset)
    log.info("the store was loaded from the snapshot of entry %d", index)
    return data


def convert_legacy_dir(data_dir: Path) -> None:
    """Data format 1 -> 2: the state in the snapshot's msgpack moves into the store on
    disk, in one transaction, the snapshot file left as it is (the engine reads its
    bookkeeping; the next snapshot replaces it).  Safe to run again: a store already
    at the snapshot's entry is kept."""
    snapshot = data_dir / SNAPSHOT_FILE
    if not snapshot.exists():
        return  # a journal alone: the engine replays every entry into the new store
    store = Store(path=data_dir / STATE_DIR)
    try:
        load_snapshot(store, snapshot)
    finally:
        store.close()


class BackgroundSnapshot:
    """One snapshot being written on a thread of its own; the tick thread polls it."""

    def __init__(self, target: Path, bookkeeping: bytes, copy_image: Callable[[int], None],
                 rate: float = WRITE_RATE) -> None:
        self.target = target
        self.ok: bool | None = None   # None while it runs
        self.seconds = 0.0
        self._rate = rate
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bookkeeping, copy_image),
                                        name="raftkv-snapshot", daemon=True)
        self._thread.start()

    def _run(self, bookkeeping: bytes, copy_image: Callable[[int], None]) -> None:
        started = time.monotonic()
        tmp = self.target.with_name(self.target.name + ".tmp")
        try:
            write_snapshot(tmp, bookkeeping, copy_image, self._rate, self._cancelled)
            os.replace(tmp, self.target)
            fsync_dir(self.target.parent)
            self.ok = True
        except Cancelled:
            log.info("the snapshot being written was given up")
            tmp.unlink(missing_ok=True)
            self.ok = False
        except Exception:  # noqa: BLE001 - any failure: the journal is simply not compacted
            log.exception("writing the snapshot %s failed; the journal keeps its entries", tmp)
            self.ok = False
        finally:
            self.seconds = time.monotonic() - started

    def done(self) -> bool:
        return self.ok is not None

    def wait(self) -> None:
        self._thread.join()

    def cancel(self) -> None:
        """Give the snapshot up and wait until its thread (and LMDB's) have ended: a paced
        copy of gigabytes takes tens of seconds, which a stopping replica, or one
        installing its leader's snapshot, must not wait for."""
        self._cancelled.set()
        self._thread.join()


class Channel(Protocol):
    """The connection a follower's pieces leave by (raftkv.node's Raft-port connection)."""

    def pending_bytes(self) -> int: ...

    def flush(self) -> None: ...


class Outgoing:
    """A snapshot file read in pieces for one follower, as fast as its connection takes
    them and at most ``rate`` bytes a second.

    The engine's send loop asks for piece after piece until its heartbeat
    period (0.1 s) is over, whatever it gets, and appends each to the
    connection's buffer; a buffer that grows is copied whole at each append
    (the engine's bytes +=), so a piece is handed out only once the buffer
    holds less than :data:`MAX_PENDING`, pushing it to the socket meanwhile.
    Waiting (for the socket or for the rate) is a short sleep, at most
    :data:`MAX_WAIT` with the GIL released, and only then None (a message
    without a piece). A piece is ``(data, first, last, offset)``: the follower
    checks the offset, so a piece lost with a broken connection is noticed.
    """

    def __init__(self, path: Path, piece: int, rate: float,
                 channel: Callable[[], Channel | None] = lambda: None) -> None:
        self.file: BinaryIO = open(path, "rb")
        self.piece, self.rate = piece, rate
        self._channel = channel
        self.sent = 0
        self._started = self.last_used = time.monotonic()

    def next_piece(self) -> tuple[bytes, bool, bool, int] | None:
        """The next piece, or None while the connection or the rate says wait."""
        self.last_used = now = time.monotonic()
        deadline = now + MAX_WAIT
        channel = self._channel()
        while channel is not None and channel.pending_bytes() > MAX_PENDING:
            channel.flush()
            if channel.pending_bytes() <= MAX_PENDING:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.0005)
        early = (self.sent - self.piece) / self.rate - (time.monotonic() - self._started)
        if early > 0:
            left = deadline - time.monotonic()
            time.sleep(max(min(early, left), 0.0))
            if early > left:
                return None
        offset = self.sent
        data = self.file.read(self.piece)
        self.sent += len(data)
        return data, offset == 0, not data, offset

    def close(self) -> None:
        self.file.close()


class Incoming:
    """A snapshot from the leader, written piece by piece beside the one in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = os.fdopen(create_private(path), "wb")
        self.received = 0

    def add(self, data: bytes, offset: int | None) -> bool:
        """Write a piece; False if it does not follow the last (one was lost on the way)."""
        if offset is not None and offset != self.received:
            return False
        self.file.write(data)
        self.received += len(data)
        return True

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abandon(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

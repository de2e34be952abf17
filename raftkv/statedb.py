"""The replica's table on its own disk: one LMDB environment (docs/state-on-disk.md).

This module knows LMDB and files; :mod:`raftkv.store` knows what the tables
mean.  The environment is opened without sync (a commit is a ``pwrite`` of its
pages; a killed process loses nothing committed, the kernel holds the pages),
and durability against a crash of the machine comes from the Raft journal and
the snapshot instead: the journal is compacted only up to a snapshot that is on
disk for certain, and a store that lived through an unclean reboot is not
trusted (:attr:`StateDB.trusted`): the replica goes back to its snapshot and
replays the journal (docs/state-on-disk.md, "Power loss").

Reads from other threads each use a read transaction of their own: a
consistent view of the last commit, never blocked by the writer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from .files import PRIVATE_FILE, create_private, fsync_dir, write_private_atomically

log = logging.getLogger(__name__)

# Address space reserved, not disk: the file grows as pages are used.  Far
# beyond any replica, so the map never has to grow while the store runs.
MAP_SIZE = 1 << 40
TEST_MAP_SIZE = 1 << 30  # stores in a temporary directory (tests): many may be open at once
TABLES = ("cells", "expiry", "blobs", "results", "sessions", "activity", "intents", "meta")
DATA_FILE = "data.mdb"
PULLED_FILE = DATA_FILE + ".pulled"  # an image pulled from the leader, installed by a rename
BOOT_FILE = "boot"       # the kernel's boot id at open, and whether the store was closed cleanly
CLEAN = "clean"
REBUILDING = "rebuilding"  # present from finding an untrusted store until it is rebuilt
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
COPY_PIECE = 1 << 20


class StateFailure(Exception):
    """The disk failed under the store (map or disk full, I/O error): the replica must
    stop rather than go on with a state its peers do not have."""


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


class StateDB:
    """One LMDB environment with the store's named tables."""

    def __init__(self, path: Path | None) -> None:
        """``path``: the directory of the environment, created if need be; None: a
        temporary one, removed when the store is closed or collected (tests)."""
        self._temporary = path is None
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="raftkv-state-"))
            weakref.finalize(self, shutil.rmtree, str(path), True)
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        # Readers in flight, and whether the environment is being swapped (install,
        # reset): closing it under a reader inside LMDB would crash the process.
        self._guard = threading.Condition()
        self._readers = 0
        self._swapping = False
        # Read transactions kept across calls (a backup's, raftkv/backup_offers.py): a
        # swap does not wait for them but ends them, through these callbacks.
        self._long_readers: set[Callable[[], None]] = set()
        self.trusted = self._check_boot()
        if not self.trusted:
            # Never opened: a torn file may not even open.  It stays untrusted (the
            # marker) until it is rebuilt from the snapshot or from nothing.
            self._write_marker_file(REBUILDING, b"")
            self._remove_files()
        self.env, self.tables = self._open()

    def _open(self) -> tuple[lmdb.Environment, dict[str, Any]]:
        env = lmdb.open(str(self.path), map_size=TEST_MAP_SIZE if self._temporary else MAP_SIZE,
                        max_dbs=len(TABLES), sync=False, metasync=False, writemap=False,
                        readahead=False, mode=PRIVATE_FILE, lib_version=0)
        with env.begin(write=True) as txn:
            tables = {name: env.open_db(name.encode(), txn=txn) for name in TABLES}
        return env, tables

    # -- whether the file can be believed ----------------------------------------

    def _check_boot(self) -> bool:
        """Whether the store on disk is its last commit: the same boot as when it was
        opened, or closed cleanly since.  Records this boot, unclean, for next time."""
        marker = self.path / BOOT_FILE
        exists = (self.path / DATA_FILE).exists()
        try:
            recorded = marker.read_text().split()
        except OSError:
            recorded = []
        trusted = not (self.path / REBUILDING).exists() and (
            not exists or recorded == [boot_id()] or recorded[-1:] == [CLEAN])
        self._write_marker(boot_id())
        return trusted

    def _write_marker(self, text: str) -> None:
        self._write_marker_file(BOOT_FILE, text.encode() + b"\n")

    def _write_marker_file(self, name: str, data: bytes) -> None:
        write_private_atomically(self.path / name, data)

    def _remove_files(self) -> None:
        for name in (DATA_FILE, "lock.mdb"):
            (self.path / name).unlink(missing_ok=True)
        fsync_dir(self.path)

    def mark_rebuilt(self) -> None:
        """The store was rebuilt whole (installed, reset, or loaded in one transaction)."""
        (self.path / REBUILDING).unlink(missing_ok=True)
        fsync_dir(self.path)
        self.trusted = True

    # -- transactions ---------------------------------------------------------------

    def begin_write(self) -> lmdb.Transaction[bytes]:
        return self.env.begin(write=True)

    @contextmanager
    def reading(self) -> Iterator[lmdb.Transaction[bytes]]:
        with self._guard:
            while self._swapping:
                self._guard.wait()
            self._readers += 1
        try:
            txn = self.env.begin(buffers=False)
            try:
                yield txn
            finally:
                txn.abort()
        finally:
            with self._guard:
                self._readers -= 1
                self._guard.notify_all()

    def long_read(self, revoke: Callable[[], None]) -> lmdb.Transaction[bytes]:
        """A read transaction the caller keeps across calls and aborts itself.

        A swap (a snapshot installed) would wait for it for as long as it lives,
        so instead the swap calls ``revoke``, which must abort it (waiting for a use
        in progress) and never use it again; :meth:`end_long_read` when done.
        """
        with self._guard:
            while self._swapping:
                self._guard.wait()
            self._long_readers.add(revoke)
            return self.env.begin(buffers=False)

    def end_long_read(self, revoke: Callable[[], None]) -> None:
        with self._guard:
            self._long_readers.discard(revoke)

    @contextmanager
    def _swap(self) -> Iterator[None]:
        """No reader inside the environment while it is closed and reopened."""
        with self._guard:
            self._swapping = True
            revokes, self._long_readers = list(self._long_readers), set()
        for revoke in revokes:
            revoke()
        with self._guard:
            while self._readers:
                self._guard.wait()
        try:
            yield
        finally:
            with self._guard:
                self._swapping = False
                self._guard.notify_all()

    # -- copies ---------------------------------------------------------------------

    def copy_to(self, fd: int) -> None:
        """Write a consistent image of the last commit to ``fd`` (from its offset on).

        LMDB copies from a read transaction of its own, in C with the GIL released;
        the writer goes on meanwhile.  The image may hold commits made after the
        caller asked: the store's applied index inside it says where it stands.
        """
        self.env.copyfd(fd)

    def install(self, image: Path, offset: int) -> None:
        """Replace the store with the image that starts at ``offset`` in ``image``.

        The copy is written beside the store, synced, and renamed over its file
        while the environment is closed; readers that were in the old one fail
        and read again (the server retries a read that raced a change).
        """
        incoming = self.path / (DATA_FILE + ".incoming")
        with open(image, "rb") as source, open(
                create_private(incoming),
                "wb", closefd=True) as target:
            source.seek(offset)
            shutil.copyfileobj(source, target, COPY_PIECE)
            target.flush()
            os.fsync(target.fileno())
        self.install_prepared(incoming)

    def install_prepared(self, image: Path) -> None:
        """Replace the store with ``image``, an LMDB file already written and synced in
        the store's directory (a snapshot pulled from the leader): a rename, no copy."""
        with self._swap():
            self.env.close()
            (self.path / "lock.mdb").unlink(missing_ok=True)
            os.replace(image, self.path / DATA_FILE)
            fsync_dir(self.path)
            self.env, self.tables = self._open()
        self.mark_rebuilt()

    def reset(self) -> None:
        """Start again from an empty store (one that cannot be trusted, with no snapshot)."""
        with self._swap():
            self.env.close()
            self._remove_files()
            self.env, self.tables = self._open()
        self.mark_rebuilt()

    def file_bytes(self) -> int:
        """The size of the store's file (pages in use and free ones)."""
        try:
            return (self.path / DATA_FILE).stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        """Sync and close; a clean close lets the next start trust the file after a reboot."""
        try:
            self.env.sync(True)
            self.env.close()
            if not self._temporary:
                self._write_marker(f"{boot_id()} {CLEAN}")
        except (lmdb.Error, OSError):
            log.exception("closing the state store of %s", self.path)

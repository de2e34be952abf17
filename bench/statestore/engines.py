"""LMDB and SQLite behind one small interface, each set up as a replica would use it.

Durability (docs/state-on-disk.md, "Settings"): the Raft journal is fsynced
before an entry commits, so the state store need not fsync each transaction,
only survive a process crash (kill -9) intact.  Both engines below write
every committed transaction into the kernel's page cache before the commit
returns, which a killed process cannot undo, and neither fsyncs it:

* LMDB ``sync=False`` (MDB_NOSYNC; ``metasync`` then has no effect),
  ``writemap=False``: pages are written with ``pwrite`` from private buffers.
* SQLite ``journal_mode=WAL``, ``synchronous=NORMAL``: commits append to the
  WAL, fsynced only when a checkpoint copies it back, which a thread of its
  own does (``wal_autocheckpoint=0``), so the writer never waits for one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import lmdb

TABLES = ("cells", "results", "meta")
Item = tuple[bytes, bytes]
LMDB_MAP_SIZE = 1 << 40          # address space only; the file grows as pages are used
CHECKPOINT_EVERY = 0.2           # seconds between the SQLite checkpointer's passes


class WriteTxn(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...
    def put(self, table: str, key: bytes, value: bytes) -> None: ...
    def delete(self, table: str, key: bytes) -> None: ...


class Reader(Protocol):
    """Reads of one thread; each call is its own read transaction."""

    def get(self, key: bytes) -> bytes | None: ...
    def cells(self, start: bytes, end: bytes) -> Generator[Item]:
        """Cells with ``start <= key < end`` in key order, from one read transaction
        that lasts until the iterator is exhausted or closed."""
        ...
    def close(self) -> None: ...


class Engine(Protocol):
    name: str
    path: Path

    def write(self) -> AbstractContextManager[WriteTxn]: ...
    def reader(self) -> Reader: ...
    def fsync_each_commit(self, on: bool) -> None:
        """Make every commit durable on power loss too (for comparison; the replica won't)."""
        ...
    def snapshots(self) -> dict[str, Callable[[Path], int]]:
        """Ways to copy the whole store from one read transaction into a path: bytes written.

        ``file copy``: LMDB's ``env.copy``, SQLite's backup API in one step;
        ``compacting copy``: ``env.copy(compact=True)``, ``VACUUM INTO``; ``walk in 1 MiB
        pieces``: a cursor over every table, as a snapshot sent in pieces would read it."""
        ...
    def close(self) -> None: ...


def disk_bytes(path: Path) -> int:
    """Bytes the store's files take on disk (allocated blocks, not apparent sizes)."""
    return sum(p.stat().st_blocks * 512 for p in path.iterdir() if p.is_file())


def write_pieces(records: Iterator[tuple[int, bytes, bytes]], out: Path, piece: int = 1 << 20) -> int:
    """A snapshot as a stream: ``table, key length, value length, key, value`` records
    written in pieces of about ``piece`` bytes, as they would be sent to a follower."""
    written, parts, size = 0, [], 0
    with open(out, "wb") as f:
        for table, key, value in records:
            parts += [bytes((table,)), len(key).to_bytes(4, "big"), len(value).to_bytes(4, "big"),
                      key, value]
            size += 9 + len(key) + len(value)
            if size >= piece:
                f.write(b"".join(parts))
                written, parts, size = written + size, [], 0
        f.write(b"".join(parts))
    return written + size


# -- LMDB --------------------------------------------------------------------------


class _LmdbWrite:
    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, lmdb._Database]) -> None:
        self.txn, self.dbs = txn, dbs

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.dbs[table])

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[table])

    def delete(self, table: str, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[table])


class _LmdbReader:
    def __init__(self, env: lmdb.Environment, cells: lmdb._Database) -> None:
        self.env, self.db = env, cells

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(db=self.db) as txn:
            return txn.get(key)

    def cells(self, start: bytes, end: bytes) -> Generator[Item]:
        with self.env.begin(db=self.db) as txn, txn.cursor() as cursor:
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if key >= end:
                    return
                yield key, value

    def close(self) -> None:
        pass


class LmdbEngine:
    name = "lmdb"

    def __init__(self, path: Path, cache_bytes: int, *, writemap: bool = False) -> None:
        # LMDB has no cache of its own: reads come from the mapped file, i.e. the kernel's
        # page cache, so cache_bytes has nothing to configure.
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, max_dbs=len(TABLES),
                             sync=False, metasync=False, writemap=writemap,
                             readahead=False, max_readers=64)
        self.dbs = {name: self.env.open_db(name.encode()) for name in TABLES}
        self._fsync = False

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        with self.env.begin(write=True) as txn:  # commits on leaving, aborts on an exception
            yield _LmdbWrite(txn, self.dbs)
        if self._fsync:
            self.env.sync(True)  # what sync=True does inside the commit

    def fsync_each_commit(self, on: bool) -> None:
        self._fsync = on

    def reader(self) -> Reader:
        return _LmdbReader(self.env, self.dbs["cells"])

    def snapshots(self) -> dict[str, Callable[[Path], int]]:
        return {"file copy": self._copy, "compacting copy": lambda d: self._copy(d, compact=True),
                "walk in 1 MiB pieces": self._walk}

    def _copy(self, dest: Path, compact: bool = False) -> int:
        dest.mkdir()
        self.env.copy(str(dest), compact=compact)  # one read transaction, in C
        return (dest / "data.mdb").stat().st_size

    def _walk(self, dest: Path) -> int:
        def records() -> Iterator[tuple[int, bytes, bytes]]:
            with self.env.begin() as txn:
                for number, name in enumerate(TABLES):
                    for key, value in txn.cursor(self.dbs[name]):
                        yield number, key, value
        return write_pieces(records(), dest)

    def close(self) -> None:
        self.env.close()


# -- SQLite ------------------------------------------------------------------------


def _sqlite(path: Path, cache_bytes: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path / "state.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread's job
    conn.execute(f"PRAGMA cache_size=-{max(1, cache_bytes // 1024)}")  # KiB, per connection
    return conn


class _SqliteWrite:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, table: str, key: bytes) -> bytes | None:
        row = self.conn.execute(f"SELECT v FROM {table} WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self.conn.execute(f"INSERT INTO {table} (k, v) VALUES (?, ?) "
                          "ON CONFLICT (k) DO UPDATE SET v = excluded.v", (key, value))

    def delete(self, table: str, key: bytes) -> None:
        self.conn.execute(f"DELETE FROM {table} WHERE k = ?", (key,))


class _SqliteReader:
    def __init__(self, path: Path, cache_bytes: int) -> None:
        self.conn = _sqlite(path, cache_bytes)

    def get(self, key: bytes) -> bytes | None:
        row = self.conn.execute("SELECT v FROM cells WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def cells(self, start: bytes, end: bytes) -> Generator[Item]:
        cursor = self.conn.execute("SELECT k, v FROM cells WHERE k >= ? AND k < ? ORDER BY k",
                                   (start, end))
        try:
            yield from cursor
        finally:
            cursor.close()  # ends the statement's read transaction

    def close(self) -> None:
        self.conn.close()


class SqliteEngine:
    name = "sqlite"

    def __init__(self, path: Path, cache_bytes: int) -> None:
        self.path, self.cache_bytes = path, cache_bytes
        path.mkdir(parents=True, exist_ok=True)
        self.conn = _sqlite(path, cache_bytes)
        for table in TABLES:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                              "(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint, name="sqlite-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        conn = _sqlite(self.path, 1 << 20)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                # PASSIVE: copies what no reader still needs, never blocks the writer.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SqliteWrite(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def fsync_each_commit(self, on: bool) -> None:
        self.conn.execute(f"PRAGMA synchronous={'FULL' if on else 'NORMAL'}")

    def reader(self) -> Reader:
        return _SqliteReader(self.path, self.cache_bytes)

    def snapshots(self) -> dict[str, Callable[[Path], int]]:
        return {"file copy": self._backup, "compacting copy": self._vacuum,
                "walk in 1 MiB pieces": self._walk}

    def _backup(self, dest: Path) -> int:
        source, target = _sqlite(self.path, 1 << 20), sqlite3.connect(dest)
        try:
            source.backup(target)  # pages=-1: one step, so one read transaction
        finally:
            target.close()
            source.close()
        return dest.stat().st_size

    def _vacuum(self, dest: Path) -> int:
        conn = _sqlite(self.path, 1 << 20)
        try:
            conn.execute("VACUUM INTO ?", (str(dest),))
        finally:
            conn.close()
        return dest.stat().st_size

    def _walk(self, dest: Path) -> int:
        conn = _sqlite(self.path, 1 << 20)

        def records() -> Iterator[tuple[int, bytes, bytes]]:
            conn.execute("BEGIN")  # one read transaction across the tables
            try:
                for number, name in enumerate(TABLES):
                    for key, value in conn.execute(f"SELECT k, v FROM {name} ORDER BY k"):
                        yield number, key, value
            finally:
                conn.execute("COMMIT")
        try:
            return write_pieces(records(), dest)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(10)
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


def open_engine(name: str, path: Path, cache_bytes: int) -> Engine:
    if name == "lmdb":
        return LmdbEngine(path, cache_bytes)
    if name == "sqlite":
        return SqliteEngine(path, cache_bytes)
    raise ValueError(f"no engine {name!r}")


def files(path: Path) -> dict[str, int]:
    """Each file of the store and its apparent size (a sparse file shows here, not on disk)."""
    return {p.name: os.stat(p).st_size for p in sorted(path.iterdir()) if p.is_file()}

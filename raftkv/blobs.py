"""Content-addressed chunk storage on one replica's disk, beside the Raft state.

A chunk is named by the SHA-256 of its bytes, so a chunk is immutable, any copy
of it is as good as any other, and a reader can verify what it got.  Writes go
to a temporary file that is fsynced and renamed into place, then the directory
is fsynced: once :meth:`BlobStore.put` returns, the chunk survives a crash.

Chunk files are written with ``O_DIRECT`` where the file system allows it: the
bytes go from an aligned buffer to the device without a page-cache copy, which
costs a fifth of the kernel CPU time of a buffered write and fsync (three
replicas on one machine write every chunk three times).

Storing a chunk that is already there only refreshes its modification time:
the garbage collector (:mod:`raftkv.repair`) never deletes a file younger than
the start of its round, and the refresh happens under the same lock as the
collector's check, so an upload that relies on an existing copy keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mmap
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import msgpack

from .errors import ProtocolError
from .files import fsync_dir

CHUNK_SIZE = 1024 * 1024
DIGEST_SIZE = 32
# A manifest lists up to this many chunks itself (~2.2 KB, so a MUTATE_ROW can
# carry several large values within the Raft entry cap); a larger value's
# manifest lists index chunks, each holding up to INDEX_FANOUT chunk digests
# (32 GiB of value per index chunk).
MAX_DIRECT_CHUNKS = 64
INDEX_FANOUT = CHUNK_SIZE // DIGEST_SIZE
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ALIGN = 4096  # O_DIRECT wants buffer address, offset and length aligned to the device block

log = logging.getLogger(__name__)


def chunk_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_name(name: object) -> str:
    """A chunk name from the wire: exactly 64 lowercase hex digits (never a path)."""
    if not isinstance(name, str) or not _HEX64.fullmatch(name):
        raise ProtocolError("a chunk name is 64 lowercase hex digits")
    return name


class ChunkFile(NamedTuple):
    """One file in a blob directory, as the collector sees it."""

    name: str       # chunk name, or the temporary file's name
    size: int
    mtime: float
    temporary: bool  # a ``.tmp`` left by a write that never finished


class BlobStore:
    """The chunks one replica holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Orders "store or refresh" against "check age and delete" (see the module doc).
        self._lock = threading.Lock()
        self._direct = hasattr(os, "O_DIRECT")
        self._buffers = threading.local()

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def has(self, name: str) -> bool:
        return self._path(check_name(name)).exists()

    def put(self, name: str, data: bytes) -> bool:
        """Store a chunk durably; its bytes must hash to its name.  True if it was new."""
        check_name(name)
        if chunk_name(data) != name:
            raise ProtocolError("chunk bytes do not match the chunk name")
        path = self._path(name)
        if self._refresh(path):
            return False
        tmp = path.with_name(f"{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._write_durably(tmp, data)
        except FileNotFoundError:  # a new sub-directory (or a wiped store)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_durably(tmp, data)
        with self._lock:
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True

    def _write_durably(self, path: Path, data: bytes) -> None:
        if self._direct:
            try:
                self._write_direct(path, data)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("%s does not take O_DIRECT writes: writing through the page cache",
                         self.root)
                self._direct = False
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _write_direct(self, path: Path, data: bytes) -> None:
        size = len(data)
        padded = -(-size // _ALIGN) * _ALIGN
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < padded:
            buffer = mmap.mmap(-1, max(padded, CHUNK_SIZE))  # page-aligned
            self._buffers.buffer = buffer
        buffer[:size] = data
        view = memoryview(buffer)[:padded]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT | os.O_CLOEXEC,
                     0o644)
        try:
            written = 0
            while written < padded:
                written += os.pwrite(fd, view[written:], written)
            if padded != size:
                os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        finally:
            view.release()
            os.close(fd)

    def _refresh(self, path: Path) -> bool:
        with self._lock:
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
            return True

    def get(self, name: str) -> bytes | None:
        """The chunk's bytes, or None when it is missing.

        :raises CorruptChunk: the file's bytes do not hash to its name; the file
            has been deleted, so the chunk now counts as missing.
        """
        path = self._path(check_name(name))
        for _ in range(2):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                return None
            with f:
                data = f.read()
                if chunk_name(data) == name:
                    return data
                # Several readers (client reads, peers' repairs, the scrub) can read
                # one bad copy at once.  Only the one that deletes it reports it, or
                # one corruption would be counted once per reader, and a late reader
                # would delete the good copy a repair had meanwhile put in its place.
                # The file stays open so that its inode cannot be reused meanwhile.
                if self._discard(path, os.fstat(f.fileno())):
                    raise CorruptChunk(name)
            # Another reader already deleted (and reported) this copy: look again.
        return None

    def _discard(self, path: Path, read: os.stat_result) -> bool:
        """Delete ``path`` if it is still the file that was read; True if it was."""
        with self._lock:
            try:
                now = path.stat()
                if (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
            return True

    def delete_if_older(self, name: str, cutoff: float) -> int:
        """Delete a file last written or refreshed before ``cutoff``; the bytes freed."""
        path = self.root / name[:2] / name  # a name from files(), chunk or temporary
        with self._lock:
            try:
                stat = path.stat()
                if stat.st_mtime >= cutoff:
                    return 0
                path.unlink()
            except FileNotFoundError:
                return 0
        return stat.st_size

    def files(self) -> Iterator[ChunkFile]:
        """Every file under the blob directory (a snapshot in time, not under the lock)."""
        try:
            subdirs = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for sub in subdirs:
            if not sub.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(sub.path))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                temporary = entry.name.endswith(".tmp")
                if temporary or _HEX64.fullmatch(entry.name):
                    yield ChunkFile(entry.name, stat.st_size, stat.st_mtime, temporary)

    def stats(self) -> dict[str, int]:
        count = size = 0
        for f in self.files():
            if not f.temporary:
                count += 1
                size += f.size
        return {"blob_chunks": count, "blob_bytes": size}


class CorruptChunk(Exception):
    """A chunk file's bytes do not match its name (bit rot, a torn copy, tampering)."""


# -- manifests ------------------------------------------------------------------
# A large value's cell holds a manifest instead of the bytes.  It is a pure
# function of the value, so comparing manifests compares values (CPUT by value):
#
#   v1  {"v": 1, "size": n, "chunks": [digest, ...]}        at most MAX_DIRECT_CHUNKS
#   v2  {"v": 2, "size": n, "count": k, "index": [digest, ...]}
#
# where each digest is the 32-byte SHA-256 of a CHUNK_SIZE piece of the value
# (the last may be shorter), and a v2 index chunk is the concatenation of up to
# INDEX_FANOUT consecutive digests, itself stored as a chunk.

@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest; ``chunks`` is empty when the digests live in ``index`` chunks."""

    size: int
    count: int                # how many data chunks
    chunks: tuple[str, ...]   # v1: the data chunks' names
    index: tuple[str, ...]    # v2: the index chunks' names


def make_manifest(size: int, digests: list[bytes]) -> tuple[bytes, list[bytes]]:
    """``(manifest, index chunks to store)`` for a value of ``size`` bytes."""
    if len(digests) <= MAX_DIRECT_CHUNKS:
        return msgpack.packb({"v": 1, "size": size, "chunks": digests}, use_bin_type=True), []
    index = [b"".join(digests[i:i + INDEX_FANOUT]) for i in range(0, len(digests), INDEX_FANOUT)]
    manifest = msgpack.packb({"v": 2, "size": size, "count": len(digests),
                              "index": [hashlib.sha256(c).digest() for c in index]},
                             use_bin_type=True)
    return manifest, index


def manifest_of(value: bytes) -> bytes:
    """The manifest a cell holding ``value`` as a blob would store."""
    digests = [hashlib.sha256(value[i:i + CHUNK_SIZE]).digest()
               for i in range(0, len(value), CHUNK_SIZE)]
    return make_manifest(len(value), digests)[0]


def parse_manifest(manifest: bytes) -> Manifest:
    """Read a manifest; ProtocolError if it is not one."""
    try:
        data = msgpack.unpackb(manifest, raw=False)
        size = int(data["size"])
        if data["v"] == 1:
            chunks = tuple(_hex(d) for d in data["chunks"])
            return Manifest(size, len(chunks), chunks, ())
        if data["v"] == 2:
            return Manifest(size, int(data["count"]), (), tuple(_hex(d) for d in data["index"]))
        raise ValueError(f"unknown manifest version {data['v']!r}")
    except Exception as exc:
        raise ProtocolError(f"malformed blob manifest: {exc!r}") from None


def _hex(digest: object) -> str:
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise ValueError("a digest is 32 bytes")
    return digest.hex()


def read_index(data: bytes) -> list[str]:
    """The chunk names listed in one index chunk."""
    if len(data) % DIGEST_SIZE:
        raise ProtocolError("an index chunk is a whole number of digests")
    return [data[i:i + DIGEST_SIZE].hex() for i in range(0, len(data), DIGEST_SIZE)]


def data_chunks(manifest: Manifest, load: Callable[[str], bytes], first: int = 0
                ) -> Iterator[str]:
    """The value's chunk names in order from chunk number ``first``; ``load(name)``
    fetches an index chunk when needed (only those from the one listing ``first`` on)."""
    yield from manifest.chunks[first:]
    start, skip = divmod(first, INDEX_FANOUT)
    for name in manifest.index[start:]:
        yield from read_index(load(name))[skip:]
        skip = 0


def read_manifest(manifest: bytes) -> tuple[int, list[str]]:
    """``(size, names)`` of a manifest: its data chunks (v1) or its index chunks (v2)."""
    parsed = parse_manifest(manifest)
    return parsed.size, list(parsed.chunks or parsed.index)

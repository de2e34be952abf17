"""Content-addressed chunk storage on one replica's disk, beside the Raft state.

A chunk is named by the SHA-256 of its bytes, so a chunk is immutable, any copy
of it is as good as any other, and a reader can verify what it got.  Writes go
to a temporary file that is fsynced and renamed into place, then the directory
is fsynced: once :meth:`BlobStore.put` returns, the chunk survives a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import msgpack

from .errors import ProtocolError

CHUNK_SIZE = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


def chunk_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_name(name: object) -> str:
    """A chunk name from the wire: exactly 64 lowercase hex digits (never a path)."""
    if not isinstance(name, str) or not _HEX64.fullmatch(name):
        raise ProtocolError("a chunk name is 64 lowercase hex digits")
    return name


class BlobStore:
    """The chunks one replica holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def has(self, name: str) -> bool:
        return self._path(check_name(name)).exists()

    def put(self, name: str, data: bytes) -> None:
        """Store a chunk durably; its bytes must hash to its name."""
        check_name(name)
        if chunk_name(data) != name:
            raise ProtocolError("chunk bytes do not match the chunk name")
        path = self._path(name)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{name}.{os.getpid()}.{id(data)}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes | None:
        """The chunk's bytes, or None when it is missing or corrupt."""
        try:
            data = self._path(check_name(name)).read_bytes()
        except FileNotFoundError:
            return None
        return data if chunk_name(data) == name else None

    def stats(self) -> dict[str, int]:
        count = size = 0
        for sub in self.root.iterdir():
            if sub.is_dir():
                for chunk in sub.iterdir():
                    if not chunk.name.endswith(".tmp"):
                        count += 1
                        size += chunk.stat().st_size
        return {"chunks": count, "chunk_bytes": size}


# -- manifests ------------------------------------------------------------------
# A large value's cell holds a manifest instead of the bytes: its size and the
# SHA-256 of each CHUNK_SIZE piece.  The manifest of a value is a pure function of
# the value, so comparing manifests compares values (CPUT by value on blobs).

def make_manifest(size: int, digests: list[bytes]) -> bytes:
    return msgpack.packb({"v": 1, "size": size, "chunks": digests}, use_bin_type=True)


def read_manifest(manifest: bytes) -> tuple[int, list[str]]:
    """``(size, chunk names)`` of a manifest; ProtocolError if it is not one."""
    try:
        data = msgpack.unpackb(manifest, raw=False)
        size, digests = int(data["size"]), data["chunks"]
        return size, [bytes(d).hex() for d in digests]
    except Exception as exc:
        raise ProtocolError(f"malformed blob manifest: {exc!r}") from None

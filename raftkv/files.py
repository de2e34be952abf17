"""Files a replica writes for itself: private to its user, and durable when asked.

Everything a replica keeps (the journal, term and vote, snapshots, the store,
its small marker files) is mode 0600 whatever the umask: the store holds every
user's data, and the Raft files hold pickles.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600


def create_private(path: Path | str) -> int:
    """Open ``path`` for writing, created or truncated, readable by this user only: a
    descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)


def fsync_dir(path: Path | str) -> None:
    """Make a rename or a new file in ``path`` survive a crash of the machine."""
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``, readable by this user only: after a crash
    the old content or the new, never a mix (temp file, fsync, rename, fsync the
    directory).  ``durable=False`` skips both fsyncs, for a file whose loss a crash
    may cost (it is read back only if whole)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = create_private(tmp)
    try:
        pwrite_all(fd, data, 0)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written

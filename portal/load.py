"""Requests in flight, counted per process and summed over every worker of a frontend.

gunicorn runs several worker processes behind one port, and the balancer's
``/healthz`` probe lands on any one of them, so each worker publishes its
count in a tiny memory-mapped file in a directory the whole frontend shares
(``$RAFTCLOUD_LOAD_DIR``, which ``portal/gunicorn_conf.py`` makes in the
gunicorn master before it forks and removes on exit).  Updating a count is a
store into shared memory, no system call; reading the total opens one
8-byte file per worker.  Files of workers that died are skipped and removed.

Without a directory (tests, a single process) the total is this process's count.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from pathlib import Path

LOAD_DIR_ENV = "RAFTCLOUD_LOAD_DIR"
_SLOT = struct.Struct("<q")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LoadCounter:
    """This process's requests in flight, published for its sibling workers."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._lock = threading.Lock()
        self._pid = 0
        self._map: mmap.mmap | None = None
        self.value = 0

    def _slot(self) -> mmap.mmap | None:
        """This process's shared slot, made after a fork (a child must not share its parent's)."""
        if self.directory is None:
            return None
        if self._pid != os.getpid():
            self._pid, self._map, self.value = os.getpid(), None, 0
            with contextlib.suppress(OSError):
                path = self.directory / str(self._pid)
                with open(path, "w+b") as f:
                    f.write(_SLOT.pack(0))
                    f.flush()
                    self._map = mmap.mmap(f.fileno(), _SLOT.size)
        return self._map

    def _publish(self) -> None:
        slot = self._slot()
        if slot is not None:
            _SLOT.pack_into(slot, 0, self.value)

    def enter(self) -> None:
        with self._lock:
            self._slot()
            self.value += 1
            self._publish()

    def leave(self) -> None:
        with self._lock:
            self.value -= 1
            self._publish()

    def workers(self) -> dict[int, int]:
        """Requests in flight per live worker process of this frontend (pid -> count)."""
        with self._lock:
            self._slot()
            mine = {os.getpid(): self.value}
        if self.directory is None:
            return mine
        counts: dict[int, int] = {}
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return mine
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            try:
                with open(entry.path, "rb") as f:
                    (counts[pid],) = _SLOT.unpack(f.read(_SLOT.size))
            except (OSError, struct.error):
                continue
        counts.update(mine)
        return counts

    def total(self) -> int:
        """Requests in flight in the whole frontend."""
        return sum(self.workers().values())

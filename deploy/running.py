"""Is a cloud already running here, and has it stopped: what ``raftcloud up`` checks before
it starts anything, and what ``raftcloud down`` waits for (docs/operations.md,
"Starting and stopping").

A running ``raftcloud up`` holds an exclusive lock on ``raftcloud.pid`` in its
data directory, with its pid and control address inside: the lock goes with the
process, however it ends, so a stale file never blocks a start.  A cloud started
from another data directory, or anything else on the cluster file's ports, is
found by trying to bind those ports.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from raftkv.cluster import split_addr

PID_FILE = "raftcloud.pid"


@dataclass(frozen=True)
class Holder:
    """The ``raftcloud up`` that holds a data directory."""

    pid: int | None
    control: str | None


class DataDirLock:
    """The exclusive claim of one ``raftcloud up`` on its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE
        self._file: IO[str] | None = None

    def claim(self, control: str | None) -> Holder | None:
        """Take the lock and write our pid; the holder instead when another process has it."""
        file = open(self.path, "a+", opener=lambda p, f: os.open(p, f, 0o600))
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                file.close()
                raise
            file.seek(0)
            holder = _parse_holder(file.read())
            file.close()
            return holder
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "control": control}))
        file.flush()
        self._file = file
        return None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def _parse_holder(text: str) -> Holder:
    try:
        data: Any = json.loads(text)
        return Holder(int(data["pid"]), data.get("control"))
    except (ValueError, KeyError, TypeError):
        return Holder(None, None)  # written this very moment, or by someone else


def ports_in_use(addrs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (what, host:port) pairs whose port this host cannot bind now.

    With SO_REUSEADDR, as the servers bind, so a connection closing (TIME_WAIT)
    does not count as a listener.
    """
    taken = []
    for what, addr in addrs:
        host, port = split_addr(addr)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    taken.append((what, addr))
                # another error (an address not of this host) is the server's to report
    return taken


def running(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie, dead but not yet reaped, is not)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def group_running(pgid: int) -> bool:
    """Does any process of process group ``pgid`` still run (or wait to be reaped)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_exited(pids: Iterable[int], groups: Iterable[int], timeout: float) -> list[int]:
    """Wait, at most ``timeout`` seconds, until none of ``pids`` runs and every process
    group of ``groups`` is empty; the pids and groups still there."""
    left_pids = [p for p in pids if running(p)]
    left_groups = [g for g in groups if group_running(g)]
    deadline = time.monotonic() + timeout
    while (left_pids or left_groups) and time.monotonic() < deadline:
        time.sleep(0.1)
        left_pids = [p for p in left_pids if running(p)]
        left_groups = [g for g in left_groups if group_running(g)]
    return left_pids + left_groups

"""The children's log files: each child's output, line by line, into ``logs/<name>.log``, rotated.

A child writes one line per event to stderr (``raftkv/logs.py``); the launcher
reads its stdout and stderr from a pipe and writes each line to a file that
rotates by size, keeping a bounded number of old files, as supervisord and
daemontools' multilog do.  Why here, and not a ``RotatingFileHandler`` in each
child: a frontend is a gunicorn master and its forked workers, several
processes writing one file, and ``RotatingFileHandler`` is safe in one process
only (the logging cookbook); and a child's crash (a traceback at exit, a fault
handler's dump) is written to stderr, past its logging.  The rotation itself is
the standard library's ``logging.handlers.RotatingFileHandler``, fed the lines
as they are.

The ``[logs]`` table of the cluster file (all optional, deploy/README.md)::

    [logs]
    format = "text"          # or "json": passed to every child as $RAFTCLOUD_LOG_FORMAT
    max_bytes = 10485760     # a log file rotates past this size (10 MiB)
    backups = 5              # <name>.log.1 .. <name>.log.5 are kept, older ones deleted
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftkv.errors import ConfigError
from raftkv.logs import FORMATS

log = logging.getLogger("deploy.supervisor")

MAX_LINE = 64 * 1024   # a longer line is cut into lines of this size: memory stays bounded


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> LogSettings:
        """:raises ConfigError: an unknown key, or a value of the wrong kind."""
        unknown = set(table) - {"format", "max_bytes", "backups"}
        if unknown:
            raise ConfigError(f"unknown key(s) in [logs]: {', '.join(sorted(unknown))}")
        settings = cls(**table)
        if settings.format not in FORMATS:
            raise ConfigError(f"logs.format must be one of {', '.join(FORMATS)}")
        for key in ("max_bytes", "backups"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"logs.{key} must be a positive integer, got {value!r}")
        return settings


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Every file it opens, rotated ones too, readable by this user only: logs name users
    and addresses (deploy/README.md, "Permissions")."""

    def _open(self) -> Any:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                    opener=lambda path, flags: os.open(path, flags, 0o600))


class ChildLog:
    """One child's log file: lines copied from its pipe, rotated past ``max_bytes``."""

    def __init__(self, path: Path, settings: LogSettings) -> None:
        self._handler = _PrivateRotatingFile(
            path, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._readers: list[threading.Thread] = []

    def follow(self, child: subprocess.Popen[bytes], name: str) -> None:
        """Copy the child's output into the file on a thread of its own, until it closes it."""
        reader = threading.Thread(target=self._copy, args=(child, name), daemon=True,
                                  name=f"log-{name}")
        reader.start()
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]

    def _copy(self, child: subprocess.Popen[bytes], name: str) -> None:
        assert child.stdout is not None
        with child.stdout as pipe:
            while line := pipe.readline(MAX_LINE):
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                # msg without args: written as it is, a '%' in it is no format.
                self._handler.handle(logging.makeLogRecord({"msg": text, "args": None}))
        # Its output ends when it (and every process it forked) has exited.
        log.info("%s (pid %d) exited with code %s", name, child.pid, child.wait())

    def close(self, timeout: float = 2.0) -> None:
        """Wait briefly for the readers to reach the end of their pipes, then close the file."""
        for reader in self._readers:
            reader.join(timeout)
        self._handler.close()

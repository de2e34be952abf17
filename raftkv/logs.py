"""How every raftcloud process logs: one line per event, with its time, level and process name.

Each process calls :func:`setup_logging` once at start-up with the name it goes by
("replica g1a", "portal web1", "smtpd", "balancer", "launcher"); the store's
replicas, the apps and the launcher share this one helper (docs/operations.md,
"Logs").  Lines go to stderr; the launcher writes each child's output to a file
that rotates (``deploy/logfiles.py``).

Two formats, chosen by ``$RAFTCLOUD_LOG_FORMAT`` (the launcher sets it from the
cluster file's ``[logs] format``):

- ``text`` (the default): ``2026-12-05T20:10:00.123Z INFO replica g1a raftkv.server: message``
- ``json``: ``{"time": ..., "level": ..., "process": ..., "logger": ..., "message": ...}``
  plus ``"exception"`` with the traceback, when there is one.

Either way an event is one line: a newline inside a message or a traceback is
written as ``\\n``, so a line-oriented tool (grep, a log shipper) sees whole
events.  Nothing here decides what is secret: code never logs a password, a
token or the cluster secret (``tests/integration/test_logs_no_secrets.py`` greps
for them); :class:`RedactFilter` only masks the ``password=...`` shape as a
second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import TextIO

LOG_FORMAT_ENV = "RAFTCLOUD_LOG_FORMAT"
FORMATS = ("text", "json")


def log_format(default: str = "text") -> str:
    """The format asked for by ``$RAFTCLOUD_LOG_FORMAT``; an unknown value is ``default``."""
    value = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    return value if value in FORMATS else default


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
        f".{int(created % 1 * 1000):03d}Z"


class LineFormatter(logging.Formatter):
    """``time LEVEL process logger: message``, one line whatever the message holds."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{_utc(record.created)} {record.levelname} {self.process} "
                f"{record.name}: {record.getMessage()}")
        extra = _exception_text(self, record)
        if extra:
            line += " | " + extra
        return line.replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, process, logger, message[, exception]."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        event = {"time": _utc(record.created), "level": record.levelname,
                 "process": self.process, "logger": record.name,
                 "message": record.getMessage()}
        extra = _exception_text(self, record)
        if extra:
            event["exception"] = extra
        return json.dumps(event, ensure_ascii=False)  # escapes newlines: one line


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


class RedactFilter(logging.Filter):
    """Masks ``password=...``, ``secret: ...``, ``token=...`` in a message: a second line of
    defence only -- what keeps secrets out of the logs is code that never logs them."""

    PATTERN = re.compile(r"(?i)\b(password|passwd|secret|token|authorization)(\s*[=:]\s*)"
                         r"(?!<redacted>)[^\s&,;'\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.PATTERN.sub(r"\1\2<redacted>", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def formatter_for(process: str, fmt: str | None = None) -> logging.Formatter:
    """The formatter of :func:`setup_logging`, for a handler configured elsewhere."""
    return JsonFormatter(process) if (fmt or log_format()) == "json" else LineFormatter(process)


def setup_logging(process: str, level: str | int = "INFO", *,
                  stream: TextIO | None = None, fmt: str | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) as one line each, named ``process``.

    Replaces the root logger's handlers, so calling it again (a forked child renaming
    itself) does not log twice.  Returns the handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(process, fmt))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
    return handler

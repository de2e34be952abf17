"""The whole suite's logs hold none of the passwords and secrets its helpers use
(docs/operations.md, "Logs"): a check run once, at the end of the session.

Two places are searched: every record logged in the test process at the levels the
session lets through (the portal and smtpd tests run them in process), and every log
file the session's processes wrote under its temporary directory (replicas, frontends,
smtpd, the launcher's ``logs/`` directories, :class:`tests._procs.Proc` logs).  The
secrets are the shared ones -- the helpers' passwords, the session admin's, the test
cluster secret, the admin passwords `raftcloud up` made -- plus any a test adds with
:func:`watch`.
``tests/integration/test_logs_no_secrets.py`` is the thorough one (every kind of
credential, random values, one cloud); this one is cheap and covers whatever the suite ran.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from ._portal import ADMIN_PASSWORD, PASSWORD
from ._procs import SECRET

_WATCHED: set[bytes] = {PASSWORD.encode(), PASSWORD.replace(" ", "+").encode(),
                        ADMIN_PASSWORD.encode(), SECRET, base64.b64encode(SECRET)}


def watch(secret: str | bytes) -> None:
    """Add a secret a test made (an app password, a token) to those the logs must not hold."""
    _WATCHED.add(secret.encode() if isinstance(secret, str) else secret)


class SecretWatch(logging.Handler):
    """Notes every record of this process whose text holds a watched secret."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: not ours to judge
            return
        if record.exc_text:
            text += record.exc_text
        data = text.encode("utf-8", "replace")
        if any(secret in data for secret in _WATCHED):
            self.found.append(f"a record of {record.name} at {record.pathname}:{record.lineno}")


def scan_files(root: Path) -> list[str]:
    """The log files under ``root`` (``*.log``, rotated ``*.log.N``) that hold a watched secret,
    the admin passwords that `raftcloud up` made under ``root`` included."""
    for made in root.rglob("admin.password"):
        watch(made.read_bytes().strip())
    found = []
    for path in sorted(root.rglob("*.log*")):
        if not path.is_file() or not (path.suffix == ".log" or ".log." in path.name):
            continue
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}" for secret in _WATCHED if secret in data][:1]
    return found

"""imapd's Session on the in-memory store, for unit tests: a filled mailbox, a session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from imapd.config import ImapConfig
from imapd.session import Session
from imapd.settings import ImapdSettings
from imapd.store import StoreCalls
from shards.model import mail

from ._memstore import MemClient

USER = "alice"


def numbered(n: int, user: str = USER) -> bytes:
    """Message ``n`` to ``user``: its own sender, subject, Message-ID and body."""
    return (f"From: sender{n}@example.org\r\nTo: {user}@raftcloud.test\r\n"
            f"Subject: number {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


def mailbox(count: int = 0, user: str = USER) -> MemClient:
    """An in-memory store where ``user``'s mailbox is current and INBOX holds messages
    0 .. count - 1 (:func:`numbered`)."""
    client = MemClient()
    mail.ensure_current(client, user)
    for n in range(count):
        mail.deliver(client, user, numbered(n, user))
    return client


def new_session(calls: StoreCalls, user: str = USER, **kwargs: Any) -> Session:
    """A session of ``user``, as a new connection makes (default settings, no TLS, no quota)."""
    return Session(user, ImapConfig(ImapdSettings(), tls=None), calls, quota=None,
                   idle_poll=0.05, **kwargs)


@contextmanager
def store_calls(store: MemClient, threads: int = 4) -> Iterator[StoreCalls]:
    calls = StoreCalls(store, threads=threads)
    try:
        yield calls
    finally:
        calls.close()

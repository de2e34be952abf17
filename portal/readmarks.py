"""Marking mail read off the request path, so a message page waits for no write.

Opening a message marks it read: its ``\\Seen`` flag set on its record
(:func:`shards.model.mail.store_flags`: a read of folder and record, then a
mutation conditioned on them).  The page knows where the record is (its folder
and UID, from the pointer it read), so the mark goes there directly; a message
moved meanwhile (UIDs never repeat in a folder, folder ids never come back) is
found again by its id (:func:`shards.model.mailbox.mark_read`).  On the request
that would be a third sequential round trip and more (README, "Store round trips
per page").  The page notes it here instead and a thread of this worker writes it at once;
until it lands, this worker's mailbox listings show the message read already
(:meth:`ReadMarks.pending`), and another frontend's listing may show it
unread for the few milliseconds the write takes.  A concurrent change of the
message (another frontend, an IMAP client) makes the model read it again and
apply the mark on top.  Losing a pending note (a worker killed) leaves the message unread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from raftkv.background import UNTIL_WOKEN, BackgroundLoop
from raftkv.errors import RaftKVError
from shards.model import mail, mailbox

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

log = logging.getLogger(__name__)


class _Mark(NamedTuple):
    user: str
    msg_id: str
    place: tuple[int, int] | None  # (folder id, UID) where the page found its record


class ReadMarks(BackgroundLoop):
    """The read marks of this worker's message pages, written by a thread of its own."""

    MAX_PENDING = 10_000  # beyond it a mark is written on the request after all

    def __init__(self, client: Callable[[], KeyValueStore]) -> None:
        super().__init__("portal-read-marks", 1.0)
        self._client = client
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Mark] = {}
        self._pid = os.getpid()
        self.writes = 0

    def note(self, user: str, msg_id: str, place: tuple[int, int] | None = None) -> bool:
        """Mark the message read soon (``place``: its record's folder and UID, if known);
        False if too many wait (the caller writes it)."""
        with self._lock:
            if os.getpid() != self._pid:
                self._pid, self._pending = os.getpid(), {}
            if self.stopping or len(self._pending) >= self.MAX_PENDING:
                return False
            self._pending[(user, msg_id)] = _Mark(user, msg_id, place)
        self.start()
        self.wake()
        return True

    def pending(self, user: str) -> set[str]:
        """The ids of ``user``'s messages marked read here and not yet written."""
        with self._lock:
            return {msg_id for (who, msg_id) in self._pending if who == user}

    def step(self) -> float:
        self.flush()
        return UNTIL_WOKEN

    def finish(self) -> None:
        self.flush()

    def flush(self) -> int:
        """Write the marks noted so far; how many landed."""
        with self._lock:
            marks = list(self._pending.values())
        landed = 0
        for mark in marks:
            try:
                write(self._client(), mark.user, mark.msg_id, mark.place)
                landed += 1
            except RaftKVError as exc:
                log.debug("read mark of %s not written: %r", mark.msg_id, exc)
            with self._lock:
                if self._pending.get((mark.user, mark.msg_id)) is mark:
                    del self._pending[(mark.user, mark.msg_id)]
        with self._lock:
            self.writes += landed
        return landed

    def close(self) -> None:
        self.stop()


def write(client: KeyValueStore, user: str, msg_id: str,
          place: tuple[int, int] | None = None) -> None:
    """The mark: the message's ``\\Seen`` flag, set on a fresh read of its record (at
    ``place`` if given and still there; else wherever its pointer says)."""
    if place is not None:
        fid, uid = place
        try:
            done = mail.store_flags(client, user, fid, [uid], [mail.SEEN], "add")
        except mail.NoSuchFolder:
            done = None
        if done is not None and done.updated:
            return
        record = mail.get_record(client, user, fid, uid)
        if record is not None and record.id == msg_id:
            return  # there, and read already
    mailbox.mark_read(client, user, msg_id)

"""The mailbox as smtpd and the webmail have used it: deliver, list, read, mark read, delete.

A compatibility surface over :mod:`shards.model.mail` (folders, UIDs, flags;
the layout is described there and in docs/data-model.md, "Mailbox").  Messages
are named by their message id (``<arrival ns, 20 digits>-<16 hex>``), folders
by role: "inbox", "sent", "drafts", "trash", "junk".  "Unread" is the absence
of the ``\\Seen`` flag.

Delivery is at least once upstream (SMTP retries, our own outbound queue), so
:func:`deliver` is idempotent per (folder, Message-ID).  **Quota.** ``usage``
counts the raw bytes of every message in every folder; it changes in the same
``mutate_row`` that lists or unlists a message.  :func:`deliver` with a
``quota`` refuses a message that would take it over (:class:`MailboxFull`);
callers pass none for the user's own Sent copies and for bounces, which are
counted but never refused.  The quota itself is the cluster file's ``[mail]
mailbox_quota`` (:func:`quota_setting`).

These functions do not check that the user has an account: callers (smtpd,
portal) do that before delivering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftkv.errors import ConditionFailed, ConfigError

from . import mail
from .errors import MailboxFull
from .mail.headers import ParsedHeaders, header_value, parse_headers
from .mail.layout import (
    FLAGGED,
    POINTER_PREFIX,
    RAW_COL,
    ROLE_IDS,
    ROLES,
    SEEN,
    USAGE_COL,
    Record,
    is_message_id,
    mailbox_row,
    message_row,
    new_message_id,
    pointer_col,
    record_col,
    record_from_cell,
    record_prefix,
    unpack_pointer,
)
from .mail.messages import dedup_column, delete_raw
from .mail.reads import locate_pointer, read_cells, records_of

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from raftkv.interface import Cell, KeyValueStore

__all__ = ["MailboxFull", "MessagePage", "MessageSummary", "ParsedHeaders", "dedup_column",
           "delete_message", "deliver", "every_message", "get_message", "get_summary", "has_room",
           "header_value", "is_message_id", "list_messages", "list_page", "mailbox_row", "mark_read",
           "message_row", "new_message_id", "parse_headers", "pointer_folder", "quota_setting", "record_key",
           "summary", "summary_in", "usage"]

META_PREFIX = POINTER_PREFIX   # m:<msg_id>: the message's pointer (its metadata before layout 2)
RAW_COLUMN = RAW_COL
USAGE_COLUMN = USAGE_COL
FOLDERS = tuple(ROLE_IDS)      # the folder names deliver and the listings take
DEFAULT_QUOTA = 1024 ** 3  # bytes per mailbox, unless [mail] mailbox_quota says otherwise
PAGE_READ_FACTOR = 2  # list_page, when its link's message is gone: this many pages' worth a read
PAGE_READS = 4        # and at most this many reads for one page
EVERY_MESSAGE_BATCH = 200  # messages read at a time by every_message
_LOCATE_ATTEMPTS = 10  # a message moved while being marked: find it again, this often

def quota_setting(mail_table: Mapping[str, Any]) -> int:
    """The ``[mail] mailbox_quota`` setting in bytes (default 1 GiB)."""
    value = mail_table.get("mailbox_quota", DEFAULT_QUOTA)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("mail.mailbox_quota must be a positive number of bytes")
    return value


@dataclass(frozen=True)
class MessageSummary:
    """One line of a mailbox listing."""

    id: str               # our message id (sorts by arrival)
    sender: str           # the From header as displayed, "" if none
    subject: str          # decoded Subject, "" if none
    date: float           # arrival time, unix seconds
    unread: bool
    size: int             # bytes of the raw message
    folder: str           # "inbox", "sent", ... ("#<id>" for a folder of the user's own)
    message_id: str = ""  # the Message-ID header, for replies (In-Reply-To)
    to: str = ""          # the To header as displayed (Sent lists it; older mail has "")
    fid: int = 0          # the folder's id and the message's UID in it (the webmail's forms)
    uid: int = 0
    flagged: bool = False  # \\Flagged: starred
    origin: int | None = None  # in Trash: the folder it came from (restore)


def summary(record: Record) -> MessageSummary:
    """A record as a line of a listing."""
    return MessageSummary(id=record.id, sender=record.sender, subject=record.subject,
                          date=record.date, unread=SEEN not in record.flags, size=record.size,
                          folder=ROLES.get(record.fid, f"#{record.fid}"),
                          message_id=record.message_id, to=record.to, fid=record.fid,
                          uid=record.uid, flagged=FLAGGED in record.flags, origin=record.origin)


def _folder_id(folder: str | int) -> int:
    if isinstance(folder, int):
        return folder  # a folder's id (special or the user's own)
    fid = ROLE_IDS.get(folder)
    if fid is None:
        raise ValueError(f"unknown folder {folder!r}: one of {', '.join(FOLDERS)}")
    return fid


def deliver(client: KeyValueStore, user: str, raw: bytes, *, folder: str = "inbox",
            unread: bool = True, quota: int | None = None) -> str:
    """Store a message in ``user``'s ``folder`` ("inbox", "sent", "drafts", "trash",
    "junk"); returns its message id.

    Delivering a message whose Message-ID is already in that folder stores
    nothing and returns the existing id.  Messages without a Message-ID are
    always stored.  The message's size is added to the mailbox's usage.

    :param quota: refuse the message if usage would exceed it (None: never refuse).
    :raises MailboxFull: it does not fit in ``quota``; nothing was stored.
    :raises UnavailableError: the store is unavailable; nothing visible was
        stored, and delivering again later is safe.
    """
    done = mail.deliver(client, user, raw, folder=_folder_id(folder),
                        flags=() if unread else (SEEN,), quota=quota)
    return done.msg_id


def usage(client: KeyValueStore, user: str) -> int:
    """Bytes of every message in ``user``'s mailbox, all folders."""
    return mail.usage(client, user)


def has_room(client: KeyValueStore, user: str, size: int, quota: int) -> bool:
    """Whether a message of ``size`` bytes fits in ``user``'s ``quota`` now."""
    return usage(client, user) + size <= quota


def list_messages(client: KeyValueStore, user: str, folder: str = "inbox") -> list[MessageSummary]:
    """The messages in one folder, newest first."""
    return [summary(r) for r in mail.list_newest(client, user, _folder_id(folder), limit=None)]


def every_message(client: KeyValueStore, user: str, *,
                  batch: int = EVERY_MESSAGE_BATCH) -> Iterator[MessageSummary]:
    """Every message of every folder, oldest first (by arrival), ``batch`` at a time:
    a ``get_row`` of pointers, then a ``get_cells`` of their records (a user's export:
    memory stays bounded whatever the mailbox's size)."""
    if not mail.ensure_current(client, user, create=False):
        return
    row, after = mailbox_row(user), ""
    while True:
        pointers = client.get_row(row, prefix=POINTER_PREFIX, after=after, limit=batch)
        places = [p for p in map(unpack_pointer, (c.value for c in pointers.values()))
                  if p is not None]
        cells = read_cells(client, [(row, record_col(fid, uid)) for fid, uid in places])
        for (fid, uid), cell in zip(places, cells, strict=True):
            record = None if cell is None else record_from_cell(fid, uid, cell.value, cell.version)
            if record is not None:
                yield summary(record)
        if len(pointers) < batch:
            return
        after = next(reversed(pointers))


@dataclass(frozen=True)
class MessagePage:
    """A page of one folder (:func:`list_page`), newest first."""

    messages: list[MessageSummary]
    more: bool    # there may be more beyond them in the direction read (older, or newer)
    resume: str   # with ``more``: the id to read on from in that direction ("" otherwise)


def list_page(client: KeyValueStore, user: str, folder: str | int = "inbox", *, older_than: str = "",
              newer_than: str = "", limit: int) -> MessagePage:
    """Up to ``limit`` messages of one folder, newest first, without reading the others.

    The messages older than the message ``older_than`` (from the newest if ""), or
    the ``limit`` just newer than ``newer_than``; and whether there may be more
    beyond them.  The link's message is found by its pointer; then the page is one
    ``get_row`` over the folder's records from its UID (the folder's own cells:
    Sent among thousands of received messages reads only Sent).  If that message
    has left the folder since, the page is found by comparing ids instead
    (ids sort by arrival), reading at most :data:`PAGE_READS` times.
    """
    fid = _folder_id(folder)
    if not mail.ensure_current(client, user, create=False):
        return MessagePage([], False, "")
    cursor = newer_than or older_than
    reverse = not newer_than
    start = None
    if cursor:
        if not is_message_id(cursor):
            return MessagePage([], False, "")  # not one of our links
        where = locate_pointer(client, user, cursor)
        if where is None or where[0] != fid:
            return _page_by_id(client, user, fid, cursor, reverse, limit)
        start = where[1]
    cells = client.get_row(mailbox_row(user), prefix=record_prefix(fid), reverse=reverse,
                           after="" if start is None else record_col(fid, start), limit=limit + 1)
    return _page(records_of(cells, fid), limit, reverse, more=len(cells) > limit)


def _page(records: list[Record], limit: int, reverse: bool, *, more: bool,
          resume: str = "") -> MessagePage:
    shown = records[:limit]
    if more and not resume:
        resume = shown[-1].id if shown else ""
    found = [summary(r) for r in shown]
    if not reverse:
        found.reverse()
    return MessagePage(found, more and bool(resume), resume if more else "")


def _page_by_id(client: KeyValueStore, user: str, fid: int, cursor: str, reverse: bool,
                limit: int) -> MessagePage:
    """A page beyond ``cursor`` found by id: its message is gone from the folder."""
    row, after, batch = mailbox_row(user), "", (limit + 1) * PAGE_READ_FACTOR
    found: list[Record] = []
    for _ in range(PAGE_READS):
        cells = client.get_row(row, prefix=record_prefix(fid), after=after, reverse=reverse,
                               limit=batch)
        for record in records_of(cells, fid):
            if (record.id < cursor) if reverse else (record.id > cursor):
                found.append(record)
        if len(found) > limit:
            return _page(found, limit, reverse, more=True)
        if len(cells) < batch:
            return _page(found, limit, reverse, more=False)
        after = next(reversed(cells))
    # Read as far as a page may: go on from the last message read, found or not.
    last = records_of({after: cells[after]}, fid)
    return _page(found, limit, reverse, more=True, resume=last[0].id if last else "")


def get_summary(client: KeyValueStore, user: str, msg_id: str) -> MessageSummary | None:
    """One message's metadata, or None if there is no such message."""
    record = mail.locate(client, user, msg_id)
    return None if record is None else summary(record)


def record_key(user: str, pointer: bytes) -> tuple[str, str] | None:
    """The record cell an ``m:`` cell's value points to; None for a value of the layout
    before 2 (read those with :func:`get_summary`, which migrates first) or garbage.

    A page that read the pointer with its session (and a worker that keeps it) names
    the record in the same round trip, or the next one.
    """
    where = unpack_pointer(pointer)
    return None if where is None else (mailbox_row(user), record_col(*where))


def pointer_folder(pointer: bytes) -> str:
    """The folder (as :class:`MessageSummary` names it) an ``m:`` cell's value points into."""
    where = unpack_pointer(pointer)
    return "inbox" if where is None else ROLES.get(where[0], f"#{where[0]}")


def summary_in(msg_id: str, key: tuple[str, str], cell: Cell | None) -> MessageSummary | None:
    """The summary of message ``msg_id`` from the cell at :func:`record_key`'s ``key``;
    None if it is not there (moved or deleted since the pointer was read)."""
    if cell is None:
        return None
    _, fid, uid = key[1].split(":")
    record = record_from_cell(int(fid), int(uid), cell.value, cell.version)
    return summary(record) if record is not None and record.id == msg_id else None


def get_message(client: KeyValueStore, user: str, msg_id: str) -> bytes | None:
    """The raw message as received, or None if there is no such message."""
    return mail.get_raw(client, user, msg_id)


def mark_read(client: KeyValueStore, user: str, msg_id: str, *, read: bool = True) -> bool:
    """Set or clear a message's ``\\Seen`` flag; returns False if there is no such message."""
    for _ in range(_LOCATE_ATTEMPTS):
        record = mail.locate(client, user, msg_id)
        if record is None:
            return False
        if (SEEN in record.flags) == read:
            return True
        result = mail.store_flags(client, user, record.fid, [record.uid], [SEEN],
                                  "add" if read else "remove")
        if result.updated or _still_at(client, user, record):
            return True
        # Moved (or deleted) between the two reads: look for it again.
    raise ConditionFailed(f"message {msg_id} of {user} keeps moving")


def _still_at(client: KeyValueStore, user: str, record: Record) -> bool:
    cell = client.get(mailbox_row(user), pointer_col(record.id))
    return cell is not None and unpack_pointer(cell.value) == (record.fid, record.uid)


def delete_message(client: KeyValueStore, user: str, msg_id: str) -> bool:
    """Delete a message for good, giving its bytes back to the quota; whether it existed.

    The ``mid:`` cell stays behind on purpose: a late SMTP retry of a message
    the user already deleted must not bring it back.
    """
    if not is_message_id(msg_id):
        return False
    existed = False
    for _ in range(_LOCATE_ATTEMPTS):
        record = mail.locate(client, user, msg_id)
        if record is None:
            break
        if mail.expunge(client, user, record.fid, [record.uid]):
            existed = True
            break
    # Also when it was not listed: this cleans up after a half-finished deliver.
    delete_raw(client, user, msg_id)
    return existed

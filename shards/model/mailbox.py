"""Per-user mailboxes in the store: deliver, list, read, mark read, delete.

Layout (the ``{user}`` hash tag keeps one user's rows on one shard)::

    row {user}/mail           column m:<msg_id>   msgpack metadata (sender, subject, ...)
                              column mid:<hash>   msg_id already delivered with that Message-ID
                              column usage        bytes of every listed message (the quota's count)
    row {user}/msg:<msg_id>   column raw          the message exactly as received (any size)

The metadata row is what a mailbox listing reads (one ``get_row``); raw bytes
live in their own row so a listing never drags message bodies along, and large
messages become blobs inside raftkv without this module knowing.

Message ids are ``<arrival time in ns, 20 digits>-<16 hex>``: they sort by
arrival, so "newest first" is a string sort, and they are unguessable enough
that one id never collides with another even across smtpd instances.

Delivery is at least once upstream (SMTP retries, our own outbound queue), so
``deliver`` is idempotent per (folder, Message-ID): the ``mid:`` column and the
message's metadata are written in one ``mutate_row`` conditioned on the
``mid:`` column being absent.  Two racing deliveries of one message store one
copy; the loser deletes its raw bytes and returns the winner's id.

**Quota.** ``usage`` counts the raw bytes of every message the mailbox lists,
in every folder.  It changes in the same ``mutate_row`` that lists or unlists
a message, conditioned on its version, so concurrent deliveries and deletes
never lose a count.  :func:`deliver` with a ``quota`` refuses a message that
would take ``usage`` over it (:class:`MailboxFull`); callers pass none for the
user's own Sent copies and for bounces, which are counted but never refused.
A mailbox from before the quota has no ``usage`` cell: the first delivery
computes it from the metadata (one ``get_row``) and stores it; until then
:func:`usage` computes it on each call.  The quota itself is the cluster
file's ``[mail] mailbox_quota`` (:func:`quota_setting`).

These functions do not check that the user has an account: callers (smtpd,
portal) do that before delivering.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any

import msgpack

from raftkv.errors import ConditionFailed, ConfigError

from .errors import MailboxFull

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from email.message import EmailMessage

    from raftkv.interface import Cell, KeyValueStore

__all__ = ["MailboxFull", "MessagePage", "MessageSummary", "ParsedHeaders", "delete_message", "deliver",
           "every_message", "get_message", "get_summary", "has_room", "header_value",
           "list_messages", "list_page",
           "mark_read", "new_message_id", "parse_headers", "quota_setting", "read_meta", "unread",
           "usage"]

log = logging.getLogger(__name__)

META_PREFIX = "m:"
DEDUP_PREFIX = "mid:"
RAW_COLUMN = "raw"
USAGE_COLUMN = "usage"
DEFAULT_QUOTA = 1024 ** 3  # bytes per mailbox, unless [mail] mailbox_quota says otherwise
_CAS_ATTEMPTS = 10  # read-modify-write retries before giving up under contention
PAGE_READ_FACTOR = 2  # list_page reads this many pages' worth of columns at a time
PAGE_READS = 4        # and at most this many times for one page (see list_page)
EVERY_MESSAGE_BATCH = 200  # listings read at a time by every_message
# Every delivery to one mailbox updates its usage cell: racing deliveries retry more.
_USAGE_ATTEMPTS = 50


def quota_setting(mail_table: Mapping[str, Any]) -> int:
    """The ``[mail] mailbox_quota`` setting in bytes (default 1 GiB)."""
    value = mail_table.get("mailbox_quota", DEFAULT_QUOTA)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("mail.mailbox_quota must be a positive number of bytes")
    return value
# Metadata is a small Raft cell (docs/store-promises.md, "Sizes": entries stay under 32 KiB), so header
# values are cut; the full headers stay in the raw message.
_MAX_HEADER_CHARS = {"sender": 320, "subject": 512, "message_id": 512, "to": 320}
_MSG_ID = re.compile(r"\d{20}-[0-9a-f]{16}")


@dataclass(frozen=True)
class MessageSummary:
    """One line of a mailbox listing."""

    id: str               # our message id (sorts by arrival)
    sender: str           # the From header as displayed, "" if none
    subject: str          # decoded Subject, "" if none
    date: float           # arrival time, unix seconds
    unread: bool
    size: int             # bytes of the raw message
    folder: str           # "inbox", "sent", ...
    message_id: str = ""  # the Message-ID header, for replies (In-Reply-To)
    to: str = ""          # the To header as displayed (Sent lists it; older mail has "")


@dataclass(frozen=True)
class ParsedHeaders:
    """The few headers a listing needs, decoded and flattened to one line each."""

    sender: str
    subject: str
    message_id: str
    to: str = ""


def mailbox_row(user: str) -> str:
    return f"{{{_check_user(user)}}}/mail"


def message_row(user: str, msg_id: str) -> str:
    return f"{{{_check_user(user)}}}/msg:{msg_id}"


def _check_user(user: str) -> str:
    # Braces would change the row's hash tag (and so its shard), "/" its row family.
    if not user or any(ch in user for ch in "{}/"):
        raise ValueError(f"bad user name {user!r}")
    return user


def new_message_id(now_ns: int | None = None) -> str:
    """A fresh message id that sorts by arrival time."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return f"{now_ns:020d}-{secrets.token_hex(8)}"


def is_message_id(msg_id: str) -> bool:
    """Whether ``msg_id`` has our id's shape (ids arrive in URLs: check before use)."""
    return _MSG_ID.fullmatch(msg_id) is not None


def dedup_column(folder: str, message_id: str) -> str:
    """The ``mid:`` column for a Message-ID in a folder.

    The folder is part of the key so that mail a user sends to themselves keeps
    both its "sent" copy and its "inbox" copy.
    """
    digest = hashlib.sha256(f"{folder}\0{message_id}".encode("utf-8", "surrogateescape"))
    return DEDUP_PREFIX + digest.hexdigest()


def parse_headers(raw: bytes) -> ParsedHeaders:
    """Sender, subject and Message-ID of a raw message; never raises on malformed mail."""
    msg = BytesParser(policy=default_policy).parsebytes(raw, headersonly=True)
    sender = _header(msg, "From") or _header(msg, "Return-Path") or _header(msg, "Sender")
    return ParsedHeaders(
        sender=_cut(sender, "sender"),
        subject=_cut(_header(msg, "Subject"), "subject"),
        message_id=_cut(_header(msg, "Message-ID"), "message_id"),
        to=_cut(_header(msg, "To"), "to"),
    )


def header_value(msg: EmailMessage, name: str) -> str:
    """A header decoded (RFC 2047), or its undecoded text if it will not decode."""
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on bad input
        # Fall back to the undecoded value rather than losing the header.
        raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
        return str(raw[0]) if raw else ""


def _header(msg: EmailMessage, name: str) -> str:
    # Unfold, and no control characters reach a listing.
    return " ".join(header_value(msg, name).split())


def _cut(text: str, field: str) -> str:
    limit = _MAX_HEADER_CHARS[field]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def deliver(client: KeyValueStore, user: str, raw: bytes, *, folder: str = "inbox",
            unread: bool = True, quota: int | None = None) -> str:
    """Store a message in ``user``'s ``folder``; returns its message id.

    Delivering a message whose Message-ID is already in that folder stores
    nothing and returns the existing id.  Messages without a Message-ID are
    always stored.  The message's size is added to the mailbox's usage.

    :param quota: refuse the message if usage would exceed it (None: never refuse).
    :raises MailboxFull: it does not fit in ``quota``; nothing was stored.
    :raises UnavailableError: the store is unavailable; nothing visible was
        stored, and delivering again later is safe.
    """
    headers = parse_headers(raw)
    row = mailbox_row(user)
    column = dedup_column(folder, headers.message_id) if headers.message_id else None
    if column is not None:
        # Cheap check first, so that a retried 25 MiB message is not written again.
        existing = client.get(row, column)
        if existing is not None:
            return existing.value.decode("ascii")
    msg_id = new_message_id()
    meta = {"sender": headers.sender, "subject": headers.subject, "date": time.time(),
            "unread": unread, "size": len(raw), "folder": folder,
            "message_id": headers.message_id, "to": headers.to}
    used, version = _usage(client, user)
    if quota is not None and used + len(raw) > quota:
        raise MailboxFull(user)  # before the raw write: a full mailbox costs no upload
    # Raw bytes first: once the metadata is visible, the message must be readable.
    # If we fail between the two writes, the raw cell is an orphan nobody lists.
    client.put(message_row(user, msg_id), RAW_COLUMN, raw)
    for attempt in range(_USAGE_ATTEMPTS):
        if attempt:  # the usage read before the raw write is current for the first try
            used, version = _usage(client, user)
        if quota is not None and used + len(raw) > quota:
            client.delete(message_row(user, msg_id), RAW_COLUMN)
            raise MailboxFull(user)
        conditions: list[tuple[Any, ...]] = [("version", USAGE_COLUMN, version)]
        mutations: list[tuple[Any, ...]] = [("put", META_PREFIX + msg_id, _pack(meta)),
                                            ("put", USAGE_COLUMN, _pack(used + len(raw)))]
        if column is not None:
            conditions.append(("absent", column))
            mutations.append(("put", column, msg_id.encode("ascii")))
        try:
            client.mutate_row(row, conditions, mutations)
            return msg_id
        except ConditionFailed:
            existing = client.get(row, column) if column is not None else None
            if existing is not None:
                # A concurrent delivery of the same message won the race: keep its copy only.
                client.delete(message_row(user, msg_id), RAW_COLUMN)
                return existing.value.decode("ascii")
            time.sleep(random.uniform(0, 0.01))  # another message changed the usage: recount
    client.delete(message_row(user, msg_id), RAW_COLUMN)
    raise ConditionFailed(f"the mailbox of {user} kept changing")


def usage(client: KeyValueStore, user: str) -> int:
    """Bytes of every message in ``user``'s mailbox, all folders."""
    return _usage(client, user)[0]


def has_room(client: KeyValueStore, user: str, size: int, quota: int) -> bool:
    """Whether a message of ``size`` bytes fits in ``user``'s ``quota`` now."""
    return usage(client, user) + size <= quota


def _usage(client: KeyValueStore, user: str) -> tuple[int, int]:
    """``(bytes used, version of the usage cell)``; version 0 when there is no cell yet.

    Without a cell (a mailbox from before quotas, or a new one) the count is
    the sum of the listed sizes: storing it conditioned on version 0 makes it
    the mailbox's counter from then on.
    """
    cell = client.get(mailbox_row(user), USAGE_COLUMN)
    if cell is not None:
        value = _unpack_int(cell.value)
        if value is not None:
            return value, cell.version
    cells = client.get_row(mailbox_row(user), prefix=META_PREFIX)
    total = sum(max(0, int((_unpack(c.value) or {}).get("size", 0) or 0)) for c in cells.values())
    return total, 0 if cell is None else cell.version


def list_messages(client: KeyValueStore, user: str, folder: str = "inbox") -> list[MessageSummary]:
    """The messages in one folder, newest first."""
    cells = client.get_row(mailbox_row(user), prefix=META_PREFIX)
    summaries = [summary for column, cell in cells.items()
                 if (summary := _in_folder(column, cell, folder)) is not None]
    summaries.sort(key=lambda s: s.id, reverse=True)
    return summaries


def every_message(client: KeyValueStore, user: str, *,
                  batch: int = EVERY_MESSAGE_BATCH) -> Iterator[MessageSummary]:
    """Every message of every folder, oldest first, read ``batch`` listings at a time
    (a user's export: memory stays bounded whatever the mailbox's size)."""
    after = ""
    while True:
        cells = client.get_row(mailbox_row(user), prefix=META_PREFIX, after=after, limit=batch)
        for column, cell in cells.items():
            after = column
            summary = _summary(column[len(META_PREFIX):], cell.value)
            if summary is not None:
                yield summary
        if len(cells) < batch:
            return


def _in_folder(column: str, cell: Cell, folder: str) -> MessageSummary | None:
    """The message of a metadata cell, if it is in ``folder``."""
    summary = _summary(column[len(META_PREFIX):], cell.value)
    return summary if summary is not None and summary.folder == folder else None


@dataclass(frozen=True)
class MessagePage:
    """A page of one folder (:func:`list_page`), newest first."""

    messages: list[MessageSummary]
    more: bool    # there may be more beyond them in the direction read (older, or newer)
    resume: str   # with ``more``: the id to read on from in that direction ("" otherwise)


def list_page(client: KeyValueStore, user: str, folder: str = "inbox", *, older_than: str = "",
              newer_than: str = "", limit: int) -> MessagePage:
    """Up to ``limit`` messages of one folder, newest first, without reading the others.

    The messages older than the id ``older_than`` (from the newest if ""), or the
    ``limit`` just newer than ``newer_than``; and whether there may be more beyond
    them (older, or newer).  Ids sort by arrival, so this is ``get_row`` over the
    metadata columns in descending (or ascending) order with a limit.  The folders
    share the columns: a read that finds too few of this folder's reads on, at
    most :data:`PAGE_READS` times (a user's Sent among thousands of received
    messages).  A scan stopped there says "more" and resumes from the last column
    it read, not from the last message it found: what lies beyond it is unread,
    and the folder's older mail must stay reachable however rare it is.
    """
    row = mailbox_row(user)
    reverse = not newer_than
    cursor = META_PREFIX + (newer_than or older_than) if (newer_than or older_than) else ""
    batch = (limit + 1) * PAGE_READ_FACTOR
    found: list[MessageSummary] = []
    exhausted = False
    for _ in range(PAGE_READS):
        cells = client.get_row(row, prefix=META_PREFIX, after=cursor, reverse=reverse,
                               limit=batch)
        for column, cell in cells.items():
            cursor = column
            summary = _in_folder(column, cell, folder)
            if summary is not None:
                found.append(summary)
                if len(found) > limit:
                    break  # one past the page says "more": the rest need not be unpacked
        if len(cells) < batch:
            exhausted = True
        if len(found) > limit or exhausted:
            break
    if len(found) > limit:  # resume after the last message shown
        more, resume = True, found[limit - 1].id
    elif not exhausted:  # stopped on a full batch: resume after the last column read
        more, resume = True, cursor[len(META_PREFIX):]
    else:
        more, resume = False, ""
    found = found[:limit]
    if not reverse:
        found.reverse()
    return MessagePage(found, more, resume)


def get_summary(client: KeyValueStore, user: str, msg_id: str) -> MessageSummary | None:
    """One message's metadata, or None if there is no such message."""
    if not is_message_id(msg_id):
        return None
    cell = client.get(mailbox_row(user), META_PREFIX + msg_id)
    return None if cell is None else _summary(msg_id, cell.value)


def get_message(client: KeyValueStore, user: str, msg_id: str) -> bytes | None:
    """The raw message as received, or None if there is no such message."""
    if not is_message_id(msg_id):
        return None
    cell = client.get(message_row(user, msg_id), RAW_COLUMN)
    return None if cell is None else cell.value


def read_meta(value: bytes) -> bytes:
    """A message's metadata cell with the message marked read (for a CPUT on its version)."""
    return _pack({**(_unpack(value) or {}), "unread": False})


def unread(value: bytes) -> bool:
    """Whether a message's metadata cell says it is unread."""
    return bool((_unpack(value) or {}).get("unread", True))


def mark_read(client: KeyValueStore, user: str, msg_id: str, *, read: bool = True) -> bool:
    """Set a message's unread flag; returns False if there is no such message."""
    return _update_meta(client, user, msg_id, lambda meta: {**meta, "unread": not read})


def delete_message(client: KeyValueStore, user: str, msg_id: str) -> bool:
    """Delete a message, giving its bytes back to the quota; returns whether it existed.

    The ``mid:`` column stays behind on purpose: a late SMTP retry of a message
    the user already deleted must not bring it back.
    """
    if not is_message_id(msg_id):
        return False
    existed = _unlist(client, user, msg_id)
    # Also when the metadata is gone: this cleans up after a half-finished deliver.
    client.delete(message_row(user, msg_id), RAW_COLUMN)
    return existed


def _unlist(client: KeyValueStore, user: str, msg_id: str) -> bool:
    """Remove a message's metadata and subtract its size from the usage, in one mutation."""
    row, column = mailbox_row(user), META_PREFIX + msg_id
    for _ in range(_USAGE_ATTEMPTS):
        meta_cell = client.get(row, column)
        if meta_cell is None:
            return False
        usage_cell = client.get(row, USAGE_COLUMN)
        used = None if usage_cell is None else _unpack_int(usage_cell.value)
        conditions: list[tuple[Any, ...]] = [("version", column, meta_cell.version)]
        mutations: list[tuple[Any, ...]] = [("delete", column)]
        if used is not None and usage_cell is not None:
            # No counter yet: nothing to subtract; it is computed from what is left.
            size = max(0, int((_unpack(meta_cell.value) or {}).get("size", 0) or 0))
            conditions.append(("version", USAGE_COLUMN, usage_cell.version))
            mutations.append(("put", USAGE_COLUMN, _pack(max(0, used - size))))
        try:
            client.mutate_row(row, conditions, mutations)
            return True
        except ConditionFailed:
            time.sleep(random.uniform(0, 0.01))
    raise ConditionFailed(f"the mailbox of {user} kept changing")


def _update_meta(client: KeyValueStore, user: str, msg_id: str,
                 change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """Read-modify-write of one message's metadata, as a CPUT on its version.

    A concurrent change (another frontend marking the same message) makes the
    CPUT fail; we re-read and re-apply ours on top, so neither change is lost.
    """
    if not is_message_id(msg_id):
        return False
    row, column = mailbox_row(user), META_PREFIX + msg_id
    for _ in range(_CAS_ATTEMPTS):
        cell = client.get(row, column)
        if cell is None:
            return False
        meta = _unpack(cell.value)
        if meta is None:
            return False
        new = change(meta)
        if new == meta:
            return True
        try:
            client.cput(row, column, _pack(new), if_version=cell.version)
            return True
        except ConditionFailed:
            continue
    raise ConditionFailed(f"message {msg_id} of {user} keeps changing")


def _pack(meta: dict[str, Any] | int) -> bytes:
    return msgpack.packb(meta, use_bin_type=True)


def _unpack_int(value: bytes) -> int | None:
    try:
        number = msgpack.unpackb(value)
    except (ValueError, msgpack.UnpackException):
        return None
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def _unpack(value: bytes) -> dict[str, Any] | None:
    try:
        meta = msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException):
        meta = None
    return meta if isinstance(meta, dict) else None


def summary_of(msg_id: str, value: bytes) -> MessageSummary | None:
    """A metadata cell's value (``META_PREFIX + msg_id``) as its summary; None if malformed."""
    return _summary(msg_id, value)


def _summary(msg_id: str, value: bytes) -> MessageSummary | None:
    meta = _unpack(value)
    try:
        if meta is None:
            raise ValueError("not a msgpack map")
        return MessageSummary(
            id=msg_id, sender=str(meta.get("sender", "")), subject=str(meta.get("subject", "")),
            date=float(meta["date"]), unread=bool(meta.get("unread", True)),
            size=int(meta.get("size", 0)), folder=str(meta.get("folder", "inbox")),
            message_id=str(meta.get("message_id", "")), to=str(meta.get("to", "")))
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("skipping malformed mailbox entry %s: %s", msg_id, exc)
        return None

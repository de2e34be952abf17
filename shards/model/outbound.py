"""Sending mail: local copies, the sender's Sent copy, and a queue for remote domains.

:func:`submit` is the one path for mail a user sends, from the webmail or
through smtpd's submission port.  Local recipients get their copy at once;
remote ones go through a queue in the store that any smtpd instance works
(:mod:`smtpd.outbound`), so a queued message survives every process restart.

Layout (one hash tag, so the queue row and the messages share a shard)::

    row {outbound}/queue     column e:<id>   msgpack entry: sender, recipients, attempts,
                                             next try, lease, last error
    row {outbound}/msg:<id>  column raw:<n>  the message as submitted (any size); <n> is
                                             fresh per enqueue, so finishing one delivery
                                             never deletes the bytes of a resubmission

A worker *claims* an entry by a CPUT on its version that sets a lease; a
worker that dies mid-delivery loses its lease and the next one delivers again
-- remote delivery is at least once, as SMTP itself is.  Entry ids are derived
from the sender, the Message-ID and the recipients, so submitting the same
message twice (a client retrying after a lost 250) queues it once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import msgpack

from raftkv.errors import ConditionFailed

from . import mailbox

if TYPE_CHECKING:
    from shards import Client

QUEUE_ROW = "{outbound}/queue"
ENTRY_PREFIX = "e:"
RAW_COLUMN = "raw"


def message_row(entry_id: str) -> str:
    return "{outbound}/msg:" + entry_id


@dataclass(frozen=True)
class Entry:
    """One queued message and what is left to do for it."""

    id: str
    sender: str                    # envelope sender (a local address; "" for a bounce)
    recipients: tuple[str, ...]    # remote recipients still to deliver to
    created: float                 # epoch seconds
    next_try: float = 0.0          # not before this time
    attempts: int = 0
    lease_until: float = 0.0       # claimed by ``owner`` until this time
    owner: str = ""
    last_error: str = ""
    raw_column: str = RAW_COLUMN   # where in message_row(id) the bytes are
    version: int = field(default=0, compare=False)  # the cell's version when read


def _pack(entry: Entry) -> bytes:
    record = asdict(entry)
    record.pop("version")
    record["recipients"] = list(entry.recipients)
    return msgpack.packb(record, use_bin_type=True)


def _unpack(value: bytes, version: int) -> Entry:
    record = msgpack.unpackb(value, raw=False)
    record["recipients"] = tuple(record["recipients"])
    return Entry(**record, version=version)


def entry_id(sender: str, message_id: str, recipients: list[str] | tuple[str, ...]) -> str:
    seed = "\0".join([sender, message_id, *sorted(recipients)]).encode()
    return hashlib.sha256(seed).hexdigest()[:32]


def enqueue(client: Client, sender: str, recipients: list[str], raw: bytes, *,
            message_id: str = "", now: float | None = None) -> str:
    """Queue ``raw`` for remote ``recipients``; idempotent per (sender, Message-ID, recipients)."""
    now = time.time() if now is None else now
    ident = entry_id(sender, message_id or hashlib.sha256(raw).hexdigest(), recipients)
    column = ENTRY_PREFIX + ident
    if client.get(QUEUE_ROW, column) is not None:
        return ident
    # The bytes first: an entry is only ever visible with its message readable.
    raw_column = f"{RAW_COLUMN}:{secrets.token_hex(8)}"
    client.put(message_row(ident), raw_column, raw)
    entry = Entry(id=ident, sender=sender, recipients=tuple(recipients), created=now,
                  raw_column=raw_column)
    try:
        client.mutate_row(QUEUE_ROW, [("absent", column)], [("put", column, _pack(entry))])
    except ConditionFailed:
        # A concurrent submission of the same message queued it, with its own copy.
        client.delete(message_row(ident), raw_column)
    return ident


def pending(client: Client) -> list[Entry]:
    """Every queued entry, oldest first."""
    cells = client.get_row(QUEUE_ROW, prefix=ENTRY_PREFIX)
    entries = [_unpack(cell.value, cell.version) for cell in cells.values()]
    return sorted(entries, key=lambda e: (e.created, e.id))


def due(client: Client, now: float | None = None) -> list[Entry]:
    """Entries whose time has come and that nobody holds a live lease on."""
    now = time.time() if now is None else now
    return [e for e in pending(client) if e.next_try <= now and e.lease_until <= now]


def claim(client: Client, entry: Entry, owner: str, lease: float,
          now: float | None = None) -> Entry | None:
    """Take ``entry`` for ``lease`` seconds; None if another worker changed it first."""
    now = time.time() if now is None else now
    mine = replace(entry, owner=owner, lease_until=now + lease)
    try:
        version = client.cput(QUEUE_ROW, ENTRY_PREFIX + entry.id, _pack(mine),
                              if_version=entry.version)
    except ConditionFailed:
        return None
    return replace(mine, version=version)


def raw_message(client: Client, entry: Entry) -> bytes | None:
    cell = client.get(message_row(entry.id), entry.raw_column)
    return None if cell is None else cell.value


def finish(client: Client, entry: Entry) -> bool:
    """Remove a delivered (or bounced) entry we hold; False if we had lost it."""
    try:
        client.mutate_row(QUEUE_ROW, [("version", ENTRY_PREFIX + entry.id, entry.version)],
                          [("delete", ENTRY_PREFIX + entry.id)])
    except ConditionFailed:
        return False
    client.delete(message_row(entry.id), entry.raw_column)
    return True


def postpone(client: Client, entry: Entry, recipients: list[str], error: str,
             delay: float, now: float | None = None) -> bool:
    """Keep ``recipients`` queued for another try after ``delay`` seconds."""
    now = time.time() if now is None else now
    later = replace(entry, recipients=tuple(recipients), attempts=entry.attempts + 1,
                    next_try=now + delay, lease_until=0.0, owner="", last_error=error[:500])
    try:
        client.cput(QUEUE_ROW, ENTRY_PREFIX + entry.id, _pack(later), if_version=entry.version)
    except ConditionFailed:
        return False
    return True


@dataclass(frozen=True)
class Submission:
    """Where a submitted message went."""

    local: dict[str, str]          # account -> message id in its inbox
    sent_id: str                   # the sender's copy in "sent"
    queued: str | None             # outbound entry id, if any recipient is remote


def submit(client: Client, user: str, sender: str, recipients: list[str], raw: bytes, *,
           domains: tuple[str, ...]) -> Submission:
    """Deliver ``raw`` from ``user`` (envelope ``sender``) to ``recipients``.

    Every step is idempotent by Message-ID, so a caller that dies half-way and
    submits again leaves exactly one copy in each of our mailboxes.  The caller
    has checked that local recipients have accounts.
    """
    local: dict[str, str] = {}
    remote: list[str] = []
    for address in recipients:
        name, _, domain = address.rpartition("@")
        if domain.lower().rstrip(".") in domains:
            local.setdefault(name.lower(), address)
        else:
            remote.append(address)
    headers = mailbox.parse_headers(raw)
    queued = None
    if remote:
        queued = enqueue(client, sender, remote, raw, message_id=headers.message_id)
    delivered = {name: mailbox.deliver(client, name, raw) for name in local}
    sent_id = mailbox.deliver(client, user, raw, folder="sent", unread=False)
    return Submission(local=delivered, sent_id=sent_id, queued=queued)

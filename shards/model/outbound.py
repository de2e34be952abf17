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

Recipients given up on are also noted for the admin console, for a week::

    row {outbound}/bounced  column b:<id>.<attempt>  msgpack: sender, recipients, why, when

A worker *claims* an entry by a CPUT on its version that sets a lease; a
worker that dies mid-delivery loses its lease and the next one delivers again
-- remote delivery is at least once, as SMTP itself is.  Entry ids are derived
from the sender, the Message-ID and the recipients, so submitting the same
message twice (a client retrying after a lost 250) queues it once.
"""

from __future__ import annotations

import email.utils
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING

import msgpack

from raftkv.errors import ConditionFailed

from . import mailbox
from .errors import MailboxFull, SenderMailboxFull

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

QUEUE_ROW = "{outbound}/queue"
BOUNCED_ROW = "{outbound}/bounced"
BOUNCE_KEPT = 7 * 86400.0  # seconds a bounce stays listed (the cell's ttl)
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


def enqueue(client: KeyValueStore, sender: str, recipients: list[str], raw: bytes, *,
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


def pending(client: KeyValueStore) -> list[Entry]:
    """Every queued entry, oldest first."""
    cells = client.get_row(QUEUE_ROW, prefix=ENTRY_PREFIX)
    entries = [_unpack(cell.value, cell.version) for cell in cells.values()]
    return sorted(entries, key=lambda e: (e.created, e.id))


def due(client: KeyValueStore, now: float | None = None) -> list[Entry]:
    """Entries whose time has come and that nobody holds a live lease on."""
    now = time.time() if now is None else now
    return [e for e in pending(client) if e.next_try <= now and e.lease_until <= now]


def claim(client: KeyValueStore, entry: Entry, owner: str, lease: float,
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


def raw_message(client: KeyValueStore, entry: Entry) -> bytes | None:
    cell = client.get(message_row(entry.id), entry.raw_column)
    return None if cell is None else cell.value


def finish(client: KeyValueStore, entry: Entry) -> bool:
    """Remove a delivered (or bounced) entry we hold; False if we had lost it."""
    try:
        client.mutate_row(QUEUE_ROW, [("version", ENTRY_PREFIX + entry.id, entry.version)],
                          [("delete", ENTRY_PREFIX + entry.id)])
    except ConditionFailed:
        return False
    client.delete(message_row(entry.id), entry.raw_column)
    return True


def postpone(client: KeyValueStore, entry: Entry, recipients: list[str], error: str,
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
class Bounce:
    """Recipients of one queued message that were given up on."""

    id: str
    sender: str
    failed: dict[str, str]   # recipient -> why
    when: float

    @property
    def expires(self) -> float:
        """When the note leaves the list (its cell's ttl)."""
        return self.when + BOUNCE_KEPT


def note_bounce(client: KeyValueStore, entry: Entry, failed: dict[str, str],
                now: float | None = None) -> None:
    """Keep ``failed`` for the admin console's list for :data:`BOUNCE_KEPT` seconds.

    Keyed by the entry and its attempt, so a worker that dies after noting it and
    bounces again writes the same cell.
    """
    now = time.time() if now is None else now
    record = {"sender": entry.sender, "failed": {r: why[:500] for r, why in failed.items()},
              "when": now}
    client.put(BOUNCED_ROW, f"b:{entry.id}.{entry.attempts}",
               msgpack.packb(record, use_bin_type=True), ttl=BOUNCE_KEPT)


def bounced(client: KeyValueStore) -> list[Bounce]:
    """The bounces of the last :data:`BOUNCE_KEPT` seconds, newest first."""
    found = []
    for column, cell in client.get_row(BOUNCED_ROW, prefix="b:").items():
        try:
            record = msgpack.unpackb(cell.value, raw=False)
            found.append(Bounce(column[2:], str(record["sender"]), dict(record["failed"]),
                                float(record["when"])))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            continue  # not ours to crash on: the list shows what it can
    return sorted(found, key=lambda b: -b.when)


@dataclass(frozen=True)
class Submission:
    """Where a submitted message went."""

    local: dict[str, str]          # account -> message id in its inbox
    sent_id: str                   # the sender's copy in "sent"
    queued: str | None             # outbound entry id, if any recipient is remote


_NAMED_SENDER = (b"from", b"sender")  # the header fields that say who wrote a message
_DISPLAY_NAME_CHARS = 78


def own_addresses(user: str, domains: tuple[str, ...]) -> set[str]:
    """Every address of ``user``: their name at each of our domains (lowercase)."""
    return {f"{user}@{domain}".lower() for domain in domains}


def with_own_from(raw: bytes, address: str, own: set[str]) -> bytes:
    """``raw`` with a From that names ``address``, unless it names only one of ``own`` already.

    Nobody sends as someone else: a From (or Sender) with any other address
    is replaced by one From with ``address`` and the display name the user
    chose, re-encoded (RFC 2047 when not ASCII) so that it cannot carry a
    line break.  A message that already names its user is left byte for byte.
    """
    end = _header_end(raw)
    head = raw[:end]
    fields = _fields(head)
    named = [value for name, value in fields if name in _NAMED_SENDER]
    display = ""
    try:
        parsed = BytesHeaderParser(policy=default_policy).parsebytes(head + b"\r\n")
        addresses = [a for value in parsed.get_all("From") or [] for a in value.addresses]
        if (len(named) == 1 and len(addresses) == 1 and parsed.get("Sender") is None
                and addresses[0].addr_spec.lower() in own):
            return raw
        display = addresses[0].display_name if addresses else ""
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on bad headers
        pass
    display = "".join(c for c in display if c.isprintable())[:_DISPLAY_NAME_CHARS].strip()
    eol = b"\r\n" if b"\r\n" in raw[:end + 2] or not head else b"\n"
    line = b"From: " + email.utils.formataddr((display, address), charset="utf-8").encode(
        "ascii") + eol
    kept = b"".join(text for name, text in fields if name not in _NAMED_SENDER)
    return line + kept + raw[end:]


def _header_end(raw: bytes) -> int:
    """Where the header section of ``raw`` ends (the blank line is not part of it)."""
    ends = [i + len(sep) // 2 for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    return min(ends) if ends else len(raw)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of ``head`` as (lowercase name, text with its folded lines)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            name, text = fields[-1]
            fields[-1] = (name, text + line)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower(), line))
    return fields


def submit(client: KeyValueStore, user: str, sender: str, recipients: list[str], raw: bytes, *,
           domains: tuple[str, ...], quota: int | None = None) -> Submission:
    """Deliver ``raw`` from ``user`` (envelope ``sender``) to ``recipients``.

    The message's From is the user's own address (:func:`with_own_from`),
    whatever the client wrote.  Every step is idempotent by Message-ID, so a
    caller that dies half-way and submits again leaves exactly one copy in
    each of our mailboxes.  The caller has checked that local recipients
    have accounts.

    :param quota: the mailbox quota, of local recipients and of the sender,
        whose Sent copy must fit too (else an account over its quota could
        go on filling the store through its Sent folder).
    :raises SenderMailboxFull: the sender's own mailbox has no room for the
        Sent copy; nothing was sent.
    :raises MailboxFull: a local recipient has no room; checked before
        anything is stored (a race with another delivery may still end it half-way).
    """
    own = own_addresses(user, domains)
    raw = with_own_from(raw, sender if sender.lower() in own else f"{user}@{domains[0]}", own)
    local: dict[str, str] = {}
    remote: list[str] = []
    for address in recipients:
        name, _, domain = address.rpartition("@")
        if domain.lower().rstrip(".") in domains:
            local.setdefault(name.lower(), address)
        else:
            remote.append(address)
    if quota is not None:
        if not mailbox.has_room(client, user, len(raw), quota):
            raise SenderMailboxFull(user)
        for name in local:
            if not mailbox.has_room(client, name, len(raw), quota):
                raise MailboxFull(name, f"{name}@{domains[0]}")
    headers = mailbox.parse_headers(raw)
    queued = None
    if remote:
        queued = enqueue(client, sender, remote, raw, message_id=headers.message_id)
    delivered = {}
    for name in local:
        try:
            delivered[name] = mailbox.deliver(client, name, raw, quota=quota)
        except MailboxFull:  # filled by a delivery since the check above
            raise MailboxFull(name, f"{name}@{domains[0]}") from None
    sent_id = mailbox.deliver(client, user, raw, folder="sent", unread=False)
    return Submission(local=delivered, sent_id=sent_id, queued=queued)

"""What a message's header tells the mailbox: the few fields a listing shows, and its header block.

Never raises on malformed mail: whatever arrives over SMTP or IMAP APPEND gets
stored, and a field that will not decode is kept undecoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.message import EmailMessage

# A record is a small Raft cell (docs/store-promises.md, "Sizes": an entry stays under 32 KiB,
# and a batch of records shares one), so header values are cut: by characters as the listing
# always did, then by UTF-8 bytes so that a subject of 512 emoji is not 2 KiB.  The full
# headers stay in the raw message (and its header block).
MAX_HEADER_CHARS = {"sender": 320, "subject": 512, "message_id": 512, "to": 320, "cc": 320,
                    "in_reply_to": 512}
MAX_HEADER_BYTES = {"sender": 640, "subject": 1024, "message_id": 512, "to": 640, "cc": 640,
                    "in_reply_to": 512}
MAX_HEADER_BLOCK = 64 * 1024  # a longer header block is not stored apart: readers use raw
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class ParsedHeaders:
    """The few headers a listing needs, decoded and flattened to one line each."""

    sender: str
    subject: str
    message_id: str
    to: str = ""
    cc: str = ""
    in_reply_to: str = ""


def parse_headers(raw: bytes) -> ParsedHeaders:
    """Sender, subject, Message-ID, To, Cc and In-Reply-To of a raw message; never raises."""
    msg = BytesParser(policy=default_policy).parsebytes(raw, headersonly=True)
    sender = _header(msg, "From") or _header(msg, "Return-Path") or _header(msg, "Sender")
    return ParsedHeaders(
        sender=cut(sender, "sender"),
        subject=cut(_header(msg, "Subject"), "subject"),
        message_id=cut(_header(msg, "Message-ID"), "message_id"),
        to=cut(_header(msg, "To"), "to"),
        cc=cut(_header(msg, "Cc"), "cc"),
        in_reply_to=cut(_header(msg, "In-Reply-To"), "in_reply_to"),
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


def header_block(raw: bytes, limit: int | None = MAX_HEADER_BLOCK) -> bytes | None:
    """The header section of ``raw`` with the blank line that ends it (all of ``raw`` when
    there is no body); None when it is longer than ``limit`` bytes."""
    found = _BLANK_LINE.search(raw, 0, len(raw) if limit is None else limit + 4)
    block = raw[:found.end()] if found is not None else raw
    return block if limit is None or len(block) <= limit else None


def blank_line_end(data: bytes, start: int = 0) -> int | None:
    """Where the header section of ``data`` ends (after its blank line), looking from
    ``start``; None if no blank line follows it."""
    found = _BLANK_LINE.search(data, start)
    return None if found is None else found.end()


def cut(text: str, field: str) -> str:
    """``text`` cut to the field's limits in characters and in UTF-8 bytes ("…" marks a cut).

    Lone surrogates (undecodable bytes the parser kept) become "?": msgpack cannot store them.
    """
    limit = MAX_HEADER_CHARS[field]
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    encoded = text.encode("utf-8", "replace")
    budget = MAX_HEADER_BYTES[field]
    if len(encoded) <= budget:
        return encoded.decode("utf-8")
    return encoded[:budget - 3].decode("utf-8", "ignore") + "…"


def _header(msg: EmailMessage, name: str) -> str:
    # Unfold, and no control characters reach a listing.
    return " ".join(header_value(msg, name).split())

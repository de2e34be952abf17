"""The mailbox's word index: what a message's words are, and keeping them beside the messages.

One row per user, ``{user}/mailidx`` (the same hash tag as the mailbox: the
same shard), apart from the mailbox row so that the records stay a small
row to list::

    w:<token>:<msg_id>   empty: the message holds a word that is ``token``
    t:<msg_id>           the message's tokens (msgpack list): what removing it deletes;
                         present means the message is indexed
    backfill             the backfill's cursor: the last ``m:`` pointer it looked at
    done                 every message of the mailbox is indexed (new ones are, as they arrive)

A message's tokens are the words of its From, To, Cc and Subject and of its text
(text/plain parts, and text/html parts with the markup stripped): NFKC,
casefolded, split on anything not a letter or digit, words of 2 characters or
more, each cut to :data:`MAX_TOKEN` characters, at most :data:`MAX_TOKENS`
distinct ones from the first :data:`MAX_TEXT` characters of text read from the
first :data:`MAX_PARSE` bytes of the message: the cost of a message is bounded
whatever its size.  The puts go in mutations of at most :data:`~.layout.BATCH_BYTES`
(a Raft entry stays under 32 KiB), ``t:`` last, so a message with ``t:`` has all
its words (a crash before it leaves words the next indexing writes again).

:func:`index_message` runs before a message is listed (delivery, APPEND, copy),
so a listed message is indexed unless it was stored before the index (or by a
frontend without it): :func:`backfill` finds those, a bounded number per call,
and marks the mailbox ``done`` once none is left.  :func:`unindex` runs after
an expunge, best effort: search results always go through the mailbox's ``m:``
pointers, so a stale word never shows.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Iterable
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import TYPE_CHECKING

import nh3

from raftkv.errors import RaftKVError
from raftkv.interface import MAX_CELLS

from .headers import ParsedHeaders, parse_headers
from .layout import (
    BATCH_BYTES,
    POINTER_PREFIX,
    RAW_COL,
    check_user,
    mailbox_row,
    message_row,
    pack,
    pointer_col,
    unpack,
)
from .reads import read_cells

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore, Mutation

log = logging.getLogger("shards.model.mail.index")

WORD_PREFIX = "w:"
TOKENS_PREFIX = "t:"
BACKFILL_COL = "backfill"
DONE_COL = "done"
MIN_TOKEN, MAX_TOKEN = 2, 40   # characters of a token (a longer word is cut: prefixes still match)
MAX_TOKENS = 2000              # distinct tokens of one message
MAX_TEXT = 256 * 1024          # characters of text one message gives the index
MAX_PARSE = 1024 * 1024        # bytes of a message parsed for its text
MAX_PARTS = 200                # MIME parts looked at
INLINE_TOKENS = 16 * 1024      # a longer t: cell is written on its own (a blob), not in a batch
BACKFILL_POINTERS = 256        # pointers one backfill call looks at...
BACKFILL_MESSAGES = 20         # ...and messages it indexes, at most
_SPLIT = re.compile(r"[\W_]+")  # \W: not a letter or digit (or "_", which \w counts)
_BLOCK_TAG = re.compile(r"</?(?:p|div|br|li|td|th|tr|h[1-6]|table|ul|ol|blockquote|hr|pre|"
                        r"section|article|header|footer|title)\b", re.IGNORECASE)


def index_row(user: str) -> str:
    return f"{{{check_user(user)}}}/mailidx"


def word_col(token: str, msg_id: str) -> str:
    return f"{WORD_PREFIX}{token}:{msg_id}"


def tokens_col(msg_id: str) -> str:
    return TOKENS_PREFIX + msg_id


def msg_id_of(word_column: str) -> str:
    """The message id of a ``w:<token>:<msg_id>`` column (tokens hold no ":")."""
    return word_column.rsplit(":", 1)[1]


# -- words --------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """``text`` as the index compares it: NFKC, casefolded (so "Straße" is "strasse")."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def words(text: str) -> list[str]:
    """Every word of ``text`` (normalised, split on anything not a letter or digit), in order,
    any length; :func:`tokens` keeps those the index holds."""
    return [w for w in _SPLIT.split(normalise(text)) if w]


def tokens(texts: Iterable[str], limit: int = MAX_TOKENS) -> list[str]:
    """The distinct index tokens of ``texts``, in order of first appearance: words of at
    least :data:`MIN_TOKEN` characters cut to :data:`MAX_TOKEN`, at most ``limit`` of them,
    from the first :data:`MAX_TEXT` characters."""
    found: dict[str, None] = {}
    budget = MAX_TEXT
    for text in texts:
        if budget <= 0:
            break
        text = text[:budget]
        budget -= len(text)
        for word in words(text):
            if len(word) >= MIN_TOKEN:
                found.setdefault(word[:MAX_TOKEN])
                if len(found) >= limit:
                    return list(found)
    return list(found)


def html_text(markup: str) -> str:
    """The text of HTML ``markup``: tags dropped (scripts and styles with their content),
    entities decoded, a space where a block ends; never raises.  nh3 (linear time), not
    the standard library's HTMLParser, which takes seconds over 60 KB of unclosed tags."""
    spaced = _BLOCK_TAG.sub(r" \g<0>", markup)
    return html.unescape(nh3.clean(spaced, tags=set()))


def body_texts(raw: bytes) -> list[str]:
    """The text of a message's text/plain and text/html parts (not attachments), decoded
    from its transfer encoding and charset (an unknown charset as UTF-8, errors replaced),
    from its first :data:`MAX_PARSE` bytes; never raises."""
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw[:MAX_PARSE])
        parts = [p for n, p in zip(range(MAX_PARTS), msg.walk(), strict=False)]
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on bad input
        return []
    texts: list[str] = []
    budget = MAX_TEXT
    for part in parts:
        if budget <= 0:
            break
        text = _part_text(part)
        if text:
            texts.append(text[:budget])
            budget -= len(texts[-1])
    return texts


def _part_text(part: Message) -> str:
    try:
        if part.is_multipart() or part.get_content_maintype() != "text":
            return ""
        if (part.get("Content-Disposition") or "").strip().lower().startswith("attachment"):
            return ""
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html"):
            return ""
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return ""
        text = _decode(payload, part.get_content_charset() or "utf-8")
    except Exception:  # noqa: BLE001 - a broken part gives no words, not a failed delivery
        return ""
    return html_text(text[:MAX_TEXT]) if subtype == "html" else text


def _decode(payload: bytes, charset: str) -> str:
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):  # unknown, or not a text encoding ("zlib")
        return payload.decode("utf-8", "replace")


def message_tokens(raw: bytes, headers: ParsedHeaders | None = None) -> list[str]:
    """The index tokens of a raw message: its From, To, Cc and Subject, then its text."""
    headers = parse_headers(raw[:MAX_PARSE]) if headers is None else headers
    return tokens([headers.sender, headers.to, headers.cc, headers.subject, *body_texts(raw)])


# -- upkeep -------------------------------------------------------------------------------


def _put_size(column: str) -> int:
    return len(column.encode("utf-8")) + 16  # the column, and a put's framing


def _write(client: KeyValueStore, user: str, msg_id: str, found: list[str]) -> int:
    """Put a message's words, then its ``t:`` cell; the number of mutations written."""
    row = index_row(user)
    listing = pack(found)
    batches: list[list[Mutation]] = [[]]
    size = 0
    for token in found:
        column = word_col(token, msg_id)
        if size + _put_size(column) > BATCH_BYTES and batches[-1]:
            batches.append([])
            size = 0
        batches[-1].append(("put", column, b""))
        size += _put_size(column)
    inline = len(listing) <= INLINE_TOKENS and size + len(listing) + 64 <= BATCH_BYTES
    if inline:
        batches[-1].append(("put", tokens_col(msg_id), listing))
    for batch in batches:
        if batch:
            client.mutate_row(row, [], batch)
    if not inline:
        client.put(row, tokens_col(msg_id), listing)
    return len([b for b in batches if b]) + (not inline)


def index_message(client: KeyValueStore, user: str, msg_id: str, raw: bytes,
                  headers: ParsedHeaders | None = None) -> list[str]:
    """Index message ``msg_id`` (before it is listed); its tokens.

    :raises UnavailableError: the store is unavailable (the caller has not listed it yet).
    """
    found = message_tokens(raw, headers)
    _write(client, user, msg_id, found)
    return found


def index_copy(client: KeyValueStore, user: str, source_id: str, copy_id: str) -> None:
    """Index ``copy_id``, a copy of ``source_id``: the source's tokens if it has them, else
    the copy's bytes (at most :data:`MAX_PARSE` of them read)."""
    cell = client.get(index_row(user), tokens_col(source_id))
    found = _token_list(None if cell is None else cell.value)
    if found is None:
        found = message_tokens(read_head(client, user, copy_id))
    _write(client, user, copy_id, found)


def read_head(client: KeyValueStore, user: str, msg_id: str, limit: int = MAX_PARSE) -> bytes:
    """The first ``limit`` bytes of a message (b"" if it has none), read chunk by chunk."""
    found = client.get_stream(message_row(user, msg_id), RAW_COL)
    if found is None:
        return b""
    head = bytearray()
    for chunk in found[1]:
        head += chunk[:limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


def _token_list(value: bytes | None) -> list[str] | None:
    found = None if value is None else unpack(value)
    if isinstance(found, list) and all(isinstance(t, str) for t in found):
        return found
    return None


def unindex(client: KeyValueStore, user: str, msg_ids: Iterable[str]) -> None:
    """Remove messages' words and ``t:`` cells (after they left the mailbox), best effort:
    a failure is logged and leaves stale words, which searches never show."""
    row = index_row(user)
    wanted = list(dict.fromkeys(msg_ids))
    try:
        for start in range(0, len(wanted), MAX_CELLS):
            chunk = wanted[start:start + MAX_CELLS]
            cells = read_cells(client, [(row, tokens_col(m)) for m in chunk])
            for msg_id, cell in zip(chunk, cells, strict=True):
                if cell is not None:
                    _delete(client, row, msg_id, _token_list(cell.value) or [])
    except RaftKVError as exc:
        log.warning("the index of %s keeps stale words: %s: %s", user, type(exc).__name__, exc)


def _delete(client: KeyValueStore, row: str, msg_id: str, found: list[str]) -> None:
    batch: list[Mutation] = []
    size = 0
    for token in found:
        column = word_col(token, msg_id)
        if size + _put_size(column) > BATCH_BYTES and batch:
            client.mutate_row(row, [], batch)
            batch, size = [], 0
        batch.append(("delete", column))
        size += _put_size(column)
    client.mutate_row(row, [], [*batch, ("delete", tokens_col(msg_id))])  # t: last


# -- the backfill of messages stored before the index ------------------------------------


def is_done(client: KeyValueStore, user: str) -> bool:
    """Whether every message of the mailbox is indexed."""
    return client.get(index_row(user), DONE_COL) is not None


def unindexed(client: KeyValueStore, user: str, msg_ids: Iterable[str]) -> set[str]:
    """Those of ``msg_ids`` without a ``t:`` cell (not indexed yet)."""
    row = index_row(user)
    wanted = list(dict.fromkeys(msg_ids))
    cells = read_cells(client, [(row, tokens_col(m)) for m in wanted])
    return {m for m, cell in zip(wanted, cells, strict=True) if cell is None}


def backfill(client: KeyValueStore, user: str, *, pointers: int = BACKFILL_POINTERS,
             messages: int = BACKFILL_MESSAGES) -> bool:
    """Index some of the messages stored before the index; whether more may remain (call
    again).  Bounded work: one read of up to ``pointers`` ``m:`` pointers after the saved
    cursor, their ``t:`` cells, and at most ``messages`` messages indexed (each at most
    :data:`MAX_PARSE` bytes read).  Pointers, not records: a message keeps its id (and
    pointer) when it moves, so one moved behind the cursor was seen all the same, and
    messages arriving meanwhile are indexed as they arrive.  Past the last pointer the
    mailbox is marked ``done``."""
    row = index_row(user)
    state = read_cells(client, [(row, DONE_COL), (row, BACKFILL_COL)])
    if state[0] is not None:
        return False
    after = state[1].value.decode("ascii", "replace") if state[1] is not None else ""
    cells = client.get_row(mailbox_row(user), prefix=POINTER_PREFIX, after=after, limit=pointers)
    ids = [column[len(POINTER_PREFIX):] for column in cells]
    missing = unindexed(client, user, ids)
    cursor = after
    for msg_id in ids:
        if msg_id in missing:
            if messages <= 0:
                break
            messages -= 1
            if client.get(mailbox_row(user), pointer_col(msg_id)) is not None:  # not gone since
                _write(client, user, msg_id, message_tokens(read_head(client, user, msg_id)))
        cursor = pointer_col(msg_id)
    if len(ids) < pointers and cursor == (pointer_col(ids[-1]) if ids else after):
        client.mutate_row(row, [], [("put", DONE_COL, b"1"), ("delete", BACKFILL_COL)])
        return False
    if cursor != after:
        client.put(row, BACKFILL_COL, cursor.encode("ascii"))
    return True


__all__ = ["backfill", "body_texts", "html_text", "index_copy", "index_message", "index_row",
           "is_done", "message_tokens", "normalise", "read_head", "tokens", "unindex",
           "unindexed", "words"]

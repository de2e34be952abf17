"""Messages as pymap sees them: a record of the mail model, and its bytes when asked for.

A :class:`Message` is made from a :class:`shards.model.mail.Record` (UID,
flags, internal date, size) without reading the message; FETCH and SEARCH
ask for its content through :meth:`Message.load_content` only when they need
it, and only as much as they need:

* **Headers only** (ENVELOPE, ``BODY.PEEK[HEADER.FIELDS (...)]``, SEARCH FROM):
  the ``hdr`` cells the model keeps apart from the bodies, fetched by
  :class:`ContentLoader` for a window of :data:`HEADER_WINDOW` messages at a
  time (one ``get_cells`` a window): a client listing 10,000 messages costs
  tens of round trips, not 10,000, and holds one window in memory.  pymap
  asks for the whole message for ``BODY.PEEK[HEADER...]``; the FETCH's own
  attributes say what it needs (:func:`_needed`).  Only the header of a block
  is parsed (:func:`_header_only`).
* **RFC822.SIZE** is the record's size; pymap would read the whole message
  for it (its parser counts a size as content), so a FETCH whose only
  content attribute is a size is served from the record.
* **The body**: the raw message, one at a time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymap.context import current_command
from pymap.message import BaseLoadedMessage, BaseMessage
from pymap.mime import MessageBody, MessageContent, MessageHeader
from pymap.parsing.command.select import FetchCommand
from pymap.parsing.specials import FetchAttribute, FetchRequirement, Flag, ObjectId

from shards.model import mail

if TYPE_CHECKING:
    from pymap.interfaces.message import CachedMessage

    from .store import StoreCalls

log = logging.getLogger(__name__)

HEADER_WINDOW = 200  # header blocks read at once for a FETCH or SEARCH over many messages
_SIZE_ONLY = {b"RFC822.SIZE"}  # content attributes the record alone answers
_BODY_SECTIONS = {b"BODY", b"BODY.PEEK"}
_HEADER_SPECIFIERS = {b"HEADER", b"HEADER.FIELDS", b"HEADER.FIELDS.NOT"}  # header block only
# One empty body for every header-only message: making one parses a default Content-Type
# (a fifth of a header FETCH's time), and nothing changes a body once made.
_EMPTY_BODY = MessageBody.empty()
# No EMAILID/THREADID (RFC 8474 is not offered): one shared "none" instead of pymap making
# two per message, a fifth of the time a SELECT of 10,000 spends making messages.
_NO_ID = ObjectId(None)
# The FETCH command whose need this connection worked out last, and that need
# (pymap sets current_command in the connection's task, so this is per connection too).
_fetch_need: ContextVar[tuple[Any, FetchRequirement] | None] = ContextVar("fetch_need",
                                                                          default=None)


def flags_of(record: mail.Record) -> frozenset[Flag]:
    return _flag_set(record.flags)


@functools.lru_cache(maxsize=4096)
def _flag_set(flags: tuple[str, ...]) -> frozenset[Flag]:
    # A folder's messages share a handful of flag sets; making the Flags anew for each
    # message was half the time of a SELECT of 10,000.
    return frozenset(Flag(flag.encode("ascii", "replace")) for flag in flags)


class ContentLoader:
    """Reads the bytes of one user's messages for pymap, windows of headers at once.

    :meth:`expect` names the messages a command is about to load, in its order,
    so a header miss reads that message's window instead of one cell.
    """

    def __init__(self, calls: StoreCalls, user: str) -> None:
        self._calls = calls
        self._user = user
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self._headers: dict[str, bytes] = {}

    def expect(self, msg_ids: Iterable[str]) -> None:
        self._order = list(msg_ids)
        self._position = {msg_id: i for i, msg_id in enumerate(self._order)}
        self._headers = {}

    async def header(self, msg_id: str) -> bytes | None:
        if msg_id not in self._headers:
            start = self._position.get(msg_id)
            window = [msg_id] if start is None else self._order[start:start + HEADER_WINDOW]
            found, _stale = await self._calls.read(mail.header_blocks, self._user, window)
            self._headers = {m: found.get(m, b"") for m in window}
        block = self._headers.get(msg_id)
        return block or None

    async def raw(self, msg_id: str) -> bytes | None:
        raw, _stale = await self._calls.read(mail.get_raw, self._user, msg_id)
        return raw


class Message(BaseMessage):
    """One message of a folder, from its record (see the module docstring)."""

    __slots__ = ["record", "_loader"]

    def __init__(self, record: mail.Record, loader: ContentLoader | None, *,
                 expunged: bool = False) -> None:
        super().__init__(record.uid, datetime.fromtimestamp(record.date, UTC),
                         flags_of(record), email_id=_NO_ID, thread_id=_NO_ID,
                         expunged=expunged)
        self.record = record
        self._loader = loader

    @classmethod
    def copy_expunged(cls, cached: CachedMessage) -> Message:
        if not isinstance(cached, Message):
            raise TypeError(cached)
        return cls(cached.record, cached._loader, expunged=True)

    async def load_content(self, requirement: FetchRequirement) -> LoadedMessage:
        requirement = _needed(requirement)
        content: MessageContent | None = None
        if self._loader is not None and not self.expunged:
            if requirement & FetchRequirement.BODY:
                content = _parsed(await self._loader.raw(self.record.id))
            elif requirement & FetchRequirement.HEADER:
                content = _header_only(await self._loader.header(self.record.id))
        return LoadedMessage(self, requirement, content)


class LoadedMessage(BaseLoadedMessage):
    """The loaded content; the whole message's size is the record's (as stored)."""

    def get_size(self, section: Sequence[int] | None = None) -> int:
        message = self.message
        if not section and isinstance(message, Message):
            return message.record.size
        return super().get_size(section)


def _needed(requirement: FetchRequirement) -> FetchRequirement:
    """What the FETCH being answered really needs loaded, given what pymap asks for.

    pymap asks for more than it needs twice: ``BODY.PEEK[HEADER...]`` counts as
    the whole message (its ``FetchAttribute.requirement`` tests for ``BODY`` only,
    pymap 0.36.7), so a client listing a folder would read every message whole,
    one round trip each; and a size counts as content, which the record has.
    So a FETCH's need is worked out here from its attributes, once per command.
    """
    if not requirement & FetchRequirement.BODY:
        return requirement
    try:
        command: Any = current_command.get()
    except LookupError:
        return requirement
    if not isinstance(command, FetchCommand):
        return requirement
    known = _fetch_need.get()
    if known is None or known[0] is not command:
        known = (command, FetchRequirement.reduce(
            _attribute_need(a) for a in command.attributes) | FetchRequirement.METADATA)
        _fetch_need.set(known)
    return requirement & known[1]


def _attribute_need(attribute: FetchAttribute) -> FetchRequirement:
    section = attribute.section
    if attribute.value in _SIZE_ONLY and section is None:
        return FetchRequirement.METADATA
    if (attribute.value in _BODY_SECTIONS and section is not None and not section.parts
            and section.specifier in _HEADER_SPECIFIERS):
        return FetchRequirement.HEADER
    return attribute.requirement


def _header_only(block: bytes | None) -> MessageContent | None:
    """A header block as a message without a body, only its header parsed.

    pymap's ``MessageContent.parse`` would also parse the block's Content-Type
    (for the body's structure), two thirds of its time on a usual header, for a
    body that is not there.  So this takes the header steps of that parse, which
    are pymap's internals: pymap is pinned (setup.cfg), and a unit test compares
    the result with the public parse's header.
    """
    if block is None:
        return None
    try:
        lines = MessageContent._find_lines(block)
        header_lines, _body_lines = MessageContent._split_lines(block, lines)
        header = MessageHeader._parse(block, memoryview(block), header_lines)
    except (RecursionError, ValueError, IndexError, LookupError) as exc:
        log.warning("a message's header could not be parsed: %s", type(exc).__name__)
        return None
    return MessageContent(block, header, _EMPTY_BODY)


def _parsed(data: bytes | None) -> MessageContent | None:
    if data is None:
        return None
    try:
        return MessageContent.parse(data)
    except (RecursionError, ValueError, IndexError, LookupError) as exc:
        # A message pymap's MIME parser cannot take (absurd nesting): shown as empty.
        log.warning("a message could not be parsed: %s", type(exc).__name__)
        return None

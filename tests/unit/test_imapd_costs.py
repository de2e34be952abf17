"""What FETCH and APPEND cost imapd: what they read, parse and write (issue 19).

A header FETCH reads header blocks a window at a time and never a whole
message, even where pymap asks for the whole message (``BODY.PEEK[HEADER...]``);
only the header of a block is parsed, to the same result as pymap's own parse;
and a reply goes to the socket in pieces, not a write per FETCH item.  An
APPEND looks its folder up once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from pymap.context import current_command
from pymap.mime import MessageContent
from pymap.parsing.command.select import FetchCommand
from pymap.parsing.message import AppendMessage
from pymap.parsing.response import ResponseOk
from pymap.parsing.response.specials import FetchResponse
from pymap.parsing.specials import FetchAttribute, FetchRequirement, SequenceSet
from pymap.parsing.specials.fetchattr import FetchPartial

from imapd import connection
from imapd.message import _header_only
from imapd.session import Session
from imapd.settings import ImapLimits
from shards.model import mail

from .._imapunit import USER, mailbox, new_session, store_calls
from .._imapunit import numbered as message
from .._memstore import MemClient

pytestmark = pytest.mark.timeout(60)
HEADER_FIELDS = FetchAttribute.Section((), b"HEADER.FIELDS", frozenset([b"SUBJECT", b"FROM"]))


@pytest.fixture
def store() -> MemClient:
    return mailbox(300)


@pytest.fixture
def session(store: MemClient):
    with store_calls(store) as calls:
        yield new_session(calls)


def fetch(session: Session, attributes: list[FetchAttribute]) -> list[Any]:
    """Load every message of INBOX as pymap's FETCH does: with the requirement pymap
    works out from the attributes (not a hand-picked one)."""
    requirement = FetchRequirement.reduce(a.requirement for a in attributes)

    async def run() -> list[Any]:
        _, selected = await session.select_mailbox("INBOX")
        token = current_command.set(FetchCommand(b"a", SequenceSet.all(), attributes))
        try:
            found, _ = await session.fetch_messages(selected, SequenceSet.all(), False)
            return [await msg.load_content(requirement) for _seq, msg in found]
        finally:
            current_command.reset(token)

    return asyncio.run(run())


@pytest.mark.parametrize("name", [b"BODY.PEEK", b"BODY"])
def test_a_header_fetch_reads_windows_of_headers_never_a_whole_message(store, session, name):
    attribute = FetchAttribute(name, HEADER_FIELDS)
    # pymap 0.36.7 counts BODY.PEEK[HEADER.FIELDS] as the whole message: what we correct
    assert name != b"BODY.PEEK" or attribute.requirement == FetchRequirement.CONTENT
    reads_before, cells_before = len(store.touched("get")), len(store.touched("get_cells"))
    loaded = fetch(session, [FetchAttribute(b"UID"), attribute])
    raw_reads = [key for key in store.touched("get")[reads_before:] if "msg:" in str(key)]
    assert raw_reads == []
    header_reads = [rows for rows in store.touched("get_cells")[cells_before:] if "msg:" in rows]
    assert len(header_reads) <= 2 * 2  # windows of 200 (each a get_cells of <= 256)
    assert bytes(loaded[7].get_message_headers(subset=[b"SUBJECT"])) == \
        b"Subject: number 7\r\n\r\n"


def test_a_fetch_that_needs_a_body_still_reads_the_message(store, session):
    partial = FetchAttribute(b"BODY.PEEK", FetchAttribute.Section(()), FetchPartial(0, 10))
    loaded = fetch(session, [partial, FetchAttribute(b"BODY.PEEK", HEADER_FIELDS)])
    assert bytes(loaded[3].content) == message(3)


@pytest.mark.parametrize("block", [
    message(1).split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    b"Subject: folded\r\n over two lines\r\nFrom: a@b.test\r\n\r\n",
    b"Subject: no blank line at all\r\nX-Odd: yes",
    b"no colon here\r\nSubject: after junk\n\n",
    b"Content-Type: multipart/mixed; boundary=x\r\nSubject: s\r\n\r\n",
    b"",
])
def test_the_header_only_parse_equals_pymaps_parse(block):
    ours, pymaps = _header_only(block), MessageContent.parse(block)
    assert ours is not None
    assert bytes(ours.header) == bytes(pymaps.header)
    assert ours.header.folded == pymaps.header.folded
    assert ours.header.lines == pymaps.header.lines
    assert len(ours.body) == 0


class CountingWriter:
    """What asyncio's StreamWriter is to the connection: counts the writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        await asyncio.sleep(0)


def test_a_reply_of_many_items_is_written_in_pieces_of_bounded_size(monkeypatch):
    monkeypatch.setattr(connection, "WRITE_BATCH", 4096)
    conn = object.__new__(connection.BoundedConnection)
    conn.writer = CountingWriter()  # type: ignore[assignment]
    conn.limits = ImapLimits()
    reply = ResponseOk(b"a1", b"FETCH completed.")
    for seq in range(1, 1001):
        reply.add_untagged(FetchResponse(seq, []))
    asyncio.run(conn.write_response(reply))
    writes = conn.writer.writes
    whole = b"".join(writes)
    assert whole.startswith(b"* 1 FETCH ()\r\n* 2 FETCH ()\r\n")
    assert whole.endswith(b"* 1000 FETCH ()\r\na1 OK FETCH completed.\r\n")
    assert whole.count(b" FETCH ()\r\n") == 1000
    assert 3 <= len(writes) <= len(whole) // 4096 + 2
    assert all(len(w) < 4096 + 100 for w in writes)


class StuckWriter(CountingWriter):
    """A client that stopped reading: the socket never drains."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = self
        self.aborted = False

    async def drain(self) -> None:
        await asyncio.Event().wait()

    def abort(self) -> None:
        self.aborted = True


def test_a_client_that_stops_reading_is_cut_off_after_the_patience_per_piece(monkeypatch):
    monkeypatch.setattr(connection, "WRITE_BATCH", 4096)
    conn = object.__new__(connection.BoundedConnection)
    conn.writer = StuckWriter()  # type: ignore[assignment]
    conn.limits = replace(ImapLimits(), literal_timeout=0.3)
    reply = ResponseOk(b"a1", b"FETCH completed.")
    for seq in range(1, 10_001):
        reply.add_untagged(FetchResponse(seq, []))
    started = time.monotonic()
    asyncio.run(conn.write_response(reply))
    assert conn.writer.aborted and time.monotonic() - started < 5
    assert len(conn.writer.writes) == 1  # the first piece; nothing more was made
    assert len(conn.writer.writes[0]) < 4096 + 100


def test_an_append_looks_its_folder_up_once(store, session, monkeypatch):
    lookups: list[str] = []
    real = store.get_row

    def get_row(row, **kwargs):
        lookups.append(kwargs.get("prefix", ""))
        return real(row, **kwargs)

    archive = mail.create_folder(store, USER, "Archive")
    monkeypatch.setattr(store, "get_row", get_row)
    append_uid, _ = asyncio.run(session.append_messages("Archive", [AppendMessage(message(500))]))
    assert lookups.count("f") == 1  # the folders (find_folder), once
    assert list(append_uid.uids) == [1]
    assert mail.get_raw(store, USER, mail.list_folder(store, USER, archive.id)[0].id) == \
        message(500)

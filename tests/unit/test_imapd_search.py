"""imapd's SEARCH BODY and TEXT answered from the word index: pymap's matching reads no body."""

from __future__ import annotations

import asyncio

import pytest
from pymap.parsing.specials import SearchKey, SequenceSet

from imapd.config import ImapConfig
from imapd.session import Session
from imapd.settings import ImapdSettings
from imapd.store import StoreCalls
from shards.model import mail

from .._memstore import MemClient

USER = "alice"
pytestmark = pytest.mark.timeout(60)


def message(n: int) -> bytes:
    word = "needle" if n % 50 == 7 else "hay"
    return (f"From: sender{n}@example.org\r\nTo: {USER}@raftcloud.test\r\n"
            f"Subject: number {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\n"
            f"a {word} in message {n}\r\n").encode()


@pytest.fixture
def store() -> MemClient:
    client = MemClient()
    for n in range(300):
        mail.deliver(client, USER, message(n))
    mail.backfill_index(client, USER)
    return client


def body_reads(store: MemClient, since: int) -> list[str]:
    """Reads of messages' bytes (header blocks are read by get_cells of their hdr cells)."""
    return [row for method, row in store.ops[since:]
            if "/msg:" in row and method in ("get", "get_stream", "get_into")]


def search(store: MemClient, *keys: SearchKey) -> list[int]:
    calls = StoreCalls(store, threads=2)
    session = Session(USER, ImapConfig(ImapdSettings(), tls=None), calls, quota=None,
                      idle_poll=0.05)

    async def go() -> list[int]:
        _, selected = await session.select_mailbox("INBOX")
        found, _ = await session.search_mailbox(selected, frozenset(keys))
        return sorted(msg.uid for _, msg in found)
    try:
        return asyncio.run(go())
    finally:
        calls.close()


def test_search_body_in_300_messages_reads_no_body(store):
    before = len(store.ops)
    assert search(store, SearchKey(b"BODY", "NEEDLE")) == [8, 58, 108, 158, 208, 258]
    assert body_reads(store, before) == []


def test_body_keys_under_not_and_or_and_beside_other_keys(store):
    before = len(store.ops)
    assert len(search(store, SearchKey(b"TEXT", "needle", inverse=True))) == 294
    either = SearchKey(b"OR", (SearchKey(b"BODY", "needle"), SearchKey(b"SUBJECT", "number 3")))
    assert search(store, either, SearchKey(b"SEQSET", SequenceSet.build([1, 2, 3, 4, 8, 9],
                                                                         uid=True))) == [4, 8]
    assert search(store, SearchKey(b"TEXT", "sender258")) == [259]
    assert body_reads(store, before) == []


def test_a_one_letter_word_is_left_to_pymap_which_reads_the_bodies(store):
    before = len(store.ops)
    assert len(search(store, SearchKey(b"BODY", "a"))) == 300
    assert body_reads(store, before)  # the old way: not the index's


"""Mail search: the tokenizer, the index kept with deliveries, copies and expunges, queries,
their bounds, the backfill of mailboxes from before the index, and hostile messages."""

from __future__ import annotations

import base64
import importlib
import time

import msgpack
import pytest

from shards.model import mail
from shards.model.mail import index
from shards.model.mail.layout import BATCH_BYTES, mailbox_row, pack, pointer_col
from shards.model.mail.search import MAX_POSTINGS, BadQuery, Query

from .._memstore import MemClient

# The package's ``search`` is the function; the module is had by its full name.
search_module = importlib.import_module("shards.model.mail.search")

USER = "alice"


def message(n: int, body: str = "", *, subject: str = "", sender: str = "") -> bytes:
    return (f"From: {sender or f'sender{n}@example.org'}\r\nTo: {USER}@raftcloud.test\r\n"
            f"Subject: {subject or f'number {n}'}\r\nMessage-ID: <{n}@example.org>\r\n\r\n"
            f"{body or f'body {n}'}\r\n").encode()


@pytest.fixture
def client() -> MemClient:
    return MemClient()


def uids(client: MemClient, query: Query, fid: int = mail.INBOX) -> list[int]:
    return mail.search(client, USER, fid, query).uids


def index_cells(client: MemClient) -> dict[str, bytes]:
    return {c: cell.value for c, cell in client.get_row(index.index_row(USER)).items()}


# -- words ---------------------------------------------------------------------------------


def test_tokens_are_casefolded_nfkc_split_on_non_alphanumerics_bounded_and_distinct():
    text = "Straße ＡＢＣ re-deliver x über_alles caf\u0065\u0301 " + "z" * 60 + " Straße"
    assert index.tokens([text]) == ["strasse", "abc", "re", "deliver", "über", "alles", "café",
                                    "z" * index.MAX_TOKEN]
    assert len(index.tokens([" ".join(f"w{n}" for n in range(5000))])) == index.MAX_TOKENS
    # Only the first MAX_TEXT characters are read.
    assert index.tokens(["a" * index.MAX_TEXT + " late"]) == ["a" * index.MAX_TOKEN]


def test_html_parts_give_their_text_not_their_markup_or_scripts():
    raw = (b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><style>.x{color:red}</style>"
           b"<script>var secret=1</script><p class='hidden'>Hello &amp; <b>wor</b>ld</p></html>")
    (text,) = index.body_texts(raw)
    assert "Hello & world" in text and "secret" not in text and "<" not in text
    found = index.message_tokens(raw)
    assert "hello" in found and "world" in found
    assert index.tokens([index.html_text("<p>one</p><DIV>two<br>three</div>")]) == [
        "one", "two", "three"]  # blocks end words
    assert not {"style", "color", "script", "secret", "class", "hidden"} & set(found)


def test_encoded_parts_and_charsets_are_decoded_and_attachments_skipped():
    latin = "Grüße aus Köln".encode("latin-1")
    raw = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(latin) + b"\r\n"
           b"--XX\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\nplain\xffword\r\n"
           b"--XX\r\nContent-Type: text/plain; charset=zlib_codec\r\n\r\nzipped words\r\n"
           b"--XX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n"
           b"attachedtext\r\n--XX\r\nContent-Type: application/octet-stream\r\n\r\n"
           b"\x00\x01binaryword\r\n--XX--\r\n")
    found = index.message_tokens(raw)
    assert {"grüsse", "aus", "köln", "plain", "word", "zipped", "words"} <= set(found)
    assert "attachedtext" not in found and "binaryword" not in found


@pytest.mark.parametrize("raw", [
    b"", b"\x00" * 1000, b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
    b"Content-Type: text/html\r\n\r\n<" + b"<a " * 20000,
    b"Content-Type: text/plain; charset=utf-7\r\n\r\n+AGEAYgBj-+++---",
    b"Subject: =?x-unknown?q?abc?=\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n\r\nnested\r\n" * 3000,
])
def test_hostile_messages_give_tokens_without_raising(raw):
    assert isinstance(index.message_tokens(raw), list)


def test_hostile_html_is_stripped_in_linear_time():
    started = time.monotonic()
    index.html_text("<" + "<a " * 100_000 + "<!--" + "<p " * 50_000)
    assert time.monotonic() - started < 2  # the standard library's HTMLParser: minutes


def test_a_huge_body_costs_bounded_work_and_bounded_index_cells(client):
    body = " ".join(f"word{n}" for n in range(400_000))  # ~4 MB of distinct words
    before = len(client.ops)
    mail.deliver(client, USER, message(1, body))
    cells = index_cells(client)
    words = [c for c in cells if c.startswith("w:")]
    assert len(words) == index.MAX_TOKENS
    mutations = [op for op in client.ops[before:] if op == ("mutate_row", index.index_row(USER))]
    assert len(mutations) <= index.MAX_TOKENS * 70 // BATCH_BYTES + 3


# -- upkeep --------------------------------------------------------------------------------


def test_a_delivery_is_indexed_before_it_is_listed_in_entries_under_the_cap(client):
    mail.deliver(client, USER, message(0))  # the mailbox made
    before = len(client.ops)
    body = " ".join(f"distinctword{n}" for n in range(1500))
    done = mail.deliver(client, USER, message(1, body, subject="Quarterly report"))
    ops = client.ops[before:]
    index_writes = [n for n, op in enumerate(ops) if op == ("mutate_row", index.index_row(USER))]
    listing = ops.index(("mutate_row", mailbox_row(USER)))
    assert index_writes and max(index_writes) < listing  # every index write before the listing
    cells = index_cells(client)
    assert f"w:quarterly:{done.msg_id}" in cells and f"w:distinctword7:{done.msg_id}" in cells
    listed = msgpack.unpackb(cells[f"t:{done.msg_id}"])
    assert "report" in listed and "sender1" in listed
    # Each batch stays under the store's entry size.
    for batch in _index_batches(client):
        assert sum(len(m[1]) + 16 for m in batch) <= BATCH_BYTES + 64


def _index_batches(client: MemClient) -> list[list[list]]:
    found = []
    original = client.store.apply_entry

    def spy(entry):
        command = entry[1]
        if command.get("op") == "mutate_row" and command["row"] == index.index_row(USER):
            found.append(command["mutations"])
        return original(entry)
    client.store.apply_entry = spy  # type: ignore[method-assign]
    try:
        mail.deliver(client, USER, message(2, " ".join(f"other{n}" for n in range(1500))))
    finally:
        client.store.apply_entry = original  # type: ignore[method-assign]
    assert len(found) > 1
    return found


def test_expunge_removes_the_words_a_move_keeps_them_a_copy_indexes_the_copy(client):
    first = mail.deliver(client, USER, message(1, "alpha beta"))
    mail.deliver(client, USER, message(2, "alpha gamma"))
    trash_uid = mail.move(client, USER, mail.INBOX, [first.record.uid], mail.TRASH).uids
    assert f"w:beta:{first.msg_id}" in index_cells(client)
    assert uids(client, Query(body="beta"), mail.TRASH) == list(trash_uid.values())
    assert uids(client, Query(body="beta")) == []
    copied = mail.copy(client, USER, mail.TRASH, trash_uid.values(), mail.INBOX)
    assert uids(client, Query(body="beta")) == list(copied.uids.values())
    mail.expunge(client, USER, mail.TRASH, trash_uid.values())
    cells = index_cells(client)
    assert not [c for c in cells if first.msg_id in c]
    assert uids(client, Query(body="alpha")) == [2, *copied.uids.values()]


def test_a_stale_index_entry_never_shows(client):
    done = mail.deliver(client, USER, message(1, "phantom"))
    other = mail.deliver(client, USER, message(2, "phantom"))
    # The message's record goes, its words stay (an expunge whose clean-up failed).
    client.mutate_row(mailbox_row(USER), [], [
        ("delete", f"u:{mail.INBOX:06d}:{done.record.uid:010d}"), ("delete", pointer_col(done.msg_id))])
    assert f"w:phantom:{done.msg_id}" in index_cells(client)
    assert uids(client, Query(body="phantom")) == [other.record.uid]


# -- queries -------------------------------------------------------------------------------


def test_searches_by_sender_to_subject_dates_and_words(client):
    mail.deliver(client, USER, message(1, "the delivery of parcels", subject="Parcel"))
    mail.deliver(client, USER, message(2, "Invoice attached", sender="Bob <bob@shop.example>"))
    mail.append(client, USER, mail.INBOX, message(3, "old news"), date=1_000_000.0)
    mail.backfill_index(client, USER)
    assert uids(client, Query(sender="BOB@shop")) == [2]
    assert uids(client, Query(to="alice@raftcloud")) == [1, 2, 3]
    assert uids(client, Query(subject="parcel")) == [1]
    assert uids(client, Query(before=2_000_000.0)) == [3]
    assert uids(client, Query(since=2_000_000.0)) == [1, 2]
    assert uids(client, Query(body="deliv")) == [1]         # a word matches words it begins
    assert uids(client, Query(body="livery")) == []         # not the words it ends
    assert uids(client, Query(body="DELIVERY parcels")) == [1]  # every word, any case
    assert uids(client, Query(body="delivery invoice")) == []
    assert uids(client, Query(text="bob")) == [2]           # From's words are indexed too
    assert uids(client, Query(body="news", before=2_000_000.0)) == [3]
    assert uids(client, Query(body="news", since=2_000_000.0)) == []
    assert uids(client, Query()) == [1, 2, 3]


@pytest.mark.parametrize("query", [
    Query(body="a"), Query(text="ok x"), Query(body="!!! ..."), Query(subject="x" * 1001),
    Query(body=" ".join(f"w{n}" for n in range(17)))])
def test_queries_that_cannot_be_answered_within_bounds_are_refused(client, query):
    mail.deliver(client, USER, message(1))
    with pytest.raises(BadQuery):
        mail.search(client, USER, mail.INBOX, query)


def test_a_search_reads_no_body_once_the_mailbox_is_indexed(client):
    for n in range(60):
        mail.deliver(client, USER, message(n, f"common words and unique{n}"))
    assert mail.backfill_index(client, USER) is False
    before = len(client.ops)
    assert uids(client, Query(body="unique17")) == [18]
    assert uids(client, Query(body="common", subject="number 17")) == [18]
    touched = client.ops[before:]
    assert not [op for op in touched if op[0] in ("get_stream", "get") and "/msg:" in op[1]]


def test_a_word_too_common_to_read_is_checked_against_the_others(client, monkeypatch):
    monkeypatch.setattr(search_module, "MAX_POSTINGS", 5)
    for n in range(12):
        mail.deliver(client, USER, message(n, f"common rare{n % 4}"))
    mail.backfill_index(client, USER)
    assert uids(client, Query(body="common rare1")) == [2, 6, 10]
    found = mail.search(client, USER, mail.INBOX, Query(body="common"))
    assert found.uids == list(range(1, 13)) and found.complete
    assert MAX_POSTINGS > 5


# -- the backfill --------------------------------------------------------------------------


def _old_message(client: MemClient, n: int, body: str) -> str:
    """A message as stored before the index: listed, with no words."""
    done = mail.deliver(client, USER, message(n, body))
    index.unindex(client, USER, [done.msg_id])
    return done.msg_id


def test_search_reads_the_bodies_of_messages_not_yet_indexed_then_the_backfill_indexes_them(
        client, monkeypatch):
    for n in range(30):
        _old_message(client, n, f"legacy text{n}")
    client.delete(index.index_row(USER), index.DONE_COL)
    assert uids(client, Query(body="text7")) == [8]  # read from its bytes
    monkeypatch.setattr(search_module, "MAX_FALLBACK", 10)
    assert mail.search(client, USER, mail.INBOX, Query(body="legacy")).complete is False
    calls = 0
    while mail.backfill_index(client, USER, pointers=8, messages=3):
        calls += 1
        assert calls < 50
    assert calls >= 9  # bounded work per call: 3 messages at most
    assert index.is_done(client, USER)
    before = len(client.ops)
    found = mail.search(client, USER, mail.INBOX, Query(body="legacy"))
    assert found.uids == list(range(1, 31)) and found.complete
    assert not [op for op in client.ops[before:] if "/msg:" in op[1]]


def test_the_backfill_survives_moves_behind_its_cursor_and_skips_gone_messages(client):
    ids = [_old_message(client, n, f"moved{n}") for n in range(10)]
    assert mail.backfill_index(client, USER, pointers=4, messages=4) is True
    # Move the last message (whose pointer is ahead of the cursor) to Trash: same id.
    mail.move(client, USER, mail.INBOX, [10], mail.TRASH)
    mail.expunge(client, USER, mail.INBOX, [9])
    while mail.backfill_index(client, USER, pointers=4, messages=4):
        pass
    cells = index_cells(client)
    assert f"t:{ids[9]}" in cells and f"t:{ids[8]}" not in cells
    assert uids(client, Query(body="moved9"), mail.TRASH) == [1]


def test_a_broken_tokens_cell_is_read_as_missing(client):
    done = mail.deliver(client, USER, message(1, "words here"))
    client.put(index.index_row(USER), index.tokens_col(done.msg_id), pack({"not": "a list"}))
    index.unindex(client, USER, [done.msg_id])  # no crash; t: goes
    assert f"t:{done.msg_id}" not in index_cells(client)

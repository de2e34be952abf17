"""Mailbox logic that needs no store: ids, header parsing, dedup keys, tolerant decoding."""

from __future__ import annotations

import msgpack
import pytest

from shards.model import mailbox

from .._memstore import MemClient


def test_message_ids_sort_by_arrival_time():
    ids = [mailbox.new_message_id(now_ns=t) for t in (5, 1_700_000_000_000_000_000, 42)]
    assert sorted(ids) == [ids[0], ids[2], ids[1]]
    assert all(mailbox.is_message_id(i) for i in ids)


def test_message_ids_at_the_same_instant_differ():
    assert mailbox.new_message_id(now_ns=7) != mailbox.new_message_id(now_ns=7)


@pytest.mark.parametrize("bad", ["", "1", "../etc", "00000000000000000001-xyz", "a" * 37,
                                 "00000000000000000001-0123456789abcdef\n"])
def test_foreign_ids_are_refused_before_the_store(bad):
    assert not mailbox.is_message_id(bad)
    assert mailbox.get_message(None, "alice", bad) is None  # type: ignore[arg-type]
    assert mailbox.delete_message(None, "alice", bad) is False  # type: ignore[arg-type]


def test_parse_headers_decodes_encoded_words_and_unfolds():
    raw = (b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
           b"Subject: a long\r\n subject line\r\n"
           b"Message-ID: <abc@example.test>\r\n\r\nbody\r\n")
    headers = mailbox.parse_headers(raw)
    assert headers.sender == "Jürgen <j@example.test>"
    assert headers.subject == "a long subject line"
    assert headers.message_id == "<abc@example.test>"


@pytest.mark.parametrize("raw", [
    b"",
    b"no headers at all, just text",
    b"\xff\xfe\x00garbage\r\n\r\n",
    b"From: <<<@@@>>>\r\nSubject: =?bogus?x?zzz?=\r\nMessage-ID: \r\n\r\n",
    b"Subject: " + b"x" * 100_000 + b"\r\n\r\n",
])
def test_parse_headers_never_raises_on_malformed_mail(raw):
    headers = mailbox.parse_headers(raw)
    assert len(headers.subject) <= 512 and len(headers.sender) <= 320


def test_missing_from_falls_back_to_return_path():
    raw = b"Return-Path: <bounce@example.test>\r\nSubject: hi\r\n\r\n"
    assert mailbox.parse_headers(raw).sender == "<bounce@example.test>"


def test_dedup_key_depends_on_folder_and_message_id():
    inbox = mailbox.dedup_column("inbox", "<m@x>")
    assert inbox == mailbox.dedup_column("inbox", "<m@x>")
    assert inbox != mailbox.dedup_column("sent", "<m@x>")
    assert inbox != mailbox.dedup_column("inbox", "<n@x>")
    assert inbox.startswith("mid:")


@pytest.mark.parametrize("user", ["", "a{b", "a}b", "a/b"])
def test_user_names_that_would_change_the_row_layout_are_refused(user):
    with pytest.raises(ValueError):
        mailbox.mailbox_row(user)


def test_rows_share_the_users_hash_tag():
    assert mailbox.mailbox_row("bob") == "{bob}/mail"
    assert mailbox.message_row("bob", "1-2").startswith("{bob}/")


def test_malformed_records_are_skipped_not_fatal():
    client = MemClient()
    msg_id = mailbox.deliver(client, "ann", b"Subject: fine\r\n\r\nx\r\n")
    row = mailbox.mailbox_row("ann")
    client.put(row, "u:000001:0000000007", b"\xc1")
    client.put(row, "u:000001:0000000008", msgpack.packb({"subject": "no date"}))
    assert [m.id for m in mailbox.list_messages(client, "ann")] == [msg_id]
    [summary] = mailbox.list_messages(client, "ann")
    assert (summary.subject, summary.unread, summary.folder) == ("fine", True, "inbox")


def test_every_message_reads_every_folder_oldest_first_a_batch_at_a_time():
    client = MemClient()
    ids = [mailbox.deliver(client, "ann", b"Subject: %d\r\n\r\nx\r\n" % i,
                           folder="sent" if i % 2 else "inbox") for i in range(5)]
    client.ops.clear()
    got = list(mailbox.every_message(client, "ann", batch=2))
    assert [m.id for m in got] == ids and [m.subject for m in got] == [str(i) for i in range(5)]
    assert {m.folder for m in got} == {"inbox", "sent"}
    # 2 + 2 + 1 pointers, each batch's records in one get_cells: a short batch ends it.
    assert [op for op, _row in client.ops] == ["get_row", "get_cells"] * 3
    assert list(mailbox.every_message(client, "bob")) == []

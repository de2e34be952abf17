"""The mailbox model that smtpd delivers into, on the real store: races, flags, deletes."""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from shards.model import mail, mailbox
from shards.model.registry import list_nodes, register, unregister

pytestmark = pytest.mark.cluster


@pytest.fixture
def user():
    return f"u{secrets.token_hex(4)}"  # mailbox functions need no account


def _mail(subject: str, message_id: str | None = None) -> bytes:
    head = f"From: a@example.org\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    return (head + "\r\nbody\r\n").encode()


def test_listing_is_newest_first_per_folder(client, user):
    first = mailbox.deliver(client, user, _mail("one"))
    second = mailbox.deliver(client, user, _mail("two"))
    sent = mailbox.deliver(client, user, _mail("mine"), folder="sent", unread=False)
    assert [m.id for m in mailbox.list_messages(client, user)] == [second, first]
    [summary] = mailbox.list_messages(client, user, folder="sent")
    assert (summary.id, summary.subject, summary.unread) == (sent, "mine", False)
    assert mailbox.list_messages(client, f"{user}x") == []


def test_racing_deliveries_of_one_message_keep_one_copy(client, user):
    raw, ids, errors = _mail("race", "<race@example.org>"), [], []

    def deliver() -> None:
        try:
            ids.append(mailbox.deliver(client, user, raw))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    [listed] = mailbox.list_messages(client, user)
    assert set(ids) == {listed.id}
    assert mailbox.get_message(client, user, listed.id) == raw
    # The same message filed in another folder is a second, separate copy.
    assert mailbox.deliver(client, user, raw, folder="sent") != listed.id


def test_concurrent_flag_changes_lose_nothing(client, user):
    ids = [mailbox.deliver(client, user, _mail(f"m{i}")) for i in range(4)]
    threads = [threading.Thread(target=mailbox.mark_read, args=(client, user, i)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [m.unread for m in mailbox.list_messages(client, user)] == [False] * 4
    assert mailbox.mark_read(client, user, ids[0], read=False)
    assert mailbox.get_summary(client, user, ids[0]).unread


def test_delete_removes_the_message_and_a_late_retry_does_not_resurrect_it(client, user):
    raw = _mail("gone", "<gone@example.org>")
    msg_id = mailbox.deliver(client, user, raw)
    assert mailbox.delete_message(client, user, msg_id)
    assert not mailbox.delete_message(client, user, msg_id)
    assert mailbox.get_message(client, user, msg_id) is None
    assert not mailbox.mark_read(client, user, msg_id)
    mailbox.deliver(client, user, raw)  # the sender's MTA retrying after we had said 250
    assert mailbox.list_messages(client, user) == []


def test_large_messages_round_trip(client, user):
    raw = _mail("big") + b"x" * (3 * 1024 * 1024)
    msg_id = mailbox.deliver(client, user, raw)
    assert mailbox.get_message(client, user, msg_id) == raw
    assert mailbox.get_summary(client, user, msg_id).size == len(raw)


def test_the_folder_model_on_the_real_store(client, user):
    """Batches of the largest records flagged, moved and copied: each mutation the real
    store takes is under its 32 KiB entry cap; headers come back many at once."""
    subject = "📬" * 600
    raws = [f"From: {'👤' * 400} <a@b.test>\r\nTo: {'t' * 700}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{i}{'m' * 600}@x>\r\n\r\nbody {i}".encode() for i in range(40)]
    records = [mail.deliver(client, user, raw).record for raw in raws]
    uids = [r.uid for r in records]
    flagged = mail.store_flags(client, user, mail.INBOX, uids, [f"kw{i}" for i in range(32)])
    assert len(flagged.updated) == 40
    archive = mail.create_folder(client, user, "Archive/2024 ✓")
    moved = mail.move(client, user, mail.INBOX, uids, archive.id)
    assert list(moved.uids.values()) == list(range(1, 41))
    copied = mail.copy(client, user, archive.id, list(moved.uids.values()), mail.TRASH)
    assert len(copied.uids) == 40
    blocks = mail.header_blocks(client, user, [r.id for r in records])
    assert [blocks[r.id] for r in records] == [raw[:raw.index(b"\r\n\r\n") + 4] for raw in raws]
    changes = mail.changes_since(client, user, mail.INBOX, records[-1].modseq)
    assert changes.updated == [] and sorted(changes.expunged) == uids
    assert mail.status(client, user, archive.id).exists == 40
    assert mail.usage(client, user) == 2 * sum(map(len, raws))
    mail.delete_folder(client, user, archive.id)
    assert mail.usage(client, user) == sum(map(len, raws))
    assert mail.expire_trash(client, user, now=time.time() + 31 * 86400) is False
    assert mail.usage(client, user) == 0 and mail.status(client, user, mail.TRASH).exists == 0


def test_a_header_block_of_a_blob_size_is_kept_apart(client, user):
    raw = b"Subject: wide\r\nX-Pad: " + b"p" * (40 * 1024) + b"\r\n\r\n" + b"b" * (2 << 20)
    record = mail.append(client, user, mail.INBOX, raw)
    assert mail.header_blocks(client, user, [record.id]) == {record.id: raw[:raw.index(b"\r\n\r\n") + 4]}
    size, chunks = mail.raw_stream(client, user, record.id)
    assert size == len(raw) and b"".join(chunks) == raw


def test_registry_lists_registers_and_forgets(client):
    name = f"f-{secrets.token_hex(3)}"
    register(client, kind="frontend", name=name, addr="127.0.0.1:1", info={"load": 1})
    [node] = [n for n in list_nodes(client, "frontend") if n.name == name]
    assert (node.kind, node.addr, node.info, node.alive) == ("frontend", "127.0.0.1:1",
                                                             {"load": 1}, True)
    assert all(n.kind == "frontend" for n in list_nodes(client, "frontend"))
    assert any(n.name == name for n in list_nodes(client))
    assert unregister(client, kind="frontend", name=name)
    assert not any(n.name == name for n in list_nodes(client, "frontend"))

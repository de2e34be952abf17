"""Mailboxes of the layout before 2 carried over (shards.model.mail.migrate), on MemClient.

The old layout is written here cell by cell as the old mailbox.py wrote it: one
``m:<msg_id>`` dict per message (folder, unread, ...), ``mid:`` dedup cells, the
``usage`` cell and the raw rows.
"""

from __future__ import annotations

import secrets
import threading

import msgpack
import pytest

from shards.model import mail, mailbox
from shards.model.mail import layout, migrate

from .._mailcheck import check_mailbox
from .._memstore import MemClient


@pytest.fixture(autouse=True)
def _fresh_cache():
    migrate.forget()


def old_mailbox(client, user: str, n: int, *, sent_every: int = 3, usage: bool = True
                ) -> list[tuple[str, dict]]:
    """``n`` messages in the old layout, oldest first: ``(msg_id, metadata)``."""
    row = layout.mailbox_row(user)
    made, total = [], 0
    for i in range(n):
        msg_id = mail.new_message_id(now_ns=1_700_000_000_000_000_000 + i * 1000)
        folder = "sent" if i % sent_every == sent_every - 1 else "inbox"
        raw = f"Subject: old {i}\r\nMessage-ID: <old{i}@x>\r\n\r\nbody {i}\r\n".encode()
        meta = {"sender": f"s{i}@x", "subject": f"old {i}", "date": 1_700_000_000.0 + i,
                "unread": i % 2 == 0, "size": len(raw), "folder": folder,
                "message_id": f"<old{i}@x>", "to": "me@here"}
        client.put(layout.message_row(user, msg_id), "raw", raw)
        client.put(row, "m:" + msg_id, msgpack.packb(meta))
        client.put(row, mail.dedup_column(folder, f"<old{i}@x>"), msg_id.encode())
        total += len(raw)
        made.append((msg_id, meta))
    if usage:
        client.put(row, "usage", msgpack.packb(total))
    return made


def _user() -> str:
    return f"m{secrets.token_hex(3)}"


def test_an_old_mailbox_is_migrated_on_first_use_in_arrival_order():
    client, user = MemClient(), _user()
    old = old_mailbox(client, user, 9)
    listed = mailbox.list_messages(client, user)  # the webmail's first look migrates
    inbox = [(i, m) for i, m in old if m["folder"] == "inbox"]
    assert [m.id for m in listed] == [i for i, _ in reversed(inbox)]
    records = mail.list_folder(client, user, mail.INBOX)
    assert [r.id for r in records] == [i for i, _ in inbox] and [r.uid for r in records] == \
        list(range(1, len(inbox) + 1))
    for record, (_, meta) in zip(records, inbox, strict=True):
        assert record.seen == (not meta["unread"])
        assert (record.subject, record.sender, record.date, record.size, record.to) == (
            meta["subject"], meta["sender"], meta["date"], meta["size"], meta["to"])
    sent = mail.list_folder(client, user, mail.SENT)
    assert [r.subject for r in sent] == ["old 2", "old 5", "old 8"]
    folders = {f.id: f for f in mail.list_folders(client, user)}
    assert folders[mail.INBOX].unseen == sum(m["unread"] for _, m in inbox)
    assert client.get(layout.mailbox_row(user), "v").value == msgpack.packb(2)
    assert mailbox.usage(client, user) == sum(m["size"] for _, m in old)
    check_mailbox(client, user)


def test_old_dedup_cells_keep_deduplicating_after_migration():
    client, user = MemClient(), _user()
    old = old_mailbox(client, user, 3)
    raw = b"Subject: old 0\r\nMessage-ID: <old0@x>\r\n\r\nbody 0\r\n"
    assert mailbox.deliver(client, user, raw) == old[0][0]
    assert mailbox.deliver(client, user, b"Message-ID: <old2@x>\r\n\r\n", folder="sent") == old[2][0]
    assert len(mailbox.list_messages(client, user)) == 2


def test_a_migration_cut_short_is_finished_by_the_next_delivery():
    client, user = MemClient(), _user()
    old = old_mailbox(client, user, 40, sent_every=1000)  # all in the inbox
    migrate.make_special_folders(client, user)
    after = migrate.convert_some(client, user)  # one batch (25), then the process "dies"
    assert after is not None
    assert len(mail.reads.read_folders(client, user)[0]) == 5
    assert client.get(layout.mailbox_row(user), "v") is None
    new = mailbox.deliver(client, user, b"Subject: new\r\n\r\nnew\r\n")
    records = mail.list_folder(client, user, mail.INBOX)
    assert [r.id for r in records] == [i for i, _ in old] + [new]
    assert [r.uid for r in records] == list(range(1, 42))
    check_mailbox(client, user)


def test_two_processes_migrating_at_once_convert_each_message_once():
    client, user = MemClient(), _user()
    old = old_mailbox(client, user, 120)
    errors: list[BaseException] = []

    def run():
        try:
            mail.ensure_current(client, user)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        migrate.forget()  # each "process" has its own memory
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    records = check_mailbox(client, user)
    assert sorted(r["id"] for rs in records.values() for r in rs) == sorted(i for i, _ in old)
    assert [r["uid"] for r in records[mail.INBOX]] == list(range(1, 81))


def test_old_cells_deleted_or_broken_during_migration_are_left_alone():
    client, user = MemClient(), _user()
    old = old_mailbox(client, user, 6, usage=False)
    row = layout.mailbox_row(user)
    client.put(row, "m:" + mail.new_message_id(), b"\xc1 not msgpack")
    client.put(row, "m:" + mail.new_message_id(), msgpack.packb({"folder": "weird",
                                                                 "size": "big"}))
    mailbox.delete_message(client, user, old[0][0])  # deletes the old cell: migrates first
    ids = {m.id for f in ("inbox", "sent") for m in mailbox.list_messages(client, user, f)}
    assert old[0][0] not in ids and len(ids) == 6  # the dict with odd values goes to the inbox
    assert mailbox.usage(client, user) == sum(m["size"] for _, m in old[1:])


def test_a_new_mailbox_needs_no_migration_and_a_current_one_one_get():
    client, user = MemClient(), _user()
    mailbox.deliver(client, user, b"Subject: first\r\n\r\n")
    migrate.forget()
    client.ops.clear()
    assert mail.ensure_current(client, user)
    assert client.ops == [("get", layout.mailbox_row(user))]
    client.ops.clear()
    assert mail.ensure_current(client, user)
    assert client.ops == [], "remembered"

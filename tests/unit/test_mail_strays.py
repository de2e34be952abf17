"""Old mail code's writes into a mailbox of layout 2, folded in (shards.model.mail.strays),
on MemClient.  The old writes are tests/_oldmail.py's, call for call what the old
smtpd and portal did."""

from __future__ import annotations

import secrets
import threading

import msgpack
import pytest

from raftkv.errors import ReadOnly
from shards.model import mail, mailbox
from shards.model.mail import index, layout, migrate, strays

from .. import _oldmail as old
from .._mailcheck import check_mailbox
from .._memstore import MemClient


@pytest.fixture(autouse=True)
def _fresh_cache():
    migrate.forget()


def _raw(n: int, *, message_id: bool = True) -> bytes:
    mid = f"Message-ID: <m{n}@x>\r\n" if message_id else ""
    return f"From: a{n}@x\r\nTo: me@here\r\nSubject: s{n}\r\n{mid}\r\nbody word{n}\r\n".encode()


def _migrated(n: int = 3) -> tuple[MemClient, str, list[mail.Record]]:
    """A mailbox on layout 2 with ``n`` messages delivered by the new code."""
    client, user = MemClient(), f"m{secrets.token_hex(3)}"
    for i in range(n):
        mail.deliver(client, user, _raw(i))
    return client, user, mail.list_folder(client, user, mail.INBOX)


def _usage_cell(client, user):
    return client.get(layout.mailbox_row(user), layout.USAGE_COL)


def _clean(client, user) -> bool:
    cell = _usage_cell(client, user)
    return layout.usage_clean(None if cell is None else cell.value)


def test_new_code_writes_usage_in_the_form_old_code_never_writes_but_reads():
    client, user, _ = _migrated(2)
    cell = _usage_cell(client, user)
    assert _clean(client, user) and cell.value[0] == 0xD3
    assert msgpack.unpackb(cell.value) == old._usage(client, user)[0] == mailbox.usage(client, user)


def test_an_old_delivery_into_a_migrated_mailbox_is_folded_in_by_the_next_folder_read():
    client, user, before = _migrated(3)
    stray = old.deliver(client, user, _raw(10))
    sent = old.deliver(client, user, _raw(11), folder="sent", unread=False)
    assert not _clean(client, user), "old code's usage write is its mark"
    assert [r.id for r in mail.list_folder(client, user, mail.INBOX)] == [r.id for r in before]
    inbox = mail.get_folder(client, user, mail.INBOX)  # IMAP SELECT / STATUS / IDLE's poll
    assert inbox.exists == 4 and inbox.unseen == 4
    records = mail.list_folder(client, user, mail.INBOX)
    assert [r.id for r in records] == [*(r.id for r in before), stray]
    assert [r.uid for r in records] == [1, 2, 3, 4] and not records[-1].seen
    assert records[-1].subject == "s10" and records[-1].sender == "a10@x"
    (copy,) = mail.list_folder(client, user, mail.SENT)
    assert copy.id == sent and copy.seen
    assert client.get(index.index_row(user), index.tokens_col(stray)) is not None  # searchable
    assert mail.matching_ids(client, user, ["word10"], None)[0] == {stray}
    assert _clean(client, user)
    check_mailbox(client, user)


def test_the_common_path_reads_the_usage_cell_beside_the_folder_in_one_call():
    client, user, _ = _migrated(2)
    mail.get_folder(client, user, mail.INBOX)
    client.ops.clear()
    mail.get_folder(client, user, mail.INBOX)
    assert [m for m, _ in client.ops] == ["get_cells"]
    client.ops.clear()
    mail.changes_since(client, user, mail.INBOX, 1)
    assert [m for m, _ in client.ops][:1] == ["get_cells"]
    client.ops.clear()
    assert mail.fold_old_writes(client, user) is False
    assert [m for m, _ in client.ops] == ["get"]


def test_new_writes_keep_old_codes_mark_until_the_strays_are_folded():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(20))
    mail.deliver(client, user, _raw(21))  # a new smtpd after the old one: the mark stays
    assert not _clean(client, user)
    record = mail.list_folder(client, user, mail.INBOX)[-1]
    mail.expunge(client, user, mail.INBOX, [record.uid])
    assert not _clean(client, user)
    assert mail.fold_old_writes(client, user) is True
    assert stray in {r.id for r in mail.list_folder(client, user, mail.INBOX)}
    assert _clean(client, user)
    check_mailbox(client, user)


def test_an_old_read_mark_over_a_pointer_is_repaired_where_the_pointer_is_read():
    client, user, before = _migrated(3)
    target = before[1]
    old.mark_read(client, user, target.id)  # the old page thought it unread: {"unread": False}
    cell = client.get(layout.mailbox_row(user), layout.pointer_col(target.id))
    assert msgpack.unpackb(cell.value) == {"unread": False}
    found = mail.locate(client, user, target.id)  # the webmail's message page, say
    assert found is not None and (found.fid, found.uid) == (target.fid, target.uid) and found.seen
    assert mailbox.get_summary(client, user, target.id).unread is False
    assert mail.get_folder(client, user, mail.INBOX).unseen == 2
    assert mail.changes_since(client, user, mail.INBOX, target.modseq).updated[0].uid == target.uid
    check_mailbox(client, user)


def test_an_old_read_mark_is_repaired_by_the_scan_an_old_delivery_starts():
    client, user, before = _migrated(3)
    old.mark_read(client, user, before[0].id)
    old.deliver(client, user, _raw(30))
    assert strays.fold(client, user) == 2
    records = mail.list_folder(client, user, mail.INBOX)
    assert [r.seen for r in records] == [True, False, False, False]
    check_mailbox(client, user)


def test_an_old_read_mark_of_an_old_delivery_is_kept_when_it_is_folded():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(40))
    old.mark_read(client, user, stray)  # the old portal lists and opens what the old smtpd wrote
    mail.get_folder(client, user, mail.INBOX)
    assert mail.locate(client, user, stray).seen
    check_mailbox(client, user)


def test_an_old_read_mark_racing_the_fold_lands_or_leaves_the_message_unread():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(41))
    seen = old.page_read(client, user, stray)  # the old page reads the dict...
    mail.get_folder(client, user, mail.INBOX)  # ...the new code folds it...
    old.mark_read(client, user, stray, seen)   # ...the old CPUT fails, its retry finds a pointer
    record = mail.locate(client, user, stray)
    assert record is not None and not record.seen
    check_mailbox(client, user)


def test_an_old_delete_of_a_migrated_message_is_finished_by_the_fold():
    client, user, before = _migrated(3)
    used = mailbox.usage(client, user)
    assert old.delete_message(client, user, before[1].id)
    assert client.get(layout.message_row(user, before[1].id), "raw") is None
    assert mail.get_folder(client, user, mail.INBOX).exists == 2
    assert [r.id for r in mail.list_folder(client, user, mail.INBOX)] == [before[0].id, before[2].id]
    assert mailbox.usage(client, user) == used - before[1].size
    changes = mail.changes_since(client, user, mail.INBOX, before[2].modseq)
    assert changes.expunged == [before[1].uid]
    check_mailbox(client, user)


def test_an_old_delete_racing_the_fold_of_its_message_loses_nothing_twice():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(50))
    strays.fold(client, user)  # folded: the old delete now finds a pointer (size 0)
    old.delete_message(client, user, stray)
    mail.get_folder(client, user, mail.INBOX)
    assert [r.id for r in mail.list_folder(client, user, mail.INBOX)] != [] and \
        stray not in {r.id for r in mail.list_folder(client, user, mail.INBOX)}
    check_mailbox(client, user)


def test_a_new_delivery_of_what_old_code_delivered_is_a_duplicate_and_folds_it():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(60))
    done = mail.deliver(client, user, _raw(60))
    assert done.duplicate and done.msg_id == stray and done.record is not None
    assert done.record.fid == mail.INBOX
    check_mailbox(client, user)


def test_folding_is_idempotent_and_safe_with_concurrent_folds_and_old_writers():
    client, user, _ = _migrated(2)
    delivered = [old.deliver(client, user, _raw(100 + i, message_id=i % 2 == 0)) for i in range(30)]
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    more: list[str] = []
    threads = [threading.Thread(target=run, args=(lambda: strays.fold(client, user),))
               for _ in range(3)]
    threads.append(threading.Thread(target=run, args=(lambda: more.extend(
        old.deliver(client, user, _raw(200 + i)) for i in range(10)),)))
    threads.append(threading.Thread(target=run, args=(lambda: [
        old.mark_read(client, user, m) for m in delivered[:10]],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    strays.fold(client, user)
    assert strays.fold(client, user) == 0 and _clean(client, user)
    records = check_mailbox(client, user)[mail.INBOX]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 2 + 30 + 10
    assert set(delivered) | set(more) <= set(ids)
    uids = [r["uid"] for r in records]
    assert len(uids) == len(set(uids))


def test_a_dict_over_a_message_that_is_gone_is_dropped():
    client, user, before = _migrated(1)
    column = layout.pointer_col(before[0].id)
    mail.expunge(client, user, mail.INBOX, [before[0].uid])
    client.put(layout.mailbox_row(user), column, msgpack.packb({"unread": False}))
    assert mail.locate(client, user, before[0].id) is None
    assert client.get(layout.mailbox_row(user), column) is None
    check_mailbox(client, user)


def test_the_webmail_listing_notices_an_old_delivery():
    client, user, before = _migrated(2)
    stray = old.deliver(client, user, _raw(70))
    assert mail.fold_old_writes(client, user) is True
    page = mailbox.list_page(client, user, "inbox", limit=10)
    assert [m.id for m in page.messages] == [stray, before[1].id, before[0].id]


def test_a_read_only_group_shows_its_folder_and_folds_later():
    client, user, _ = _migrated(1)
    stray = old.deliver(client, user, _raw(80))
    real = client.mutate_row

    def refused(*args, **kwargs):
        raise ReadOnly("the group lost its majority")

    client.mutate_row = refused
    try:
        assert mail.get_folder(client, user, mail.INBOX).exists == 1
        assert mail.fold_old_writes(client, user) is False
    finally:
        client.mutate_row = real
    assert mail.get_folder(client, user, mail.INBOX).exists == 2
    assert mail.locate(client, user, stray) is not None

"""The mail model's folders (shards.model.mail.folders) on the real state machine (MemClient).

Special folders come with every mailbox; user folders are made, renamed with
their subfolders, deleted with their messages; names are checked; UIDVALIDITY
never repeats, even for a name deleted and made again.
"""

from __future__ import annotations

import secrets

import pytest

from shards.model import mail
from shards.model.errors import BadFolderName, FolderExists, FolderRefused, NoSuchFolder
from shards.model.mail import layout, migrate

from .._mailcheck import check_mailbox, message_rows
from .._memstore import MemClient


@pytest.fixture(autouse=True)
def _fresh_cache():
    migrate.forget()  # another test's store may have had a mailbox of the same name


@pytest.fixture
def client():
    return MemClient()


@pytest.fixture
def user():
    return f"u{secrets.token_hex(3)}"


def _raw(subject: str, size: int = 0) -> bytes:
    return f"From: a@b.test\r\nSubject: {subject}\r\n\r\n".encode() + b"x" * size


def test_a_new_mailbox_has_the_special_folders(client, user):
    folders = mail.list_folders(client, user)
    assert [(f.id, f.name, f.special) for f in folders] == [
        (1, "INBOX", "inbox"), (2, "Sent", "sent"), (3, "Drafts", "drafts"),
        (4, "Trash", "trash"), (5, "Junk", "junk")]
    values = [f.uidvalidity for f in folders]
    assert values == sorted(set(values)), "each its own UIDVALIDITY, increasing"
    assert all(0 < v < 2 ** 32 for v in values)
    assert all((f.uidnext, f.exists, f.unseen, f.modseq) == (1, 0, 0, 1) for f in folders)
    assert mail.folder_id("trash") == mail.TRASH
    with pytest.raises(NoSuchFolder):
        mail.folder_id("spam")


def test_reading_a_mailbox_nobody_delivered_to_writes_nothing(client, user):
    assert mail.list_newest(client, user, mail.INBOX, limit=10) == []
    assert mail.usage(client, user) == 0
    assert mail.locate(client, user, mail.new_message_id()) is None
    assert not [op for op, _row in client.ops if op not in ("get", "get_row", "get_cells")]


def test_created_folders_get_new_ids_and_uidvalidities(client, user):
    specials = mail.list_folders(client, user)
    work = mail.create_folder(client, user, "Work/2024")  # no "Work" is made
    assert work.id == layout.FIRST_USER_FOLDER and work.special is None
    assert work.uidvalidity > max(f.uidvalidity for f in specials)
    assert [f.name for f in mail.list_folders(client, user)][5:] == ["Work/2024"]
    other = mail.create_folder(client, user, "Ünïcødé 日本 📬", subscribed=False)
    assert other.id == work.id + 1 and other.uidvalidity > work.uidvalidity
    assert not other.subscribed
    assert mail.find_folder(client, user, "Ünïcødé 日本 📬") == mail.get_folder(client, user,
                                                                                 other.id)
    assert mail.find_folder(client, user, "inBoX").id == mail.INBOX
    assert mail.find_folder(client, user, "nope") is None
    assert mail.find_folder(client, user, "a//b") is None
    with pytest.raises(FolderExists):
        mail.create_folder(client, user, "Work/2024")
    with pytest.raises(FolderExists):
        mail.create_folder(client, user, "Sent")


@pytest.mark.parametrize("name", [
    "", "x" * 201, "a\x00b", "a\nb", "a\rb", "tab\there", "a\x7fb", "a\u2028b", "/lead",
    "trail/", "a//b", "/", "INBOX", "inbox", "Inbox", 42, None])
def test_hostile_folder_names_are_refused(client, user, name):
    with pytest.raises(BadFolderName):
        mail.create_folder(client, user, name)
    assert len(mail.list_folders(client, user)) == 5


def test_names_under_inbox_are_spelt_inbox_whatever_the_case(client, user):
    assert mail.create_folder(client, user, "inbox/Lists").name == "INBOX/Lists"
    with pytest.raises(FolderExists):
        mail.create_folder(client, user, "INBOX/Lists")
    assert mail.create_folder(client, user, "x" * 200).name == "x" * 200


def test_rename_takes_the_subfolders_along_in_one_mutation(client, user):
    work = mail.create_folder(client, user, "Work")
    a = mail.create_folder(client, user, "Work/a")
    mail.create_folder(client, user, "Work/a/deep")
    keep = mail.create_folder(client, user, "Workshop")  # a prefix, not a child
    mail.append(client, user, a.id, _raw("in a"))
    client.ops.clear()
    renamed = mail.rename_folder(client, user, work.id, "Job")
    assert client.touched("mutate_row") == [layout.mailbox_row(user)]
    assert renamed.name == "Job" and renamed.uidvalidity == work.uidvalidity
    names = {f.id: f.name for f in mail.list_folders(client, user)}
    assert names[work.id] == "Job" and names[a.id] == "Job/a" and names[keep.id] == "Workshop"
    assert "Job/a/deep" in names.values()
    assert [r.subject for r in mail.list_folder(client, user, a.id)] == ["in a"]
    with pytest.raises(FolderRefused):
        mail.rename_folder(client, user, work.id, "Job/a/inside")
    with pytest.raises(FolderExists):
        mail.rename_folder(client, user, work.id, "Workshop")
    with pytest.raises(BadFolderName):  # a subfolder's new name would be too long
        mail.rename_folder(client, user, work.id, "y" * 195)
    with pytest.raises(FolderRefused):
        mail.rename_folder(client, user, mail.INBOX, "Old")
    with pytest.raises(NoSuchFolder):
        mail.rename_folder(client, user, 999, "Ghost")
    check_mailbox(client, user)


def test_a_renamed_special_folder_keeps_its_role(client, user):
    sent = mail.rename_folder(client, user, mail.SENT, "Sent Items")
    assert (sent.id, sent.special) == (mail.SENT, "sent")
    record = mail.deliver(client, user, _raw("mine"), folder=mail.SENT).record
    assert record is not None and record.fid == mail.SENT
    assert mail.create_folder(client, user, "Sent").id >= layout.FIRST_USER_FOLDER


def test_delete_removes_messages_bytes_and_log_and_gives_the_quota_back(client, user):
    keep = mail.deliver(client, user, _raw("stays", 100)).record
    doomed = mail.create_folder(client, user, "Old")
    for n in range(60):  # more than one mutation's worth
        mail.append(client, user, doomed.id, _raw(f"old {n}", 10))
    assert mail.usage(client, user) > keep.size
    mail.delete_folder(client, user, doomed.id)
    assert mail.usage(client, user) == keep.size
    assert message_rows(client, user) == {keep.id}
    row = layout.mailbox_row(user)
    assert client.get_row(row, prefix=layout.change_prefix(doomed.id)) == {}
    assert client.get_row(row, prefix=layout.record_prefix(doomed.id)) == {}
    again = mail.create_folder(client, user, "Old")
    assert again.id > doomed.id and again.uidvalidity > doomed.uidvalidity
    with pytest.raises(NoSuchFolder):
        mail.delete_folder(client, user, doomed.id)
    check_mailbox(client, user)


def test_special_folders_and_parents_are_not_deleted(client, user):
    for fid in (mail.INBOX, mail.SENT, mail.DRAFTS, mail.TRASH, mail.JUNK):
        with pytest.raises(FolderRefused):
            mail.delete_folder(client, user, fid)
    parent = mail.create_folder(client, user, "P")
    child = mail.create_folder(client, user, "P/c")
    with pytest.raises(FolderRefused):
        mail.delete_folder(client, user, parent.id)
    mail.delete_folder(client, user, child.id)
    mail.delete_folder(client, user, parent.id)
    assert len(mail.list_folders(client, user)) == 5


def test_subscriptions(client, user):
    folder = mail.create_folder(client, user, "News")
    assert folder.subscribed
    assert not mail.set_subscribed(client, user, folder.id, False).subscribed
    assert not mail.get_folder(client, user, folder.id).subscribed
    assert mail.set_subscribed(client, user, folder.id, True).subscribed
    with pytest.raises(NoSuchFolder):
        mail.set_subscribed(client, user, 4242, True)


def test_the_number_of_folders_is_bounded(client, user, monkeypatch):
    monkeypatch.setattr(layout, "MAX_FOLDERS", 7)
    monkeypatch.setattr("shards.model.mail.folders.MAX_FOLDERS", 7)
    mail.create_folder(client, user, "one")
    mail.create_folder(client, user, "two")
    with pytest.raises(FolderRefused):
        mail.create_folder(client, user, "three")


def test_uidvalidity_grows_past_the_clock_and_past_the_last_value():
    assert layout.next_uidvalidity(0, now=1_700_000_100.5) == 100
    assert layout.next_uidvalidity(500, now=1_700_000_100) == 501
    with pytest.raises(OverflowError):
        layout.next_uidvalidity(2 ** 32 - 1, now=0)


def test_an_erased_mailbox_is_made_again_by_whoever_meets_it(client, user):
    mail.deliver(client, user, _raw("before"))
    first = mail.get_folder(client, user, mail.INBOX)
    for column in client.get_row(layout.mailbox_row(user)):  # as the account's erasure does
        client.delete(layout.mailbox_row(user), column)
    # This process still remembers the mailbox as current.
    assert [f.id for f in mail.list_folders(client, user)] == [1, 2, 3, 4, 5]
    # UIDVALIDITY comes from the clock again (fseq went with the row): not below the old one.
    assert mail.get_folder(client, user, mail.INBOX).uidvalidity >= first.uidvalidity
    record = mail.deliver(client, user, _raw("after")).record
    assert record is not None and record.uid == 1

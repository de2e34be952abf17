"""Concurrent changes of one folder through one MemClient (the real state machine, real
threads): unique UIDs, right counts, no lost flag, every message in exactly one place.

Each change is a mutate_row conditioned on what it read, so racing threads retry
instead of overwriting each other; the invariants of tests/_mailcheck.py hold at
the end of every test.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from shards.model import mail, mailbox
from shards.model.mail import migrate

from .._mailcheck import check_mailbox
from .._memstore import MemClient

TIMEOUT = 60  # seconds a racing thread may take, at most


class SlowReads(MemClient):
    """Each read yields the processor after answering, as a round trip would: the other
    threads then write between a change's read and its write."""

    def get(self, *args, **kwargs):
        answer = super().get(*args, **kwargs)
        time.sleep(0.0005)
        return answer

    def get_cells(self, *args, **kwargs):
        answer = super().get_cells(*args, **kwargs)
        time.sleep(0.0005)
        return answer

    def get_row(self, *args, **kwargs):
        answer = super().get_row(*args, **kwargs)
        time.sleep(0.0005)
        return answer


@pytest.fixture(autouse=True)
def _fresh_cache():
    migrate.forget()


def _race(*jobs):
    """Run each job in its own thread, started together; re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))
    failures: list[BaseException] = []

    def run(job):
        barrier.wait()
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a racing thread hung"
    if failures:
        raise failures[0]


def _raw(n: int) -> bytes:
    return f"Subject: m{n}\r\nMessage-ID: <{n}@race.test>\r\n\r\n".encode() + b"x" * n


def test_racing_appends_and_deliveries_get_unique_uids_and_right_counts():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    got: list[list[int]] = [[], [], []]
    _race(lambda: got[0].extend(mail.append(client, user, mail.INBOX, _raw(n)).uid
                                for n in range(40)),
          lambda: got[1].extend(mail.deliver(client, user, _raw(100 + n)).record.uid
                                for n in range(40)),
          # The same messages again, racing the first copy: one copy each.
          lambda: got[2].extend(mail.deliver(client, user, _raw(100 + n)).record.uid
                                for n in range(40)))
    assert sorted(got[0] + got[1]) == list(range(1, 81))
    assert got[2] == got[1] or set(got[2]) <= set(got[0] + got[1])
    inbox = mail.status(client, user, mail.INBOX)
    assert (inbox.exists, inbox.unseen, inbox.uidnext) == (80, 80, 81)
    records = check_mailbox(client, user)
    assert mail.usage(client, user) == sum(r["size"] for r in records[mail.INBOX])


def test_racing_flag_changes_lose_no_flag():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    uids = [mail.append(client, user, mail.INBOX, _raw(n)).uid for n in range(30)]
    start = mail.status(client, user, mail.INBOX).modseq
    _race(*(lambda flag=flag: [mail.store_flags(client, user, mail.INBOX, [uid], [flag])
                               for uid in uids]
            for flag in ("\\Seen", "\\Flagged", "urgent")))
    records = mail.list_folder(client, user, mail.INBOX)
    assert all(r.flags == ("\\Flagged", "\\Seen", "urgent") for r in records)
    inbox = mail.status(client, user, mail.INBOX)
    assert inbox.unseen == 0 and inbox.modseq == start + 90, "one mod-sequence per change"
    changes = mail.changes_since(client, user, mail.INBOX, start)
    assert [r.uid for r in changes.updated] == uids
    check_mailbox(client, user)


def test_racing_moves_flags_and_deliveries_keep_each_message_in_one_place():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    uids = [mail.append(client, user, mail.INBOX, _raw(n)).uid for n in range(50)]
    archive = mail.create_folder(client, user, "Archive")
    moved: dict[int, int] = {}
    _race(lambda: moved.update(mail.move(client, user, mail.INBOX, uids[::2], archive.id).uids),
          lambda: mail.store_flags(client, user, mail.INBOX, uids, ["\\Seen"]),
          lambda: [mail.deliver(client, user, _raw(500 + n)) for n in range(20)],
          lambda: mail.copy(client, user, mail.INBOX, uids[1::2], mail.DRAFTS))
    assert sorted(moved) == uids[::2] and sorted(moved.values()) == list(range(1, 26))
    records = check_mailbox(client, user)
    assert len(records[archive.id]) == 25 and len(records[mail.DRAFTS]) == 25
    assert len(records[mail.INBOX]) == 25 + 20
    check_mailbox(client, user)


def test_racing_marks_and_deletes_through_the_compatibility_surface():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    ids = [mailbox.deliver(client, user, _raw(n)) for n in range(20)]
    _race(lambda: [mailbox.mark_read(client, user, i) for i in ids],
          lambda: [mailbox.delete_message(client, user, i) for i in ids[:10]],
          lambda: [mailbox.mark_read(client, user, i, read=False) for i in ids[10:15]])
    listed = mailbox.list_messages(client, user)
    assert [m.id for m in listed] == ids[10:][::-1]
    assert all(not m.unread for m in listed if m.id in ids[15:])
    check_mailbox(client, user)


def test_racing_folder_creation_makes_one_folder_of_a_name():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    made: list[int] = []
    refused: list[str] = []

    def create():
        for n in range(10):
            try:
                made.append(mail.create_folder(client, user, f"f{n}").id)
            except mail.FolderExists:
                refused.append(f"f{n}")

    _race(create, create, create)
    names = [f.name for f in mail.list_folders(client, user)][5:]
    assert sorted(names) == sorted(f"f{n}" for n in range(10))
    assert len(made) == 10 and len(set(made)) == 10 and len(refused) == 20


def test_racing_renames_and_creates_of_one_name_leave_one_folder_of_it():
    client, user = SlowReads(), f"r{secrets.token_hex(3)}"
    sources = [mail.create_folder(client, user, f"old{n}").id for n in range(10)]

    def create():
        for n in range(10):
            try:
                mail.create_folder(client, user, f"new{n}")
            except mail.FolderExists:
                pass

    def rename():
        for n, fid in enumerate(sources):
            try:
                mail.rename_folder(client, user, fid, f"new{n}")
            except mail.FolderExists:
                pass

    _race(create, rename)
    names = [f.name for f in mail.list_folders(client, user)]
    assert len(names) == len(set(names)), "a name held by two folders"
    assert {f"new{n}" for n in range(10)} <= set(names)

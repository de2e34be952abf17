"""imapd's copy of selected folders' records (imapd/cache.py): bounded, and never wrong.

A SELECT after changes by anyone (a delivery, a flag set elsewhere, an expunge)
sees them exactly as a SELECT without the cache would; a SELECT of an unchanged
folder reads its cell and no record; the copy stays within its bound in records.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from pymap.parsing.specials import SequenceSet

from imapd.cache import FolderRecords, applied
from imapd.store import StoreCalls
from shards.model import mail
from shards.model.mail import layout

from .._imapunit import USER, mailbox, new_session, store_calls
from .._imapunit import numbered as message
from .._memstore import MemClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store() -> MemClient:
    return mailbox(40)


@pytest.fixture
def folders() -> FolderRecords:
    return FolderRecords()


@pytest.fixture
def calls(store: MemClient):
    with store_calls(store) as calls:
        yield calls


def select(calls: StoreCalls, folders: FolderRecords, name: str = "INBOX"
           ) -> dict[int, tuple[frozenset[bytes], str]]:
    """SELECT ``name`` in a new session, as a new connection does: UID -> (flags, id)."""
    session = new_session(calls, folders=folders)

    async def run():
        _, selected = await session.select_mailbox(name)
        return {msg.uid: (frozenset(f.value for f in msg.permanent_flags), msg.record.id)
                for _seq, msg in selected.messages.get_all(SequenceSet.all())}

    return asyncio.run(run())


def truth(store: MemClient, fid: int = mail.INBOX) -> dict[int, tuple[frozenset[bytes], str]]:
    return {r.uid: (frozenset(f.encode() for f in r.flags), r.id)
            for r in mail.list_folder(store, USER, fid)}


@pytest.fixture
def prefixes(store: MemClient, monkeypatch) -> list[str]:
    """The prefix of every get_row the store is asked for from now on (and, as
    ``store.cells_read``, every cell of every get_cells)."""
    asked: list[str] = []
    real, real_cells = store.get_row, store.get_cells
    store.cells_read = []

    def get_row(row, **kwargs):
        asked.append(kwargs.get("prefix", ""))
        return real(row, **kwargs)

    def get_cells(cells, **kwargs):
        store.cells_read.extend(cells)
        return real_cells(cells, **kwargs)

    monkeypatch.setattr(store, "get_row", get_row)
    monkeypatch.setattr(store, "get_cells", get_cells)
    return asked


def test_a_second_select_of_an_unchanged_folder_reads_no_record(store, calls, folders,
                                                                 prefixes):
    expected = truth(store)
    del prefixes[:]
    assert select(calls, folders) == expected
    assert len(folders) == 40 and prefixes.count(layout.record_prefix(mail.INBOX)) == 1
    cells = len(store.cells_read)
    assert select(calls, folders) == expected
    assert prefixes.count(layout.record_prefix(mail.INBOX)) == 1
    # no record read one by one either (the folder cell may come by get_cells, with usage)
    assert not any("u:" in col for _row, col in store.cells_read[cells:])


def test_changes_by_others_between_two_selects_are_seen(store, calls, folders, prefixes):
    select(calls, folders)
    mail.store_flags(store, USER, mail.INBOX, [3, 4], ["\\Flagged"])   # the webmail
    mail.expunge(store, USER, mail.INBOX, [5, 40])                      # another client
    mail.deliver(store, USER, message(100))                             # a delivery
    mail.store_flags(store, USER, mail.INBOX, [41], ["\\Seen"])
    expected = truth(store)
    del prefixes[:]
    seen = select(calls, folders)
    assert seen == expected
    assert 5 not in seen and 40 not in seen and b"\\Seen" in seen[41][0]
    assert b"\\Flagged" in seen[3][0]
    # the change log and the changed records, not the whole folder again
    assert layout.change_prefix(mail.INBOX) in prefixes
    assert layout.record_prefix(mail.INBOX) not in prefixes
    assert select(calls, folders) == truth(store)


def test_a_folder_behind_more_than_the_log_keeps_is_read_whole(store, calls, folders,
                                                               prefixes):
    select(calls, folders)
    for _ in range(layout.KEEP // 2 + 1):  # two changes each: the log loses the kept point
        mail.store_flags(store, USER, mail.INBOX, [7], ["\\Flagged"])
        mail.store_flags(store, USER, mail.INBOX, [7], ["\\Flagged"], "remove")
    mail.expunge(store, USER, mail.INBOX, [8])
    expected = truth(store)
    del prefixes[:]
    assert select(calls, folders) == expected
    assert layout.record_prefix(mail.INBOX) in prefixes  # read whole


def test_a_folder_made_anew_is_not_answered_from_the_old_copy(store, calls, folders):
    made = mail.create_folder(store, USER, "Projects")
    mail.deliver(store, USER, message(200), folder=made.id)
    assert len(select(calls, folders, "Projects")) == 1
    mail.delete_folder(store, USER, made.id)
    again = mail.create_folder(store, USER, "Projects")
    assert select(calls, folders, "Projects") == truth(store, again.id) == {}


def test_the_copy_is_bounded_in_records_least_recently_selected_first():
    folders = FolderRecords(max_records=100)
    first, second, big = (_folder(1), _folder(2), _folder(3))
    folders.put(USER, first, 5, _records(first, 60))
    folders.put(USER, second, 5, _records(second, 30))
    assert len(folders) == 90 and folders.get(USER, first) is not None  # first is now recent
    folders.put(USER, second, 6, _records(second, 35))                   # replaced, not added
    assert len(folders) == 95
    folders.put("bob", second, 1, _records(second, 10))                  # evicts the oldest
    assert len(folders) == 45
    assert folders.get(USER, first) is None and folders.get(USER, second) is not None
    folders.put(USER, big, 1, _records(big, 101))                        # larger than the bound
    assert folders.get(USER, big) is None and len(folders) <= 100
    other_validity = replace(second, uidvalidity=second.uidvalidity + 1)
    assert folders.get(USER, other_validity) is None


def test_applying_changes_twice_changes_nothing():
    folder = _folder(1)
    records = _records(folder, 5)
    changes = mail.Changes(9, [replace(records[1], flags=("\\Seen",)),
                               replace(records[0], uid=6)], [3])
    once = applied(records, changes)
    assert [r.uid for r in once] == [1, 2, 4, 5, 6] and once[1].flags == ("\\Seen",)
    assert applied(once, changes) == once


def _folder(fid: int) -> mail.Folder:
    return mail.Folder(id=fid, name=f"f{fid}", special=None, uidvalidity=1000 + fid, uidnext=1,
                       modseq=1, exists=0, unseen=0, subscribed=True)


def _records(folder: mail.Folder, count: int) -> tuple[mail.Record, ...]:
    return tuple(mail.Record(fid=folder.id, uid=uid, id=f"{uid:020d}-{'0' * 16}", flags=(),
                             modseq=uid, date=0.0, size=1) for uid in range(1, count + 1))


def test_a_copy_ahead_of_the_folder_is_not_used(store, calls, folders):
    # An account erased and made again within a second gets the same UIDVALIDITY
    # (next_uidvalidity counts seconds) and starts its mod-sequences anew.
    select(calls, folders)
    inbox = mail.get_folder(store, USER, mail.INBOX)
    folders.put(USER, inbox, inbox.modseq + 50, ())
    assert select(calls, folders) == truth(store)

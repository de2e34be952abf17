"""imapd's backend on the mail model, driven as pymap drives it, over the in-memory store.

What these hold: commands on many messages cost a few store calls (batches), not
one per message; a session hears of changes made by others (another client, a
delivery); IDLE wakes within its poll interval; folders are known by id.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from pymap.context import current_command
from pymap.exceptions import MailboxNotFound
from pymap.flags import FlagOp
from pymap.parsing.command.select import FetchCommand
from pymap.parsing.specials import FetchAttribute, FetchRequirement, SequenceSet
from pymap.parsing.specials.flag import Flag, Seen

from raftkv.errors import UnavailableError
from shards.model import mail

from .._imapunit import USER, mailbox, new_session, store_calls
from .._imapunit import numbered as message
from .._memstore import MemClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store() -> MemClient:
    return mailbox()


@pytest.fixture
def session(store: MemClient):
    with store_calls(store) as calls:
        yield new_session(calls)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def fill(store: MemClient, count: int, fid: int = mail.INBOX) -> None:
    for n in range(count):
        mail.deliver(store, USER, message(n), folder=fid)


def ops(store: MemClient, method: str) -> int:
    return len(store.touched(method))


def test_a_header_fetch_of_many_messages_reads_windows_of_headers(store, session):
    fill(store, 450)

    async def fetch() -> list[bytes]:
        _, selected = await session.select_mailbox("INBOX")
        attribute = FetchAttribute(b"BODY.PEEK", FetchAttribute.Section((), b"HEADER.FIELDS",
                                                                       frozenset([b"SUBJECT"])))
        command = FetchCommand(b"a", SequenceSet.all(), [attribute])
        token = current_command.set(command)
        try:
            found, _ = await session.fetch_messages(selected, SequenceSet.all(), False)
            before = ops(store, "get_cells")
            subjects = []
            for _seq, msg in found:
                loaded = await msg.load_content(FetchRequirement.HEADER)
                subjects.append(bytes(loaded.get_message_headers(subset=[b"SUBJECT"])))
            return subjects, ops(store, "get_cells") - before
        finally:
            current_command.reset(token)

    subjects, cell_reads = run(fetch())
    assert len(subjects) == 450 and subjects[7] == b"Subject: number 7\r\n\r\n"
    assert cell_reads <= 3 * 2, cell_reads  # windows of 200 (each a get_cells of <= 256)


def test_sizes_come_from_the_record_without_reading_the_message(store, session):
    fill(store, 3)

    async def sizes() -> list[int]:
        _, selected = await session.select_mailbox("INBOX")
        command = FetchCommand(b"a", SequenceSet.all(), [FetchAttribute(b"RFC822.SIZE"),
                                                        FetchAttribute(b"FLAGS")])
        token = current_command.set(command)
        try:
            found, _ = await session.fetch_messages(selected, SequenceSet.all(), False)
            before = ops(store, "get")
            loaded = [await m.load_content(FetchRequirement.CONTENT) for _, m in found]
            assert ops(store, "get") == before  # no raw message read
            return [item.get_size() for item in loaded]
        finally:
            current_command.reset(token)

    assert run(sizes()) == [len(message(n)) for n in range(3)]


def test_store_on_sixty_messages_is_a_few_mutations_and_reports_every_message(store, session):
    fill(store, 60)

    async def flag() -> tuple[list[Any], int]:
        _, selected = await session.select_mailbox("INBOX")
        before = ops(store, "mutate_row")
        answered, _ = await session.update_flags(selected, SequenceSet.all(),
                                                 frozenset([Seen, Flag(b"$Work")]), FlagOp.ADD)
        return list(answered), ops(store, "mutate_row") - before

    answered, mutations = run(flag())
    assert len(answered) == 60 and mutations == 3  # 25 + 25 + 10
    assert all({Seen, Flag(b"$Work")} <= msg.permanent_flags for _, msg in answered)
    assert mail.get_folder(store, USER, mail.INBOX).unseen == 0


def test_move_answers_copyuid_and_the_session_sees_the_messages_go(store, session):
    fill(store, 30)
    folder = mail.create_folder(store, USER, "Archive")

    async def move():
        _, selected = await session.select_mailbox("INBOX")
        copy_uid, selected = await session.move_messages(
            selected, SequenceSet.build([2, 3, 30], uid=True), "Archive")
        return copy_uid, selected

    copy_uid, selected = run(move())
    assert bytes(copy_uid) == b"[COPYUID %d 2:3,30 1:3]" % folder.uidvalidity
    assert selected.messages.exists == 27
    assert [r.uid for r in mail.list_folder(store, USER, folder.id)] == [1, 2, 3]


def test_changes_by_others_reach_the_session(store, session):
    fill(store, 5)

    async def watch():
        _, selected = await session.select_mailbox("INBOX")
        mail.store_flags(store, USER, mail.INBOX, [1], ["\\Flagged"])  # the webmail stars one
        mail.expunge(store, USER, mail.INBOX, [2])                       # another client
        fill(store, 1)                                                   # a delivery (dup id 0)
        mail.deliver(store, USER, message(99))
        selected = await session.check_mailbox(selected)
        return selected

    selected = run(watch())
    assert selected.messages.exists == 5
    assert Flag(b"\\Flagged") in selected.messages.get(1).permanent_flags
    assert selected.messages.get(2) is None and selected.messages.get(6) is not None


def test_idle_wakes_within_its_poll_after_a_delivery(store, session):
    fill(store, 1)

    async def idle() -> float:
        _, selected = await session.select_mailbox("INBOX")
        done = SimpleNamespace(is_set=lambda: False, wait=lambda timeout: asyncio.sleep(timeout))
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: mail.deliver(store, USER, message(5)))
        started = time.monotonic()
        selected = await session.check_mailbox(selected, wait_on=done)
        assert selected.messages.exists == 2
        return time.monotonic() - started

    assert 0.25 < run(idle()) < 1.0


def test_a_selected_folder_is_found_by_id_after_a_rename_and_gone_after_a_delete(store, session):
    folder = mail.create_folder(store, USER, "Projects")

    async def follow():
        _, selected = await session.select_mailbox("Projects")
        mail.rename_folder(store, USER, folder.id, "Done")
        selected = await session.check_mailbox(selected)  # still there, by id
        mail.delete_folder(store, USER, folder.id)
        mail.create_folder(store, USER, "Done")             # same name, a new folder
        with pytest.raises(MailboxNotFound):
            await session.check_mailbox(selected)

    run(follow())


def test_special_folders_are_listed_with_their_attributes(store, session):
    listed, _ = run(session.list_mailboxes("", "*"))
    attributes = {name: set(attrs) for name, _, attrs in listed}
    assert {b"Sent"} <= attributes["Sent"] and {b"Trash"} <= attributes["Trash"]
    assert {b"Drafts"} <= attributes["Drafts"] and {b"Junk"} <= attributes["Junk"]
    assert not attributes["INBOX"] & {b"Sent", b"Trash", b"Drafts", b"Junk"}


def test_idle_outlives_a_store_that_does_not_answer_for_a_moment(store, session, monkeypatch):
    fill(store, 1)
    failing = {"left": 3}
    real_get = store.get

    real_get_cells = store.get_cells

    def flaky_get(row, col, **kwargs):
        if col.startswith("f:") and failing["left"] > 0:
            failing["left"] -= 1
            raise UnavailableError("no leader just now")
        return real_get(row, col, **kwargs)

    def flaky_get_cells(cells, **kwargs):  # a folder is read with its usage cell
        if any(col.startswith("f:") for _, col in cells) and failing["left"] > 0:
            failing["left"] -= 1
            raise UnavailableError("no leader just now")
        return real_get_cells(cells, **kwargs)

    async def idle():
        _, selected = await session.select_mailbox("INBOX")
        monkeypatch.setattr(store, "get", flaky_get)
        monkeypatch.setattr(store, "get_cells", flaky_get_cells)
        done = SimpleNamespace(is_set=lambda: False, wait=lambda timeout: asyncio.sleep(timeout))
        rounds = [await session.check_mailbox(selected, wait_on=done) for _ in range(3)]
        mail.deliver(store, USER, message(7))
        selected = await session.check_mailbox(rounds[-1], wait_on=done)
        return selected

    assert run(idle()).messages.exists == 2
    assert failing["left"] == 0

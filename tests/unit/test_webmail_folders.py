"""The webmail's folders in process on the in-memory store (tests._memstore: the real state
machine): the folder list's order and nesting, the search box's stand-in, drafts as
messages, the Trash sweep's walk over every shard, and hostile form fields."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from portal import readmarks
from portal.drafts import draft_bytes, draft_fields
from portal.heartbeat import TrashSweeper
from portal.mailfolders import folder_list, uid_list
from portal.mailsearch import parse_query, search_folders
from shards.model import accounts, mail, mailbox

from .._memstore import MemClient
from .._portal import csrf_of, logged_in


@pytest.fixture
def store():
    store = MemClient()
    accounts.create_user(store, "bob", "correct horse battery")
    return store


@pytest.fixture
def http(app):
    return logged_in(app, "bob")  # app: the conftest's portal over this module's store


def _deliver(store, subject: str, sender: str = "ann@example.test", user: str = "bob") -> str:
    return mailbox.deliver(store, user, f"From: {sender}\r\nSubject: {subject}\r\n\r\nx".encode())


def test_the_folder_list_orders_specials_then_nests_the_users_own(store):
    _deliver(store, "one")
    for name in ("b", "a/x/deep", "a", "a b", "a/y"):
        mail.create_folder(store, "bob", name)
    shown = [(f.label, f.depth) for f in folder_list(store, "bob")]
    assert shown == [("Inbox", 0), ("Sent", 0), ("Drafts", 0), ("Junk", 0), ("Trash", 0),
                     ("a", 0), ("x/deep", 1), ("y", 1), ("a b", 0), ("b", 0)]
    assert folder_list(store, "bob")[0].unread == 1


def test_the_search_box_reads_into_the_models_query(store):
    assert parse_query('from:zoe "team lunch" subject:"q 3" after:2026-01-02') == mail.Query(
        sender="zoe", subject="q 3", text="team lunch", since=1767312000.0)
    assert parse_query('"open') == mail.Query(text='"open')
    with pytest.raises(mail.BadQuery):
        parse_query("before:yesterday")
    _deliver(store, "Team lunch", "Zoe <zoe@example.test>")
    _deliver(store, "invoice")
    found, complete = search_folders(store, "bob", [mail.INBOX, mail.SENT],
                                     parse_query("LUNCH"))
    assert [r.subject for r in found] == ["Team lunch"] and complete
    found, _ = search_folders(store, "bob", [mail.INBOX], parse_query("from:zoe invoice"))
    assert found == []


def test_a_draft_round_trips_through_a_message():
    raw = draft_bytes({"to": "half an addr", "subject": "plan", "body": "line 1\nline 2",
                       "in_reply_to": "<a@b>", "forward_of": "../../etc"},
                      "bob@raftcloud.test", "<x1@raftcloud.test>")
    fields = draft_fields(raw)
    assert fields["to"] == "half an addr" and fields["subject"] == "plan"
    assert fields["body"].replace("\r\n", "\n").rstrip("\n") == "line 1\nline 2"
    assert fields["forward_of"] == "" and fields["message_id"] == "<x1@raftcloud.test>"
    with pytest.raises(Exception, match="not allowed"):
        draft_bytes({"subject": "a\nBcc: x@y"}, "bob@raftcloud.test", "<x2@raftcloud.test>")


def test_undo_ids_are_numbers_or_nothing():
    assert uid_list("3,4,15", 100) == [3, 4, 15]
    for bad in ("", "3,,4", "-1", "1e3", "3;4", "9" * 11, ",".join(["1"] * 2000)):
        assert uid_list(bad, 100) == [], bad


def test_the_trash_sweep_walks_every_shard_and_takes_only_old_mail(store):
    users = [f"u{n}" for n in range(12)]
    for user in users:
        accounts.create_user(store, user, "correct horse battery")
        old = _deliver(store, "old", user=user)
        mail.move(store, user, mail.INBOX, [mail.locate(store, user, old).uid], mail.TRASH)
    portal = SimpleNamespace(client=lambda: store,
                             config=SimpleNamespace(cluster=SimpleNamespace(
                                 shards=store.store.shard_count)))
    sweeper = TrashSweeper(portal, interval=3600)  # type: ignore[arg-type]
    sweeper.USERS_PER_STEP = 3  # several steps a shard: the walk resumes within one
    now = time.time()
    sweeper.clock = lambda: now + 31 * 86400
    seen: set[str] = set()
    for _ in range(4 * store.store.shard_count + 20):
        sweeper.step()
        seen.update(sweeper.last_step)
    assert seen >= {"bob", *users}
    assert all(mail.list_newest(store, user, mail.TRASH, limit=None) == [] for user in users)


def test_the_sweep_leaves_mail_trashed_lately(store):
    msg_id = _deliver(store, "recent")
    mail.move(store, "bob", mail.INBOX, [mail.locate(store, "bob", msg_id).uid], mail.TRASH)
    portal = SimpleNamespace(client=lambda: store,
                             config=SimpleNamespace(cluster=SimpleNamespace(
                                 shards=store.store.shard_count)))
    sweeper = TrashSweeper(portal, interval=3600)  # type: ignore[arg-type]
    sweeper.clock = lambda: time.time() + 29 * 86400
    for _ in range(2 * store.store.shard_count + 2):
        sweeper.step()
    assert mail.locate(store, "bob", msg_id).fid == mail.TRASH


def test_the_sweep_indexes_mail_stored_before_the_index(store):
    msg_id = mailbox.deliver(store, "bob", b"From: ann@example.test\r\nSubject: s\r\n\r\n"
                                           b"quetzalcoatl\r\n")
    index = mail.index.index_row("bob")
    for column in store.get_row(index):  # as if it had been stored before the index
        store.delete(index, column)
    assert store.get(index, f"t:{msg_id}") is None  # unindexed: search would read its body
    portal = SimpleNamespace(client=lambda: store,
                             config=SimpleNamespace(cluster=SimpleNamespace(
                                 shards=store.store.shard_count)))
    sweeper = TrashSweeper(portal, interval=3600)  # type: ignore[arg-type]
    for _ in range(2 * store.store.shard_count + 2):
        sweeper.step()
    assert store.get(index, f"t:{msg_id}") is not None
    found = mail.search(store, "bob", mail.INBOX, mail.Query(body="quetzal"))
    assert found.complete and found.uids == [mail.locate(store, "bob", msg_id).uid]


@pytest.mark.parametrize("path, data, status", [
    ("/mail/f/1/act", {"action": "trash", "uid": ["../1"]}, 404),
    ("/mail/f/1/act", {"action": "trash", "uid": ["1" * 12]}, 404),
    ("/mail/f/1/act", {"action": "move", "to": "x", "uid": ["1"]}, 400),
    ("/mail/f/1/act", {"action": "restore", "uid": ["1"]}, 400),  # only in Trash
    ("/mail/f/1/star", {"star": "<b>"}, 404),
    ("/mail/folders/new", {"name": "x", "parent": "abc"}, 400),
    ("/mail/folders/new", {"name": "x", "parent": "999"}, 404),
    ("/mail/folders/new", {"name": "a\x00b"}, 400),
    ("/mail/f/3/rename", {"name": "Mine"}, 400),
    ("/mail/notanid/star", {"on": "1"}, 404),
    ("/mail/notanid/move", {"to": "1"}, 404),
])
def test_hostile_fields_get_a_clear_answer(store, http, path, data, status):
    _deliver(store, "target")
    response = http.post(path, data={"csrf": csrf_of(http, "/mail"), **data})
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text


def test_a_read_mark_goes_to_the_record_the_page_read_or_follows_a_move(store):
    first, second = _deliver(store, "one"), _deliver(store, "two")
    where = mail.locate(store, "bob", first)
    store.ops.clear()
    readmarks.write(store, "bob", first, (where.fid, where.uid))
    assert [op for op, _row in store.ops] == ["get_cells", "mutate_row"]  # no pointer lookup
    assert mail.locate(store, "bob", first).seen
    stale = mail.locate(store, "bob", second)
    mail.move(store, "bob", mail.INBOX, [stale.uid], mail.JUNK)  # moved after the page read it
    readmarks.write(store, "bob", second, (stale.fid, stale.uid))
    moved = mail.locate(store, "bob", second)
    assert moved.fid == mail.JUNK and moved.seen


def test_the_reader_shows_the_star_with_or_without_the_links_hint(store, http):
    msg_id = _deliver(store, "shiny")
    record = mail.locate(store, "bob", msg_id)
    mail.store_flags(store, "bob", mail.INBOX, [record.uid], [mail.FLAGGED])
    http.get("/mail")  # the worker knows whose session it is: the pointer comes with it
    for path in (f"/mail/{msg_id}", f"/mail/{msg_id}?at={record.fid}.{record.uid}",
                 f"/mail/{msg_id}?at=1.999999"):  # a stale hint: the pointer wins
        page = http.get(path).text
        assert "★ Starred" in page and 'name="on" value="0"' in page, path

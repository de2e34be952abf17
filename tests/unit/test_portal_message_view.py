"""The mail view's per-worker cache of parsed messages (portal.messageview), in process.

A message is parsed once per worker and shown again only while the store says
its raw cell is still the version it was parsed at; a new version is parsed
afresh, and a view is only ever found by the user whose row it came from.  The
store is :class:`tests._memstore.MemClient` (the real state machine); its
``ops`` show what each page asked the store.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage

import pytest
from markupsafe import Markup

from portal import mail
from portal.messageview import MessageView, MessageViewCache
from shards.model import accounts, mailbox
from shards.model import mail as mail_model

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in, unit_portal


def _raw(subject: str, body: str = "Hello there.\n") -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "someone@raftcloud.test"
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes()


@pytest.fixture
def store():
    store = MemClient()
    for user in ("bob", "carol"):
        accounts.create_user(store, user, PASSWORD)
    return store


@pytest.fixture
def parses(monkeypatch):
    """Counts the messages the mail view parses."""
    count = [0]
    real = mail.parse_message

    def counting(raw: bytes):
        count[0] += 1
        return real(raw)

    monkeypatch.setattr(mail, "parse_message", counting)
    return count


def _subject(html: str) -> str:
    return re.search(r"<h1>(.*?)</h1>", html).group(1)


def test_a_message_is_parsed_once_and_its_bytes_not_read_again(app, store, parses):
    msg_id = mailbox.deliver(store, "bob", _raw("Quarterly figures"))
    http = logged_in(app, "bob")
    for _ in range(3):
        response = http.get(f"/mail/{msg_id}")
        assert response.status_code == 200
        assert _subject(response.text) == "Quarterly figures"
    assert parses[0] == 1
    assert app.message_views.hits == 2
    # Each visit still asked the store about the raw cell (by version, no bytes back).
    raw_row = mailbox.message_row("bob", msg_id)
    asked = [op for op in store.ops if op[0] == "get_cells" and raw_row in op[1]]
    assert len(asked) >= 3


def test_a_new_version_of_the_raw_cell_is_not_served_from_the_old_view(app, store, parses):
    msg_id = mailbox.deliver(store, "bob", _raw("First words"))
    http = logged_in(app, "bob")
    assert _subject(http.get(f"/mail/{msg_id}").text) == "First words"
    # Not something delivery does -- a message's bytes never change -- but the cache must
    # not rely on it: another version of the cell is another message to show.
    store.put(mailbox.message_row("bob", msg_id), mailbox.RAW_COLUMN, _raw("Second words"))
    assert _subject(http.get(f"/mail/{msg_id}").text) == "Second words"
    assert parses[0] == 2
    assert _subject(http.get(f"/mail/{msg_id}").text) == "Second words"
    assert parses[0] == 2


def test_a_deleted_message_is_gone_though_its_view_is_kept(app, store):
    msg_id = mailbox.deliver(store, "bob", _raw("Soon gone"))
    http = logged_in(app, "bob")
    assert http.get(f"/mail/{msg_id}").status_code == 200
    assert mailbox.delete_message(store, "bob", msg_id)  # by another frontend
    assert len(app.message_views) == 1
    assert http.get(f"/mail/{msg_id}").status_code == 404


def test_views_are_kept_per_user(app, store, parses):
    """The same message id in two mailboxes (ids are only unique per user), and their raw
    cells at the same version (each shard counts its own): each user sees their own."""
    msg_id = mailbox.deliver(store, "bob", _raw("For bob only"))
    rows = {user: mailbox.message_row(user, msg_id) for user in ("bob", "carol")}
    assert store.shard_of(rows["bob"]) != store.shard_of(rows["carol"])
    # Carol's mailbox gets the same message id: its pointer and its record.
    bob_row = mailbox.mailbox_row("bob")
    for column in [mailbox.META_PREFIX + msg_id, *store.get_row(bob_row, prefix="u:")]:
        store.put(mailbox.mailbox_row("carol"), column, store.get(bob_row, column).value)
    versions = {"bob": store.get(rows["bob"], mailbox.RAW_COLUMN).version, "carol": 0}
    for _ in range(1000):  # write the one behind again until both cells share a version
        if versions["bob"] == versions["carol"]:
            break
        behind = min(versions, key=versions.__getitem__)
        versions[behind] = store.put(rows[behind], mailbox.RAW_COLUMN,
                                     _raw(f"For {behind} only"))
    assert versions["bob"] == versions["carol"]
    http_bob, http_carol = logged_in(app, "bob"), logged_in(app, "carol")
    assert _subject(http_bob.get(f"/mail/{msg_id}").text) == "For bob only"
    assert _subject(http_carol.get(f"/mail/{msg_id}").text) == "For carol only"
    assert _subject(http_bob.get(f"/mail/{msg_id}").text) == "For bob only"
    assert _subject(http_carol.get(f"/mail/{msg_id}").text) == "For carol only"
    assert parses[0] == 2  # bob's once, carol's once


def test_the_cache_is_bounded_in_entries_and_characters():
    def view(chars: int) -> MessageView:
        return MessageView(Markup("x" * chars), None, False, (), ())

    cache = MessageViewCache(size=2, chars=1000)
    cache.put("bob", "a", 1, view(10))
    cache.put("bob", "b", 2, view(10))
    cache.put("bob", "c", 3, view(10))
    assert len(cache) == 2 and cache.version("bob", "a") == 0  # the oldest went first
    assert cache.get("bob", "c", 4) is None and cache.get("bob", "c", 3) is not None
    cache.put("bob", "big", 5, view(101))  # over a tenth of the budget: not kept
    assert cache.version("bob", "big") == 0
    cache = MessageViewCache(size=100, chars=1000)
    for n in range(20):
        cache.put("bob", str(n), n + 1, view(90))
    assert len(cache) == 11 and cache.version("bob", "19") == 20


def test_opening_a_message_marks_it_read_once_whether_or_not_the_worker_knew_it(store):
    """A fresh worker does not read the record on the page (it kept no pointer to name it
    by): the mark is noted anyway and its writer skips a message already read.  A worker
    that kept the pointer reads the record with the session and notes nothing for read mail."""
    msg_id = mailbox.deliver(store, "bob", _raw("Unread at first"))
    inbox = mailbox.mailbox_row("bob")

    def writes() -> int:
        return len([op for op in store.ops if op == ("mutate_row", inbox)])

    for first in (True, False):  # two fresh workers in turn
        app = unit_portal(store)
        try:
            http = logged_in(app, "bob")
            before = writes()
            assert http.get(f"/mail/{msg_id}").status_code == 200  # noted: the worker's thread
            _landed(app)                                                # writes it
            assert writes() == before + (1 if first else 0), "written once, then skipped"
            assert not mailbox.get_summary(store, "bob", msg_id).unread
            marks = app.read_marks.writes
            assert http.get(f"/mail/{msg_id}").status_code == 200  # this worker knows it now
            _landed(app)
            assert app.read_marks.writes == marks, "a read message noted no mark"
        finally:
            app.close()
    assert mail_model.status(store, "bob", mail_model.INBOX).unseen == 0


def _landed(app) -> None:
    """Wait until the worker's pending read marks are written (a mark leaves the pending
    set after its write), at most 10 s."""
    deadline = time.monotonic() + 10
    while app.read_marks.pending("bob") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.read_marks.pending("bob") == set()

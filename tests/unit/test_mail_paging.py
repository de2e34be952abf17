"""Paging a mail folder that is rare among the mailbox's messages (shards.model.mailbox.list_page).

Each folder's records have a prefix of their own, so a page of Sent reads
Sent's cells only, however much mail was received around it; a page's link
names a message, found by its pointer.  When that message has left the folder
since, the page is found by comparing ids, a bounded number of reads, and must
still link on.  The store is :class:`tests._memstore.MemClient` (the real state
machine), the pages the portal's own (werkzeug's test client, no sockets).
"""

from __future__ import annotations

import html
import re

import pytest

from portal import mailfolders
from shards.model import accounts, mailbox

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in

RECEIVED = 300
# Arrival positions among all 360: sent mail is one message in six.
SENT_AT = tuple(range(3, 360, 6))
PAGES = 20             # links followed at most


@pytest.fixture(scope="module")
def store() -> MemClient:
    store = MemClient()
    accounts.create_user(store, "bob", PASSWORD)
    received = iter(range(RECEIVED))
    for position in range(RECEIVED + len(SENT_AT)):
        if position in SENT_AT:
            mailbox.deliver(store, "bob", f"Subject: sent {position}\r\n\r\nx".encode(),
                            folder="sent", unread=False)
        else:
            mailbox.deliver(store, "bob", f"Subject: got {next(received)}\r\n\r\nx".encode())
    return store


@pytest.fixture
def http(app):
    return logged_in(app, "bob")  # app: the conftest's portal over this module's store


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'href="(/mail/f/2\?(?:older|newer)=[^"]+)" rel="{rel}"', page)
    return html.unescape(found.group(1)) if found else None


def _subjects(page: str) -> list[str]:
    return re.findall(r'<a href="/mail/[0-9a-f-]+\?at=\d+\.\d+">(sent \d+|got \d+)</a>', page)


def test_a_page_of_a_rare_folder_reads_only_that_folder(store):
    store.ops.clear()
    page = mailbox.list_page(store, "bob", "sent", limit=mailfolders.PAGE_SIZE)
    assert [m.subject for m in page.messages] == [f"sent {p}" for p in SENT_AT[::-1][:25]]
    assert page.more and page.resume == page.messages[-1].id
    assert [op for op, _row in store.ops] == ["get_row"]
    rest = mailbox.list_page(store, "bob", "sent", older_than=page.resume, limit=mailfolders.PAGE_SIZE)
    assert [m.subject for m in rest.messages] == [f"sent {p}" for p in SENT_AT[::-1][25:50]]
    newer = mailbox.list_page(store, "bob", "sent", newer_than=rest.messages[0].id, limit=10)
    assert [m.subject for m in newer.messages] == [m.subject for m in page.messages[-10:]]
    assert newer.more and newer.resume == newer.messages[0].id


def test_a_page_whose_link_message_is_gone_is_found_by_id():
    client = MemClient()
    ids = [mailbox.deliver(client, "ann", f"Subject: {n}\r\n\r\nx".encode()) for n in range(40)]
    assert mailbox.delete_message(client, "ann", ids[20])
    page = mailbox.list_page(client, "ann", older_than=ids[20], limit=5)
    assert [m.subject for m in page.messages] == ["19", "18", "17", "16", "15"]
    assert page.more and page.resume == ids[15]
    page = mailbox.list_page(client, "ann", newer_than=ids[20], limit=5)
    assert [m.subject for m in page.messages] == ["25", "24", "23", "22", "21"]
    # Read as far as a page may (4 reads of 6) without finding an older one: it links on
    # from the last message read.
    assert mailbox.delete_message(client, "ann", ids[0])
    page = mailbox.list_page(client, "ann", older_than=ids[0], limit=2)
    assert page.messages == [] and page.more and page.resume == ids[15]
    page = mailbox.list_page(client, "ann", older_than=page.resume, limit=2)
    assert [m.subject for m in page.messages] == ["14", "13"]
    bogus = mailbox.list_page(client, "ann", older_than="../etc", limit=2)
    assert bogus.messages == [] and not bogus.more


def test_every_sent_message_is_reachable_by_older_links_and_back_by_newer(http):
    page = http.get("/mail?folder=sent").text
    seen, url = _subjects(page), _link(page, "next")
    for _ in range(PAGES):
        if url is None:
            break
        page = http.get(url).text
        seen += _subjects(page)
        url = _link(page, "next")
    last = _subjects(page)
    assert url is None, "the Older links end"
    assert seen == [f"sent {p}" for p in reversed(SENT_AT)]

    back: list[str] = []
    url = _link(page, "prev")
    for _ in range(PAGES):
        assert url is not None, "a page that is not the first links to newer mail"
        response = http.get(url)
        if response.status_code == 303:  # the newest reached: the first page
            assert response.headers["Location"].endswith("/mail/f/2")
            back = _subjects(http.get(response.headers["Location"]).text) + back
            break
        back = _subjects(response.text) + back
        url = _link(response.text, "prev")
    else:
        pytest.fail("the Newer links never reached the first page")
    assert back == [s for s in seen if s not in last]  # every newer one, in order

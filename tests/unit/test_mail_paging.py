"""Paging a mail folder that is rare among the mailbox's messages (shards.model.mailbox.list_page).

The folders share one row's metadata columns, so a page of Sent reads past
the received mail a bounded number of times.  A read stopped there must still
say "more" and link on from where it stopped, or older sent mail is
unreachable.  The store is :class:`tests._memstore.MemClient` (the real state
machine), the pages the portal's own (werkzeug's test client, no sockets).
"""

from __future__ import annotations

import html
import re

import pytest

from portal import mail
from shards.model import accounts, mailbox

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in, unit_portal

RECEIVED = 300
# Arrival positions among all 303.  The first page's reads (PAGE_READS batches of
# (PAGE_SIZE + 1) * PAGE_READ_FACTOR columns: 208, positions 302 down to 95) find one.
SENT_AT = (5, 50, 100)
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
def http(store):
    app = unit_portal(store)
    yield logged_in(app, "bob")
    app.close()


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'href="(/mail\?folder=sent&amp;(?:older|newer)=[^"]+)" rel="{rel}"', page)
    return html.unescape(found.group(1)) if found else None


def _subjects(page: str) -> list[str]:
    return re.findall(r'<a href="/mail/[0-9a-f-]+">(sent \d+|got \d+)</a>', page)


def test_the_first_page_read_stops_on_a_full_batch_and_says_more(store):
    assert mail.PAGE_SIZE == 25 and mailbox.PAGE_READS * (26 * mailbox.PAGE_READ_FACTOR) == 208
    page = mailbox.list_page(store, "bob", "sent", limit=mail.PAGE_SIZE)
    assert [m.subject for m in page.messages] == ["sent 100"]
    assert page.more and page.resume < page.messages[-1].id  # read on past the last shown
    rest = mailbox.list_page(store, "bob", "sent", older_than=page.resume, limit=mail.PAGE_SIZE)
    assert len(rest.messages) == 2 and not rest.more


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
            assert response.headers["Location"].endswith("/mail?folder=sent")
            break
        back = _subjects(response.text) + back
        url = _link(response.text, "prev")
    else:
        pytest.fail("the Newer links never reached the first page")
    assert back == [s for s in seen if s not in last]  # every newer one, in order

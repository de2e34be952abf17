"""Issue 16: no signed-in page makes more than two sequential store round trips.

Each page is asked of a portal whose caches are empty (cold), then twice more
of the same portal (warm: what the first visit cached; steady: what the
second did too -- a folder's subfolders are kept only from a read made after
its header was confirmed, see portal/cache.py); the store client the portal uses is wrapped at its
boundary (tests/_roundtrips.py) and the store itself is the real 3-replica
group.  The counts are printed (``-s``): the README's table comes from them.
"""

from __future__ import annotations

import threading

import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from portal.pagestore import READER_PREFIX as HELPERS  # a page's concurrent reads' threads
from shards.model import accounts, mail, mailbox

from .._portal import PASSWORD, logged_in, new_folder, signed_up, unique, upload
from .._roundtrips import RoundTripCounter, sequential

pytestmark = pytest.mark.cluster

LIMIT = 2                # sequential round trips a page may make


def _portal(kv_cluster, counters: list[RoundTripCounter]):
    def factory():
        counters.append(RoundTripCounter(kv_cluster.client()))
        return counters[-1]
    config = PortalConfig(cluster=kv_cluster.cluster, frontend=unique("fe-rt"),
                          addr="127.0.0.1:9", background=False)
    return create_app(config, client_factory=factory)


@pytest.fixture(scope="module")
def pages(kv_cluster):
    """A user with mail and a drive three folders deep, an admin; the URLs of their pages."""
    setup = _portal(kv_cluster, [])
    try:
        http, name = signed_up(setup)
        upload(http, "top.txt", b"top")
        first = new_folder(http, "one")
        second = new_folder(http, "two", first)
        third = new_folder(http, "three", second)
        upload(http, "deep.txt", b"deep", folder=third)
        with kv_cluster.client() as client:
            msg_id = mailbox.deliver(client, name, b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n")
            work = mail.create_folder(client, name, "Work").id
            other = mailbox.deliver(client, name, b"From: a@b.test\r\nSubject: yo\r\n\r\nbody\r\n")
            mail.move(client, name, mail.INBOX, [mail.locate(client, name, other).uid], work)
            filed = mail.locate(client, name, other)
            admin = unique("rtadmin")
            accounts.create_user(client, admin, PASSWORD, admin=True)
        admin_sid = logged_in(setup, admin).get_cookie("sid").value
        logged_in(setup, name)  # a second session: the account page lists both
        user_sid = http.get_cookie("sid").value
    finally:
        setup.close()
    return {
        "inbox": (user_sid, "/mail"),
        "mail view": (user_sid, f"/mail/{msg_id}"),
        "mail folder": (user_sid, f"/mail/f/{work}"),
        "mail view from its folder": (user_sid, f"/mail/{other}?at={filed.fid}.{filed.uid}"),
        "drive root": (user_sid, "/drive"),
        "subfolder three deep": (user_sid, f"/drive/d/{third}"),
        "account": (user_sid, "/account"),
        "admin": (admin_sid, "/admin"),
    }


@pytest.mark.parametrize("page", ["inbox", "mail view", "mail folder",
                                  "mail view from its folder", "drive root", "subfolder three deep",
                                  "account", "admin"])
def test_a_page_makes_at_most_two_sequential_round_trips(kv_cluster, pages, page):
    sid, url = pages[page]
    counters: list[RoundTripCounter] = []
    portal = _portal(kv_cluster, counters)
    try:
        http = HTTPClient(portal)
        http.set_cookie("sid", sid)
        me = threading.current_thread().name
        counts = {}
        for state in ("cold", "warm", "steady"):
            if counters:
                counters[0].clear()
            response = http.get(url)
            assert response.status_code == 200, response.text
            assert "Log in" not in response.text, "the page must be the signed-in one"
            calls = counters[0].of_requests(me, HELPERS)
            counts[state] = sequential(calls)
            print(f"{page}: {state} {counts[state]} sequential round trip(s), "
                  f"{len(calls)} call(s): {[c.method for c in calls]}")
        assert max(counts.values()) <= LIMIT, counts
    finally:
        portal.close()

"""Issue 13: a user can delete their account, and every row and blob of theirs goes.

The portal runs in-process against a real 3-replica store (werkzeug's test client).
"""

from __future__ import annotations

import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from portal.sessions import index_row, session_row
from shards.model import accounts, erase, mailbox, outbound
from shards.site import Site

from .._portal import (
    ADMIN_PASSWORD,
    PASSWORD,
    file_ids,
    logged_in,
    post,
    signed_up,
    upload,
)

pytestmark = pytest.mark.cluster

BIG = bytes(range(256)) * 400  # 100 KiB: stored as blob chunks, not inline


@pytest.fixture(scope="module")
def app(kv_cluster):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-erase", addr="127.0.0.1:9",
                          admin_password=ADMIN_PASSWORD, background=False)
    portal = create_app(config, client_factory=kv_cluster.client)
    yield portal
    portal.close()


def _filled(app, client) -> tuple[HTTPClient, str]:
    """A user with files, mail, a second session, login counters and two-factor data."""
    http, name = signed_up(app)
    assert upload(http, "big.bin", BIG).status_code == 303
    assert upload(http, "small.txt", b"hello").status_code == 303
    assert post(http, "/drive/mkdir", {"name": "folder", "folder": "root"},
                "/drive").status_code == 303
    mailbox.deliver(client, name, b"Subject: one\r\nMessage-ID: <a1@x>\r\n\r\nbody\r\n")
    mailbox.deliver(client, name, b"Subject: two\r\nMessage-ID: <a2@x>\r\n\r\n" + BIG)
    assert post(HTTPClient(app), "/login", {"username": name, "password": "wrong one!"}
                ).status_code == 403  # a failure counter in {name}/login
    post(http, "/account/2fa/begin", {"password": PASSWORD}, "/account")  # a TOTP cell
    return http, name


def _rows_of(client, name: str) -> dict[str, dict]:
    """Every row the user could own, with its cells (empty dicts for gone rows)."""
    rows = {row: client.get_row(row) for row in erase.user_rows(client, name)}
    for row in (accounts.account_row(name), f"{{{name}}}/drive", f"{{{name}}}/mail",
                f"{{{name}}}/login", index_row(name)):
        rows.setdefault(row, client.get_row(row))
    return rows


def test_deleting_an_account_removes_every_row_and_nothing_of_others(app, client, kv_cluster):
    http, name = _filled(app, client)
    other_http, other = _filled(app, client)
    phone = logged_in(app, name)
    files = file_ids(http)
    mail = [m.id for m in mailbox.list_messages(client, name)]
    sids = [h.get_cookie("sid").value for h in (http, phone)]
    outbound.enqueue(client, f"{name}@{Site.of(kv_cluster.cluster).domains[0]}", ["x@remote.example"],
                     b"Subject: out\r\nMessage-ID: <q1@x>\r\n\r\nqueued\r\n")
    outbound.enqueue(client, f"{other}@{Site.of(kv_cluster.cluster).domains[0]}", ["x@remote.example"],
                     b"Subject: out\r\nMessage-ID: <q2@x>\r\n\r\nqueued\r\n")
    before = _rows_of(client, name)
    assert len(erase.user_rows(client, name)) >= 7 and all(before.values())
    other_before = _rows_of(client, other)

    # Asked for the password and a confirmation first; either wrong changes nothing.
    assert "Type your user name" in http.get("/account/delete").text
    assert post(http, "/account/delete", {"password": "not the password", "confirm": name},
                "/account/delete").status_code == 403
    assert post(http, "/account/delete", {"password": PASSWORD, "confirm": "someone"},
                "/account/delete").status_code == 400
    after = _rows_of(client, name)
    # Only the failure counters moved (the wrong password was counted).
    assert {row for row in before if after[row] != before[row]} <= {f"{{{name}}}/login"}

    done = post(http, "/account/delete", {"password": PASSWORD, "confirm": name},
                "/account/delete")
    assert done.status_code == 200 and "Account deleted" in done.text

    # What was checked: every row tagged {name} (one scan of the user's shard), the account
    # row, the drive's file rows and the mailbox's message rows, both sessions and the index,
    # and the outbound queue.
    assert erase.user_rows(client, name) == []
    assert all(cells == {} for cells in _rows_of(client, name).values())
    for file_id in files:
        assert client.get_row(f"{{{name}}}/file:{file_id}") == {}
    for msg_id in mail:
        assert client.get_row(mailbox.message_row(name, msg_id)) == {}
    for sid in sids:
        assert client.get_row(session_row(sid)) == {}
    assert [e.sender.split("@")[0] for e in outbound.pending(client)] == [other]

    # Logged out everywhere, and the name no longer logs in.
    for browser in (http, phone):
        assert f"Hello, {name}" not in browser.get("/").text
    assert post(HTTPClient(app), "/login", {"username": name, "password": PASSWORD}
                ).status_code == 403
    assert not accounts.user_exists(client, name)

    # The other user's data is untouched.
    assert _rows_of(client, other) == other_before
    assert other_http.get(f"/drive/{file_ids(other_http)[0]}").status_code == 200
    assert f"Hello, {other}" in other_http.get("/").text
    for entry in outbound.pending(client):
        outbound.finish(client, entry)


def test_an_interrupted_deletion_is_finished_from_the_session(app, client):
    http, name = _filled(app, client)
    # As if the frontend died right after marking the account.
    erase.mark_deleting(client, name)
    assert post(HTTPClient(app), "/login", {"username": name, "password": PASSWORD}
                ).status_code == 403, "no login while deleting"
    page = http.get("/account")
    assert "interrupted" in page.text
    done = post(http, "/account/delete", {}, "/account/delete")
    assert done.status_code == 200 and "Account deleted" in done.text
    assert erase.user_rows(client, name) == []
    assert client.get_row(accounts.account_row(name)) == {}


def test_the_admin_cannot_delete_itself(app, kv_cluster, client):
    admin = Site.of(kv_cluster.cluster).admin_user
    try:  # made by the first portal with background work; this module runs none
        accounts.create_user(client, admin, ADMIN_PASSWORD, admin=True)
    except accounts.UserExists:
        pass
    http = logged_in(app, admin, ADMIN_PASSWORD)
    assert "cannot be deleted" in http.get("/account").text
    refused = post(http, "/account/delete", {"password": ADMIN_PASSWORD, "confirm": admin},
                   "/account")
    assert refused.status_code == 403
    assert accounts.verify_password(client, admin, ADMIN_PASSWORD)

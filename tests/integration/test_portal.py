"""The portal against a real 3-replica store, driven in-process by werkzeug's test client."""

from __future__ import annotations

import os
import secrets
import threading
import time

import pytest
from werkzeug.test import Client as HTTPClient

import shards
from portal import PortalConfig, create_app
from portal.mail import MAIL_CSP
from portal.mailhtml import SANDBOX, frame_csp
from portal.sessions import index_row
from raftkv.cluster import load_cluster
from shards.model import accounts, mailbox

from .._portal import ADMIN_PASSWORD, PASSWORD, file_ids, post, signed_up, unique, upload
from .._procs import wait_for
from ..cluster import write_cluster_file

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def app(kv_cluster):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-test", addr="127.0.0.1:9",
                          admin_password=ADMIN_PASSWORD, heartbeat_interval=0.5)
    portal = create_app(config, client_factory=kv_cluster.client)
    yield portal
    portal.close()


def test_signup_login_logout(app):
    http, name = signed_up(app)
    assert f"Hello, {name}" in http.get("/").text
    assert post(http, "/logout", {}).status_code == 303
    assert "Hello" not in http.get("/").text

    wrong = post(http, "/login", {"username": name, "password": "not the password"})
    assert wrong.status_code == 403
    assert "Wrong user name or password" in wrong.text and "Traceback" not in wrong.text
    assert "Hello" not in http.get("/").text

    right = post(http, "/login", {"username": name.upper(), "password": PASSWORD,
                                  "next": "/drive"})
    assert (right.status_code, right.headers["Location"]) == (303, "/drive")
    assert f"Hello, {name}" in http.get("/").text


def test_signup_rejects_taken_reserved_and_invalid_names(app):
    _, name = signed_up(app)
    for taken in (name, "admin", "postmaster", "-bad", "x" * 33):
        response = post(HTTPClient(app), "/signup",
                        {"username": taken, "password": PASSWORD, "password2": PASSWORD},
                        "/signup")
        assert response.status_code == 400, taken
        assert 'class="error"' in response.text


def test_racing_signups_have_one_winner(kv_cluster):
    name, results = unique("race"), []
    with kv_cluster.client() as client:
        def attempt(password: str) -> None:
            try:
                accounts.create_user(client, name, password)
                results.append(password)
            except accounts.UserExists:
                results.append(None)
        threads = [threading.Thread(target=attempt, args=(f"password-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [p for p in results if p is not None]
        assert len(results) == 4 and len(winners) == 1
        assert accounts.verify_password(client, name, winners[0])


def test_session_fixation_is_prevented(app):
    _, name = signed_up(app)
    planted = secrets.token_urlsafe(32)
    victim = HTTPClient(app)
    victim.set_cookie("sid", planted)
    response = post(victim, "/login", {"username": name, "password": PASSWORD})
    assert response.status_code == 303
    assert victim.get_cookie("sid").value != planted
    attacker = HTTPClient(app)
    attacker.set_cookie("sid", planted)
    assert attacker.get("/drive").status_code == 303  # still anonymous: sent to /login


def test_upload_download_round_trip(app):
    http, _ = signed_up(app)
    content = os.urandom(3 * 1024 * 1024 + 17)
    assert upload(http, "data.bin", content).status_code == 303
    [file_id] = file_ids(http)
    response = http.get(f"/drive/{file_id}")
    assert response.status_code == 200
    assert response.data == content
    assert response.headers["Content-Length"] == str(len(content))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="data.bin"')
    head = http.head(f"/drive/{file_id}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(content))

    question = post(http, f"/drive/{file_id}/delete", {}, "/drive")  # asked, nothing deleted
    assert question.status_code == 200 and "to Trash?" in question.text and file_ids(http)
    assert post(http, f"/drive/{file_id}/delete", {"confirm": "yes"}, "/drive").status_code == 303
    assert file_ids(http) == []
    assert http.get(f"/drive/{file_id}").status_code == 404


def test_another_user_cannot_fetch_my_file(app):
    alice, _ = signed_up(app)
    upload(alice, "secret.txt", b"alice's secret", "text/plain")
    [file_id] = file_ids(alice)
    mallory, _ = signed_up(app)
    assert mallory.get(f"/drive/{file_id}").status_code == 404
    assert post(mallory, f"/drive/{file_id}/delete", {}, "/drive").status_code == 404
    assert HTTPClient(app).get(f"/drive/{file_id}").status_code == 303  # anonymous: to /login
    assert alice.get(f"/drive/{file_id}").data == b"alice's secret"


def test_password_change_ends_other_sessions(app):
    first, name = signed_up(app)
    second = HTTPClient(app)
    post(second, "/login", {"username": name, "password": PASSWORD})
    assert "Hello" in second.get("/").text
    new = "a brand new password"
    response = post(first, "/password", {"old": PASSWORD, "new": new, "new2": new}, "/password")
    assert response.status_code == 200 and "has been changed" in response.text
    assert "Hello" in first.get("/").text
    assert "Hello" not in second.get("/").text
    wrong = post(first, "/password", {"old": PASSWORD, "new": new, "new2": new}, "/password")
    assert wrong.status_code == 400


def test_inbox_lists_and_shows_mail_escaped(app, kv_cluster):
    http, name = signed_up(app)
    raw = (f"From: Eve <eve@x.test>\r\nTo: {name}@raftcloud.test\r\n"
           "Subject: <b>hi</b>\r\n\r\n<script>alert(1)</script>\r\n").encode()
    html_only = (b"From: h@x.test\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n"
                 b'<p>ok<img src="http://tracker.test/p.gif"><script>x()</script></p>\r\n')
    with kv_cluster.client() as client:
        plain_id = mailbox.deliver(client, name, raw)
        html_id = mailbox.deliver(client, name, html_only)
    inbox = http.get("/mail").text
    assert "&lt;b&gt;hi&lt;/b&gt;" in inbox and 'class="unread"' in inbox

    shown = http.get(f"/mail/{plain_id}")
    assert shown.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text and "<script>" not in shown.text
    html = http.get(f"/mail/{html_id}")
    assert html.headers["Content-Security-Policy"] == MAIL_CSP
    assert "tracker" not in html.text and "<script>" not in html.text
    assert (f'<iframe class="mail-html" title="The message" sandbox="{SANDBOX}" '
            f'src="/mail/{html_id}/html"></iframe>') in html.text
    frame = http.get(f"/mail/{html_id}/html")  # cleaned; the tracker stays blocked by the CSP
    assert frame.headers["Content-Security-Policy"] == frame_csp(False)
    assert "<p>ok" in frame.text and "<script>" not in frame.text
    assert 'class="unread"' not in http.get("/mail").text

    question = post(http, f"/mail/{plain_id}/delete", {}, "/mail")  # asked, nothing moved
    assert question.status_code == 200 and "Move this message to Trash?" in question.text
    with kv_cluster.client() as client:
        assert mailbox.get_summary(client, name, plain_id).folder == "inbox"
        moved = post(http, f"/mail/{plain_id}/delete", {"confirm": "yes"}, "/mail")
        assert moved.status_code == 303 and "undo=" in moved.headers["Location"]
        assert mailbox.get_summary(client, name, plain_id).folder == "trash"  # undoable
    question = post(http, f"/mail/{plain_id}/delete", {}, "/mail")  # in Trash: for good?
    assert question.status_code == 200 and "for good?" in question.text
    assert post(http, f"/mail/{plain_id}/delete", {"confirm": "yes"}, "/mail").status_code == 303
    assert http.get(f"/mail/{plain_id}").status_code == 404


def test_healthz(app):
    response = HTTPClient(app).get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["frontend"] == "fe-test"
    assert body["load"] >= 1  # this very request is in flight
    assert "Set-Cookie" not in response.headers


def test_admin_console(app):
    http, _ = signed_up(app)
    assert http.get("/admin").status_code == 403
    admin = HTTPClient(app)
    wait_for(lambda: post(admin, "/login", {"username": "admin", "password": ADMIN_PASSWORD})
             .status_code == 303, 20, "the admin account to be created")

    def registered() -> str | None:
        page = admin.get("/admin").text
        return page if "fe-test" in page else None

    page = wait_for(registered, 20, "the frontend to register", interval=0.5)
    assert "g1a" in page and "leader" in page


def test_store_down_gives_503_pages_with_retry_after(tmp_path):
    # A cluster file whose replicas are not running: the real client, a real refusal.
    config_file = write_cluster_file(tmp_path, groups=1)
    cluster = load_cluster(config_file)
    config = PortalConfig(cluster=cluster, frontend="fe-down", background=False)
    portal = create_app(config, client_factory=lambda: shards.Client(cluster, timeout=1.0))
    try:
        http = HTTPClient(portal)
        assert http.get("/").status_code == 200  # a first visit needs no store
        page = http.get("/")  # now with a sid cookie: the session lookup fails
        assert page.status_code == 503 and page.headers["Retry-After"] == "2"
        assert "<html" in page.text and "try again" in page.text
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json["status"] == "unavailable"
    finally:
        portal.close()


def test_sessions_expire_and_are_pruned(kv_cluster):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-ttl", session_ttl=0.5,
                          background=False)
    portal = create_app(config, client_factory=kv_cluster.client)
    try:
        http, name = signed_up(portal)
        sid = http.get_cookie("sid").value
        time.sleep(0.6)
        # The browser's copy of the cookie expires too; keep sending it, to
        # see the store refuse the expired session.
        http.set_cookie("sid", sid)
        assert "Hello" not in http.get("/").text
        assert post(http, "/login", {"username": name, "password": PASSWORD}).status_code == 303
        with kv_cluster.client() as client:
            assert len(client.get_row(index_row(name), prefix="s:")) == 1
    finally:
        portal.close()

"""The admin console's users, mail queue and raw data over HTTP, on a store of its own.

A browser adds nothing to these (the layout walk in test_pages_layout and the charts
test in test_admin_charts cover how they look): werkzeug's client posts the forms
with their CSRF tokens to a portal on real replicas.  The queue is worked by smtpd's
own outbound worker, one round at a time, with dnsmasq's answers: one domain's
exchanger is an address nobody listens on (the message stays, retrying), another
domain does not exist (the message bounces).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from werkzeug.test import Client as HTTPClient

from shards.model import accounts, outbound
from smtpd.outbound import OutboundConfig, OutboundWorker

from .._mail import local_dns
from .._portal import PASSWORD, csrf_of, logged_in, post, store_portal, store_with_admin, upload
from .._procs import free_port
from ..cluster import KVCluster

pytestmark = pytest.mark.cluster

ADMIN, ADMIN_PASSWORD = "admin", "admin-password-9"
DOWN_MX = "127.0.0.29"  # an exchanger nobody listens on
MIB = 1 << 20


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[KVCluster]:
    with store_with_admin(tmp_path_factory.mktemp("console"), ADMIN, ADMIN_PASSWORD) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def app(store):
    with store_portal(store, "fe-console", background=False) as portal:
        yield portal


@pytest.fixture
def admin(app) -> HTTPClient:
    return logged_in(app, ADMIN, ADMIN_PASSWORD)


def _user(app, name: str) -> HTTPClient:
    http = HTTPClient(app)
    response = post(http, "/signup", {"username": name, "password": PASSWORD,
                                      "password2": PASSWORD}, "/signup")
    assert response.status_code == 303, response.text
    return http


def _login_status(app, name: str, password: str) -> int:
    http = HTTPClient(app)
    return post(http, "/login", {"username": name, "password": password}).status_code


def _notice(http: HTTPClient, response) -> str:
    assert response.status_code == 303, response.text
    page = http.get(response.headers["Location"]).text
    return re.search(r'<div id="notice"[^>]*>([^<]*)</div>', page).group(1)


def _act(http: HTTPClient, name: str, action: str, **fields: str):
    return post(http, f"/admin/users/{name}/{action}", fields, f"/admin/users/{name}")


def test_the_users_are_listed_by_name_a_page_at_a_time_and_searched_by_prefix(app, admin, store):
    tag = secrets.token_hex(2)
    names = sorted(f"p{tag}{i:02}" for i in range(23))
    with store.client() as client:
        for name in names:  # the record only: 23 argon2 hashes would be most of the test
            client.put(accounts.account_row(name), accounts.ACCOUNT_COL, msgpack.packb(
                {"v": 1, "name": name, "hash": "", "admin": False, "created": 1_764_950_400.0}))
    first = admin.get(f"/admin/users?q=p{tag}")
    assert first.status_code == 200
    listed = re.findall(r'<tr id="user-([^"]+)">', first.text)
    assert listed == names[:20]
    following = re.search(r'href="([^"]+)" rel="next"', first.text).group(1).replace("&amp;", "&")
    second = re.findall(r'<tr id="user-([^"]+)">', admin.get(following).text)
    assert second == names[20:]
    assert re.findall(r'<tr id="user-([^"]+)">', admin.get(f"/admin/users?q=p{tag}1").text) == \
        [n for n in names if n.startswith(f"p{tag}1")]
    assert "<time datetime=" in first.text  # the created time, for the page script
    everyone = re.findall(r'<tr id="user-([^"]+)">', admin.get("/admin/users").text)
    assert everyone == sorted(everyone) and ADMIN in everyone
    assert admin.get("/admin/users?q=Bad%20Name").status_code == 400


def test_disabling_asks_first_then_signs_the_user_out_everywhere_until_enabled(app, admin):
    name = f"dis{secrets.token_hex(3)}"
    victim = _user(app, name)
    assert victim.get("/drive").status_code == 200
    asked = _act(admin, name, "disable")
    assert asked.status_code == 409 and f"Disable {name}?" in asked.text
    assert _login_status(app, name, PASSWORD) == 303  # nothing done yet
    assert _notice(admin, _act(admin, name, "disable", confirm="yes")) == \
        "The user is disabled and signed out everywhere."
    assert victim.get("/drive").status_code == 303  # their session is gone: to /login
    assert _login_status(app, name, PASSWORD) == 403  # refused
    assert ">disabled" in admin.get(f"/admin/users/{name}").text
    assert _notice(admin, _act(admin, name, "enable")) == "The user is enabled again."
    assert _login_status(app, name, PASSWORD) == 303


def test_a_reset_asks_first_and_shows_a_new_password_once(app, admin):
    name = f"rst{secrets.token_hex(3)}"
    _user(app, name)
    asked = _act(admin, name, "reset")
    assert asked.status_code == 409 and "Reset the password of" in asked.text
    assert _login_status(app, name, PASSWORD) == 303
    shown = _act(admin, name, "reset", confirm="yes")
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    assert "The password has been reset." in shown.text
    new = re.search(r'<p class="secret" id="new-password"><code>([^<]+)</code>', shown.text).group(1)
    assert _login_status(app, name, PASSWORD) == 403
    assert _login_status(app, name, new) == 303
    assert new not in admin.get(f"/admin/users/{name}").text  # shown on that answer only


def test_a_quota_of_their_own_limits_a_users_uploads(app, admin):
    name = f"quo{secrets.token_hex(3)}"
    user = _user(app, name)
    assert _notice(admin, _act(admin, name, "quota", quota_mib="1")) == "The quota is set."
    assert "of 1 MB" in user.get("/drive").text
    assert "of 1 MB" in admin.get(f"/admin/users/{name}").text
    assert upload(user, "big.bin", os.urandom(2 * MIB)).status_code == 413
    assert upload(user, "small.bin", os.urandom(MIB // 2)).status_code == 303
    assert _notice(admin, _act(admin, name, "quota", quota_mib="")) == "The quota is set."
    assert upload(user, "big.bin", os.urandom(2 * MIB)).status_code == 303  # the default, 1 GiB
    assert _act(admin, name, "quota", quota_mib="lots").status_code == 400


def test_the_users_pages_are_the_admins_and_their_forms_need_the_token(app, admin):
    name = f"tok{secrets.token_hex(3)}"
    user = _user(app, name)
    for path in ("/admin/users", f"/admin/users/{name}", "/admin/queue", "/admin/charts",
                 "/admin/charts.json"):
        assert user.get(path).status_code == 403, path
    assert post(user, f"/admin/users/{name}/enable", {}).status_code == 403
    assert admin.post(f"/admin/users/{name}/disable",
                      data={"confirm": "yes"}).status_code == 403  # no CSRF token
    assert admin.post(f"/admin/users/{name}/disable", data={
        "confirm": "yes", "csrf": csrf_of(user, "/drive")}).status_code == 403  # another's
    assert _login_status(app, name, PASSWORD) == 303
    assert admin.get("/admin/users/nobody-here").status_code == 404
    assert _act(admin, ADMIN, "disable", confirm="yes").status_code == 400  # not oneself


@pytest.fixture(scope="module")
def dns(tmp_path_factory) -> Iterator[str]:
    if shutil.which("dnsmasq") is None and Path("/usr/sbin/dnsmasq").exists():
        os.environ["PATH"] += os.pathsep + "/usr/sbin"
    records = ["--mx-host=down.test,mx.down.test,10", f"--host-record=mx.down.test,{DOWN_MX}"]
    with local_dns(tmp_path_factory.mktemp("dns"), records) as address:
        yield address


def test_the_queue_shows_pending_retrying_with_the_error_and_bounced(admin, store, dns):
    sender = f"{ADMIN}@raftcloud.test"
    tag = secrets.token_hex(3)
    message = (f"From: {sender}\r\nSubject: q {tag}\r\nMessage-ID: <{tag}.%d@x>\r\n\r\nhi\r\n")
    with store.client() as client:
        outbound.enqueue(client, sender, [f"far{tag}@down.test"], (message % 1).encode())
        outbound.enqueue(client, sender, [f"none{tag}@nonexistent.test"], (message % 2).encode())
        page = admin.get("/admin/queue").text
        assert re.search(r"Pending <span>2</span>", page) and f"far{tag}@down.test" in page
        worker = OutboundWorker(OutboundConfig(
            hostname="mx.raftcloud.test", domains=("raftcloud.test",), resolver=dns,
            remote_port=free_port(), retry_base=3600, greeting_timeout=2, command_timeout=2,
            allow_private=True), client, name="console-test")
        assert worker.run_once() == 2  # one real delivery attempt each
    page = admin.get("/admin/queue").text
    assert re.search(r"Pending <span>0</span>", page)
    assert re.search(r"Retrying <span>1</span>", page)
    assert re.search(r"Bounced, last 7 days <span>1</span>", page)
    retrying = re.search(r'<table class="list queue" id="retrying".*?</table>', page, re.S).group(0)
    assert f"far{tag}@down.test" in retrying and DOWN_MX in retrying  # the last error names it
    assert retrying.count("<time datetime=") == 2  # queued, and the next attempt in an hour
    bounced = re.search(r'<table class="list queue" id="bounced".*?</table>', page, re.S).group(0)
    assert f"none{tag}@nonexistent.test" in bounced and "does not exist" in bounced


def test_with_metrics_off_the_charts_say_so(admin):
    page = admin.get("/admin/charts")
    assert page.status_code == 200 and 'id="metrics-off"' in page.text
    assert "admin.js" not in page.text  # nothing to draw, no script
    assert admin.get("/admin/charts.json").json == {"enabled": False}

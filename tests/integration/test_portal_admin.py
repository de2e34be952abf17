"""The admin console against a store of its own and a stand-in for the host supervisor.

The supervisor here records what it is asked and answers like ``raftcloud up``
does (the real one drives the browser test); the replicas are real, and one
is really killed to see the console warn before a group loses its majority.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.test import Client as HTTPClient

from deploy.launcher import control_token
from portal import PortalConfig, create_app
from shards.model import accounts

from .._portal import logged_in, post, signed_up, store_with_admin
from .._procs import free_port, wait_for
from ..cluster import KVCluster

pytestmark = pytest.mark.cluster

ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-9"


class FakeSupervisor:
    """GET /processes, POST /processes/<name>/stop|start, behind the launcher's bearer token."""

    def __init__(self, secret: bytes, names: list[str]) -> None:
        self.alive = dict.fromkeys(names, True)
        self.calls: list[str] = []
        token = f"Bearer {control_token(secret)}"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != token:
                    return self._reply(401, {"error": "unauthorized"})
                self._reply(200, [{"name": n, "kind": "storage", "alive": a}
                                  for n, a in fake.alive.items()])

            def do_POST(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != token:
                    return self._reply(401, {"error": "unauthorized"})
                _, _, name, verb = self.path.split("/")
                fake.calls.append(f"{verb} {name}")
                fake.alive[name] = verb == "start"
                self._reply(200, {"ok": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[KVCluster]:
    with store_with_admin(tmp_path_factory.mktemp("admin"), ADMIN, ADMIN_PASSWORD) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def supervisor(store) -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor(store.cluster.secret, ["g1a", "g1b", "g1c"])
    yield fake
    fake.close()


def make_app(store, control: dict[str, str]):
    cluster = dataclasses.replace(store.cluster, tables={**store.cluster.tables, "control": control})
    return create_app(PortalConfig(cluster=cluster, frontend="fe-admin", background=False),
                      client_factory=store.client)


@pytest.fixture(scope="module")
def app(store, supervisor):
    portal = make_app(store, {"local": supervisor.addr})
    yield portal
    portal.close()


@pytest.fixture
def admin(app) -> HTTPClient:
    return logged_in(app, ADMIN, ADMIN_PASSWORD)


def replica_row(page: str, name: str) -> str:
    return re.search(rf'<tr id="replica-{name}">.*?</tr>', page, re.S).group(0)


def test_the_console_is_for_admins_only(app):
    user, _ = signed_up(app)
    assert user.get("/admin").status_code == 403
    assert user.get("/admin/data").status_code == 403
    assert post(user, "/admin/nodes/g1a/disable", {}).status_code == 403
    assert HTTPClient(app).get("/admin/data").status_code == 303  # anonymous: to /login


def test_every_replica_with_state_role_term_and_commit_index(app, admin, store):
    store.leader()
    page = admin.get("/admin").text
    for name in ("g1a", "g1b", "g1c"):
        row = replica_row(page, name)
        assert ">alive<" in row and re.search(r">(leader|follower)<", row)
        assert re.search(r'<td class="num"[^>]*>\d+</td>', row)  # term, commit, applied
        assert "/disable" in row and "/restart" in row


def test_the_data_browser_pages_ten_rows_and_shows_values_safely(admin, store):
    rows = [f"{{pager}}/r{i:02}" for i in range(25)]
    with store.client() as client:
        for i, row in enumerate(rows):
            client.put(row, "c", b"plain %d" % i)
        client.put(rows[0], "bin", b"\x00\xff\x10" * 30)
        client.put(rows[1], "html", b"<script>alert(1)</script>")
        client.put(rows[2], "big", os.urandom(100_000))
        client.put(rows[3], "long", b"y" * 5000)
        shard = client.shard_of(rows[0])

    def shown(page: str) -> list[str]:
        return [r for r in re.findall(r'<h2 class="row"><a [^>]*>([^<]*)</a>', page)]

    first = admin.get(f"/admin/data?shard={shard}&after={{pager}}/").text
    assert shown(first) == rows[:10]
    assert "00 ff 10 00 ff 10" in first
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in first and "<script>alert" not in first
    assert "large value: 100,000 bytes in 1 chunk(s)" in first
    assert "… (5,000 bytes)" in first and "y" * 400 not in first
    following = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = admin.get(following).text
    assert shown(second) == rows[10:20]
    back = re.search(r'href="([^"]+)" rel="prev"', second).group(1).replace("&amp;", "&")
    assert shown(admin.get(back).text) == rows[:10]
    one = admin.get("/admin/data?row={pager}/r01").text
    assert shown(one) == [rows[1]] and "&lt;script&gt;" in one
    account = admin.get(f"/admin/data?row={accounts.account_row(ADMIN)}").text
    assert "(hidden)" in account and "argon2" not in account  # no password hash on a page
    assert admin.get("/admin/data?shard=9999").status_code == 404
    assert admin.get("/admin/data?shard=abc").status_code == 404


def test_disable_and_restart_go_through_the_hosts_supervisor(admin, supervisor):
    supervisor.calls.clear()
    assert post(admin, "/admin/nodes/g1b/disable", {}, "/admin").status_code == 303
    assert post(admin, "/admin/nodes/g1b/restart", {}, "/admin").status_code == 303
    assert supervisor.calls == ["stop g1b", "stop g1b", "start g1b"]
    assert post(admin, "/admin/nodes/nosuch/disable", {}, "/admin").status_code == 404
    assert admin.post("/admin/nodes/g1b/disable").status_code == 403  # no CSRF token
    assert supervisor.calls == ["stop g1b", "stop g1b", "start g1b"]


def test_a_warning_before_a_group_loses_its_majority(admin, store, supervisor):
    store.kill("g1c")  # really down: only two of three replicas answer
    try:
        wait_for(lambda: ">unreachable<" in replica_row(admin.get("/admin").text, "g1c"),
                 20, "g1c to show as unreachable", interval=0.3)
        supervisor.alive["g1c"] = False  # the supervisor knows it stopped
        assert ">disabled<" in replica_row(admin.get("/admin").text, "g1c")
        supervisor.calls.clear()
        warning = post(admin, "/admin/nodes/g1a/disable", {}, "/admin")
        assert warning.status_code == 409
        assert "Group 1 would lose its majority" in warning.text
        assert supervisor.calls == []  # nothing done yet
        confirmed = post(admin, "/admin/nodes/g1a/restart", {"confirm": "yes"}, "/admin")
        assert confirmed.status_code == 303
        assert supervisor.calls == ["stop g1a", "start g1a"]
    finally:
        store.start("g1c")
        supervisor.alive["g1c"] = True


def test_without_a_supervisor_the_console_says_so(store):
    silent = make_app(store, {"local": f"127.0.0.1:{free_port()}"})
    unsupervised = make_app(store, {})
    try:
        admin = logged_in(silent, ADMIN, ADMIN_PASSWORD)
        assert "supervisor of host local is not answering" in admin.get("/admin").text
        assert post(admin, "/admin/nodes/g1a/disable", {}, "/admin").status_code == 503
        admin = logged_in(unsupervised, ADMIN, ADMIN_PASSWORD)
        assert "no supervisor" in admin.get("/admin").text
        assert post(admin, "/admin/nodes/g1a/disable", {}, "/admin").status_code == 404
    finally:
        silent.close()
        unsupervised.close()

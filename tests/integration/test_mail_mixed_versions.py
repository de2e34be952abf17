"""Old and new mail code side by side, as during a rolling upgrade (shards.model.mail.strays).

The old code is :data:`OLD_REVISION`, the last commit before the mail layout 2, checked
out into a temporary git worktree as bench.ab does; its smtpd and its portal (gunicorn)
run as processes on that code against the session's store, beside this code's webmail
and imapd.  The old smtpd delivers into a mailbox this code has migrated, the old
portal opens and deletes messages of both kinds, and the new webmail and imapd must
show every message once, with the flags the old portal gave it, UIDs unique.
"""

from __future__ import annotations

import http.client
import imaplib
import re
import secrets
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import msgpack
import pytest
from werkzeug.test import Client as HTTPClient

from bench.ab import ABError, git, origins, side_env, worktree_of
from portal import PortalConfig, create_app
from shards.model import accounts, mail, mailbox
from shards.model.mail import layout

from .._imap import inprocess_imapd
from .._mailcheck import check_mailbox
from .._procs import NO_DNS, Proc, free_port, port_open, python_cmd, wait_for

pytestmark = pytest.mark.cluster

# The last commit of the mail layout before 2 (fb647ca^): its smtpd and portal know only
# m: dicts.  Move it when the oldest mail code a rolling upgrade may meet moves.
OLD_REVISION = "367d6bd"
PASSWORD = "correct horse battery"
BURST = 8  # messages the old smtpd delivers while new code reads and writes the mailbox


@pytest.fixture(scope="module")
def old_tree() -> Iterator[Path]:
    try:
        git("rev-parse", "--verify", "--quiet", f"{OLD_REVISION}^{{commit}}")
    except (ABError, OSError) as exc:
        pytest.skip(f"git cannot resolve {OLD_REVISION} here (a shallow clone?): {exc}")
    with worktree_of(OLD_REVISION) as tree:
        found = origins(tree, ("raftkv", "shards", "smtpd", "portal"))
        assert all(Path(p).resolve().is_relative_to(tree.resolve()) for p in found.values()), found
        yield tree


@pytest.fixture(scope="module")
def old_side(kv_cluster, old_tree, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The old smtpd's inbound address and the old portal's, both running old code."""
    root = tmp_path_factory.mktemp("old")
    inbound, web = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = root / "cluster.toml"
    config.write_text(kv_cluster.path.read_text() + f"""
[smtpd]
name = "smtpd-old"
inbound = "{inbound}"
resolver = "{NO_DNS}"

[[frontend]]
name = "fe-old"
listen = "{web}"
""")
    (root / "secret").write_bytes((kv_cluster.path.parent / "secret").read_bytes())
    env = side_env(old_tree)
    smtpd = Proc("smtpd-old", python_cmd("smtpd.server", "--config", str(config),
                                         "--hostname", "mx.raftcloud.test"),
                 root, env=env, cwd=old_tree)
    portal = Proc("fe-old", python_cmd("gunicorn", "-c", "python:portal.gunicorn_conf",
                                       "--bind", web, "--workers", "1", "--threads", "4",
                                       "portal:create_app()"), root, env={
        **env, "RAFTCLOUD_CONFIG": str(config), "RAFTCLOUD_FRONTEND": "fe-old",
        "RAFTCLOUD_SECRET_FILE": str(root / "secret")}, cwd=old_tree)
    procs = [smtpd.start(), portal.start()]
    try:
        wait_for(lambda: port_open(inbound), 30, "the old smtpd to listen")
        wait_for(lambda: port_open(web), 30, "the old portal to listen")
        yield inbound, web
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name}\n{proc.log()[-4000:]}")
        raise
    finally:
        for proc in procs:
            proc.stop()


class OldBrowser:
    """The old portal over HTTP: one connection and the session cookie."""

    def __init__(self, addr: str, user: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sid = ""
        assert self.post("/login", {"username": user, "password": PASSWORD}, "/login") == 303

    def get(self, path: str) -> tuple[int, str]:
        headers = {"Cookie": f"sid={self.sid}"} if self.sid else {}
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        self._keep(response)
        return response.status, response.read().decode()

    def post(self, path: str, fields: dict[str, str], form_page: str) -> int:
        status, page = self.get(form_page)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert status == 200 and csrf, page[-2000:]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.sid:
            headers["Cookie"] = f"sid={self.sid}"
        self.conn.request("POST", path, urlencode({"csrf": csrf.group(1), **fields}), headers)
        response = self.conn.getresponse()
        self._keep(response)
        response.read()
        return response.status

    def _keep(self, response: http.client.HTTPResponse) -> None:
        found = re.match(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
        if found:
            self.sid = found.group(1)

    def close(self) -> None:
        self.conn.close()


def _send_old(inbound: str, user: str, subject: str) -> None:
    host, port = inbound.rsplit(":", 1)
    raw = (f"From: someone@example.org\r\nTo: {user}@raftcloud.test\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@example.org>\r\n\r\nsent through the old smtpd\r\n")
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.sendmail("someone@example.org", [f"{user}@raftcloud.test"], raw)


def _deliver_new(client, user: str, subject: str) -> str:
    raw = (f"From: someone@example.org\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@example.org>\r\n\r\nsent through the new code\r\n").encode()
    return mail.deliver(client, user, raw).msg_id


def _old_cells(client, user: str) -> dict[str, dict]:
    """The m: cells holding dicts (old code's), by message id."""
    cells = client.get_row(layout.mailbox_row(user), prefix=layout.POINTER_PREFIX)
    found = {}
    for column, cell in cells.items():
        value = msgpack.unpackb(cell.value)
        if isinstance(value, dict):
            found[column[len(layout.POINTER_PREFIX):]] = value
    return found


def _by_subject(client, user: str, subject: str) -> str:
    """The id of the one old cell or record with ``subject``."""
    ids = [i for i, meta in _old_cells(client, user).items() if meta.get("subject") == subject]
    ids += [r.id for r in mail.list_folder(client, user, mail.INBOX) if r.subject == subject]
    assert len(ids) == 1, (subject, ids)
    return ids[0]


def _imap_view(imapd, user: str) -> dict[str, tuple[int, bool]]:
    """INBOX as imapd shows it: subject -> (UID, seen); every subject once, UIDs unique."""
    host, port = imapd.listen.rsplit(":", 1)
    with imaplib.IMAP4(host, int(port), timeout=30) as imap:
        assert imap.login(user, PASSWORD)[0] == "OK"
        status, data = imap.select("INBOX")
        assert status == "OK"
        exists = int(data[0])
        status, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK"
    view: dict[str, tuple[int, bool]] = {}
    uids = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, header = item[0].decode(), item[1].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))
        found = re.search(r"Subject: (.*)", header)  # none: a record without its bytes
        subject = found.group(1).strip() if found else f"(no header, UID {uid})"
        assert subject not in view, f"{subject} listed twice"
        view[subject] = (uid, "\\Seen" in meta)
        uids.append(uid)
    assert len(uids) == len(set(uids)) == exists, (uids, exists)
    return view


def _webmail_view(http: HTTPClient) -> dict[str, bool]:
    """The new webmail's inbox page: subject -> shown unread."""
    page = http.get("/mail").text
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    rows = re.findall(r'<tr( class="unread")?>.*?<td class="subject"><a [^>]*>([^<]*)</a>', body,
                      re.S)
    view = {subject: bool(unread) for unread, subject in rows}
    assert len(view) == len(rows), "a subject listed twice"
    return view


def test_old_smtpd_and_portal_beside_the_new_code_lose_and_duplicate_nothing(
        kv_cluster, client, old_side, tmp_path):
    inbound, web = old_side
    user = f"mix{secrets.token_hex(3)}"
    accounts.create_user(client, user, PASSWORD)
    tag = secrets.token_hex(2)
    name = {k: f"{k}-{tag}" for k in ("new1", "new2", "new3", "new4", "old1", "old2", "old3")}
    new_ids = {k: _deliver_new(client, user, name[k]) for k in ("new1", "new2", "new3", "new4")}
    assert mail.get_folder(client, user, mail.INBOX).exists == 4  # migrated, layout 2

    # The old smtpd delivers into the migrated mailbox: m: dicts nothing new lists.
    for k in ("old1", "old2", "old3"):
        _send_old(inbound, user, name[k])
    wait_for(lambda: len(_old_cells(client, user)) == 3, 30, "the old smtpd's deliveries")

    old = OldBrowser(web, user)
    try:
        # The old portal lists only what old code wrote; it opens one of those (a read
        # mark in the dict) and a message of layout 2 (its read mark replaces the pointer).
        status, page = old.get("/mail")
        assert status == 200 and name["old1"] in page and name["new1"] not in page
        old1 = _by_subject(client, user, name["old1"])
        assert old.get(f"/mail/{old1}")[0] == 200
        assert old.get(f"/mail/{new_ids['new1']}")[0] == 200
        wait_for(lambda: _old_cells(client, user).get(new_ids["new1"]) == {"unread": False}
                 and _old_cells(client, user)[old1].get("unread") is False, 10,
                 "the old portal's read marks")
        # It deletes one of its own kind, and one of layout 2: its confirmation page is a
        # 404 there, but a confirmation form still open from before the message was folded
        # in posts all the same (pointer and bytes go; the record stays).
        old3 = _by_subject(client, user, name["old3"])
        assert old.post(f"/mail/{old3}/delete", {"confirm": "yes"}, f"/mail/{old3}/delete") == 303
        assert old.post(f"/mail/{new_ids['new2']}/delete", {"confirm": "yes"}, "/mail") == 303

        with inprocess_imapd(kv_cluster.cluster, client, tmp_path / "certs") as imapd:
            expected = {name["new1"]: True, name["new3"]: False, name["new4"]: False,
                        name["old1"]: True, name["old2"]: False}
            view = _imap_view(imapd, user)  # SELECT: the usage cell's mark starts the fold
            assert {s: seen for s, (_, seen) in view.items()} == expected

            # Old and new writers at once: a burst through the old smtpd while imapd
            # polls and new code delivers; the old portal reads a message the new code
            # just folded in (its read mark replaces the pointer: no usage mark).
            burst = [f"burst{i}-{tag}" for i in range(BURST)]
            errors: list[BaseException] = []

            def send_burst() -> None:
                try:
                    for subject in burst:
                        _send_old(inbound, user, subject)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            sender = threading.Thread(target=send_burst)
            sender.start()
            deadline = time.monotonic() + 60
            news = []
            while sender.is_alive() and time.monotonic() < deadline:
                mail.changes_since(client, user, mail.INBOX, 1)  # IMAP NOOP's read
                if len(news) < 4:
                    news.append(f"during{len(news)}-{tag}")
                    _deliver_new(client, user, news[-1])
                time.sleep(0.05)
            sender.join(60)
            assert not errors and not sender.is_alive(), errors
            assert old.get(f"/mail/{new_ids['new3']}")[0] == 200
            wait_for(lambda: _old_cells(client, user).get(new_ids["new3"]) == {"unread": False},
                     10, "the old portal's read mark over a pointer")

            # The new webmail: its page notices the burst; opening new3 puts its pointer back.
            webmail = create_app(PortalConfig(cluster=kv_cluster.cluster, frontend="fe-new",
                                              addr="127.0.0.1:9", heartbeat_interval=5,
                                              admin_password="admin-password-1"),
                                 client_factory=kv_cluster.client)
            try:
                http = HTTPClient(webmail)
                login = http.get("/login").text
                csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login).group(1)
                assert http.post("/login", data={"csrf": csrf, "username": user,
                                                 "password": PASSWORD}).status_code == 303
                assert http.get(f"/mail/{new_ids['new3']}").status_code == 200
                expected.update({name["new3"]: True, **dict.fromkeys(burst, False),
                                 **dict.fromkeys(news, False)})
                shown = _webmail_view(http)
                assert shown == {s: not seen for s, seen in expected.items()}
            finally:
                webmail.close()
            view = _imap_view(imapd, user)
            assert {s: seen for s, (_, seen) in view.items()} == expected
    finally:
        old.close()

    records = check_mailbox(client, user)  # counts, pointers, usage, bytes
    assert not _old_cells(client, user), "an old cell left unfolded"
    assert sorted(r["uid"] for r in records[mail.INBOX]) == sorted(u for u, _ in view.values())
    assert mailbox.usage(client, user) == sum(r["size"] for rs in records.values() for r in rs)
    for msg_id in (new_ids["new2"], old3):
        assert client.get(layout.message_row(user, msg_id), layout.RAW_COL) is None

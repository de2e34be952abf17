"""Hostile mail through the real smtpd into the real store, then shown by the portal.

Each message is delivered over SMTP exactly as an attacker (or a broken
mailer) would send it, must be stored as received, and its page must be a
normal page: no script, no event handler, no remote content, no crash.
"""

from __future__ import annotations

import secrets
import smtplib

import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from shards.model import accounts, mailbox

from .._mail import inprocess_smtpd

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def victim(client):
    name = f"victim{secrets.token_hex(3)}"
    accounts.create_user(client, name, PASSWORD)
    return name


@pytest.fixture(scope="module")
def smtp_port(kv_cluster, client):
    with inprocess_smtpd(kv_cluster.cluster, client) as settings:
        yield int(settings.inbound.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def browser(kv_cluster, victim):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-hostile", addr="127.0.0.1:9",
                          admin_password="admin-password-1", heartbeat_interval=5)
    app = create_app(config, client_factory=kv_cluster.client)
    http = HTTPClient(app)
    page = http.get("/login").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert http.post("/login", data={"csrf": csrf, "username": victim,
                                     "password": PASSWORD}).status_code == 303
    yield http
    app.close()


def _deliver_and_show(client, smtp_port: int, victim: str, browser, raw: bytes, tag: str):
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.sendmail("mallory@example.org", [f"{victim}@raftcloud.test"], raw)
    found = [m for m in mailbox.list_messages(client, victim)
             if tag in (mailbox.get_message(client, victim, m.id) or b"").decode("latin-1")]
    assert len(found) == 1, "stored once"
    stored = mailbox.get_message(client, victim, found[0].id)
    assert raw.replace(b"\r\n", b"\n").rstrip() in stored.replace(b"\r\n", b"\n"), \
        "stored as received"
    response = browser.get(f"/mail/{found[0].id}")
    assert response.status_code == 200, response.text[:2000]
    assert "Traceback" not in response.text
    return response


def test_script_and_event_handlers_in_html_never_reach_the_page(client, smtp_port, victim,
                                                                browser):
    tag = secrets.token_hex(4)
    raw = (f"Subject: html {tag}\r\nContent-Type: text/html\r\n\r\n"
           f'<p onclick="steal()">hello {tag}</p><script>alert(1)</script>'
           '<img src="http://evil.test/pixel.png" onerror="alert(2)">'
           '<a href="javascript:alert(3)">click</a><svg onload="alert(4)"></svg>'
           '<iframe src="http://evil.test/"></iframe>\r\n').encode()
    page = _deliver_and_show(client, smtp_port, victim, browser, raw, tag)
    html = page.text.lower()
    assert f"hello {tag}" in html
    for bad in ("<script", "onclick", "onerror", "onload", "javascript:", "evil.test", "<iframe"):
        assert bad not in html, bad
    policy = page.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in policy and "unsafe" not in policy  # no script runs at all


def test_malformed_mime_is_stored_and_shown(client, smtp_port, victim, browser):
    tag = secrets.token_hex(4)
    raw = (f'Subject: broken {tag}\r\nMIME-Version: 1.0\r\n'
           'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
           '--XYZ\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n'
           'Content-Transfer-Encoding: base64\r\n\r\n!!! not base64 at all !!!\r\n'
           '--XYZ\r\nContent-Type: text/html\r\n\r\n<b>never closed\r\n'
           '--XYZ\r\nContent-Type: message/rfc822\r\n\r\nFrom: nobody\r\n').encode()
    _deliver_and_show(client, smtp_port, victim, browser, raw, tag)


def test_a_one_megabyte_header_line_is_stored_and_shown_cut(client, smtp_port, victim,
                                                            browser):
    tag = secrets.token_hex(4)
    raw = (f"Subject: long {tag} ".encode() + b"A" * (1024 * 1024) +
           b"\r\nX-Other: fine\r\n\r\nbody\r\n")
    page = _deliver_and_show(client, smtp_port, victim, browser, raw, tag)
    assert len(page.text) < 300 * 1024, "the page shows a cut header, not a megabyte"


def test_a_bare_lf_message_is_stored_and_shown(client, smtp_port, victim, browser):
    tag = secrets.token_hex(4)
    raw = f"Subject: bare lf {tag}\nFrom: x@example.org\n\nline one\nline two {tag}\n".encode()
    page = _deliver_and_show(client, smtp_port, victim, browser, raw, tag)
    assert f"line two {tag}" in page.text


def test_a_nul_byte_is_stored_and_shown_without_it(client, smtp_port, victim, browser):
    tag = secrets.token_hex(4)
    raw = f"Subject: nul {tag}\r\n\r\nbefore\x00after {tag}\r\n".encode()
    page = _deliver_and_show(client, smtp_port, victim, browser, raw, tag)
    assert "\x00" not in page.text
    assert "before" in page.text and "after" in page.text

"""The mail pages' HTML (portal.mail, portal.mailhtml): the HTML part in a sandboxed frame of
its own under a policy with no script, remote images only on request, the plain-text
switch, Compose and the folder tabs on every mail page, the To column in Sent.  What a
browser does with all this is tests/integration/test_mail_sandbox.py."""

from __future__ import annotations

import html
import re

import pytest
from werkzeug.test import Client as HTTPClient

from portal import mailhtml
from portal.mail import MAIL_CSP
from shards.model import accounts, mailbox

from .._memstore import MemClient

HOSTILE = ('<p onclick="steal()">Hello<script>document.title = "ran"</script>'
           '<img src="https://images.example/pixel.png" onerror="steal()" alt="logo">'
           '<a href="javascript:steal()">click</a> <a href="https://example.org/">site</a>'
           '<div style="color:red;background-image:url(https://t.example/x);position:fixed">'
           'red</div></p>')


def _raw(*, plain: str | None, html: str | None, subject: str = "News") -> bytes:
    head = f"From: shop@example.org\r\nTo: carol@raftcloud.test\r\nSubject: {subject}\r\n"
    if html is None:
        return (head + f"\r\n{plain}\r\n").encode()
    if plain is None:
        return (head + f"Content-Type: text/html\r\n\r\n{html}\r\n").encode()
    return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n"
            f"--b\r\nContent-Type: text/html\r\n\r\n{html}\r\n--b--\r\n").encode()


@pytest.fixture
def store() -> MemClient:
    """The conftest's ``app`` runs over this: user "carol" signed up."""
    store = MemClient()
    accounts.create_user(store, "carol", "correct horse battery")
    return store


@pytest.fixture
def http(app) -> HTTPClient:
    http = HTTPClient(app)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/login").text).group(1)
    assert http.post("/login", data={"csrf": csrf, "username": "carol",
                                     "password": "correct horse battery"}).status_code == 303
    return http


def test_cleaning_keeps_the_layout_and_drops_everything_that_runs():
    cleaned, remote = mailhtml.clean(HOSTILE)
    for bad in ("script", "onclick", "onerror", "javascript", "steal", "background-image",
                "position"):
        assert bad not in cleaned, bad
    assert '<img src="https://images.example/pixel.png" alt="logo">' in cleaned
    assert 'href="https://example.org/" target="_blank" rel="noopener noreferrer nofollow"' in cleaned
    assert 'style="color:red"' in cleaned
    assert remote
    inline, remote = mailhtml.clean('<img src="data:image/png;base64,AAAA">'
                                    '<a href="data:text/html,<h1>Bank</h1>">x</a>')
    assert inline.startswith('<img src="data:image/png;base64,AAAA"><a ') and not remote
    assert "href" not in inline and "Bank" not in inline


def test_the_frames_policy_runs_no_script_and_loads_remote_images_only_when_asked():
    for images in (False, True):
        policy = mailhtml.frame_csp(images)
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert "script-src" not in directives and directives["default-src"] == "'none'"
        assert directives["sandbox"] == mailhtml.SANDBOX
        assert "allow-scripts" not in policy and "allow-same-origin" not in policy
        assert directives["frame-ancestors"] == "'self'"
        assert directives["img-src"] == ("data: https: http:" if images else "data:")
    assert "frame-src 'self'" in MAIL_CSP


def test_an_html_message_is_a_sandboxed_frame_of_its_own(http, store):
    msg_id = mailbox.deliver(store, "carol", _raw(plain="Hello in plain", html=HOSTILE))
    page = http.get(f"/mail/{msg_id}")
    assert page.status_code == 200 and page.headers["Content-Security-Policy"] == MAIL_CSP
    frame = re.search(r"<iframe [^>]*>", page.text).group(0)
    assert f'sandbox="{mailhtml.SANDBOX}"' in frame and 'title="The message"' in frame
    assert f'src="/mail/{msg_id}/html"' in frame
    assert "Hello" not in page.text.split("<iframe")[1]  # the mail is not in our page
    assert f'href="/mail/{msg_id}?images=1"' in page.text  # Show remote images
    assert f'href="/mail/{msg_id}?view=plain"' in page.text

    inner = http.get(f"/mail/{msg_id}/html")
    assert inner.status_code == 200 and inner.mimetype == "text/html"
    assert inner.headers["Content-Security-Policy"] == mailhtml.frame_csp(False)
    assert inner.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert inner.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert "<p>Hello" in inner.text and "script" not in inner.text
    widened = http.get(f"/mail/{msg_id}/html?images=1")
    assert widened.headers["Content-Security-Policy"] == mailhtml.frame_csp(True)

    asked = http.get(f"/mail/{msg_id}?images=1").text
    assert f'src="/mail/{msg_id}/html?images=1"' in asked
    assert "Show remote images" not in asked

    plain = http.get(f"/mail/{msg_id}?view=plain").text
    assert "<iframe" not in plain and '<pre class="body">Hello in plain</pre>' in plain
    assert f'<a href="/mail/{msg_id}">Formatted (HTML)</a>' in plain


def test_a_plain_message_has_no_frame_and_no_html_route(http, store):
    msg_id = mailbox.deliver(store, "carol", _raw(plain="<b>just text</b>", html=None))
    page = http.get(f"/mail/{msg_id}").text
    assert "<iframe" not in page and "&lt;b&gt;just text&lt;/b&gt;" in page
    assert "Plain text" not in page and "remote images" not in page
    assert http.get(f"/mail/{msg_id}/html").status_code == 404


def test_html_only_without_remote_images_has_no_switches(http, store):
    msg_id = mailbox.deliver(store, "carol", _raw(plain=None, html="<p>only <b>html</b></p>"))
    page = http.get(f"/mail/{msg_id}").text
    assert "<iframe" in page and "body-switch" not in page
    assert http.get(f"/mail/{msg_id}?view=plain").text.count("<iframe") == 1  # nothing else


def test_the_frame_is_only_the_owners(app, http, store):
    msg_id = mailbox.deliver(store, "carol", _raw(plain=None, html="<p>private</p>"))
    accounts.create_user(store, "dave", "correct horse battery")
    other = HTTPClient(app)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', other.get("/login").text).group(1)
    other.post("/login", data={"csrf": csrf, "username": "dave",
                               "password": "correct horse battery"})
    assert other.get(f"/mail/{msg_id}/html").status_code == 404
    assert HTTPClient(app).get(f"/mail/{msg_id}/html").status_code in (302, 303)  # log in first
    assert "private" in http.get(f"/mail/{msg_id}/html").text


def test_every_mail_page_has_compose_and_the_folder_tabs(http, store):
    msg_id = mailbox.deliver(store, "carol", _raw(plain="hi", html=None))
    for path, current in (("/mail", "Inbox"), ("/mail?folder=sent", "Sent"),
                          ("/mail/compose", "Compose"), (f"/mail/{msg_id}", None),
                          (f"/mail/{msg_id}/delete", None), (f"/mail/{msg_id}/forward", None)):
        page = http.get(path).text
        nav = re.search(r'<nav class="folders" aria-label="Mail">.*?</nav>', page, re.S).group(0)
        assert '<a href="/mail/compose" class="button compose"' in nav, path
        shown = re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]+)</a>', nav)
        assert shown == ([current] if current else []), (path, shown)


def test_sent_lists_whom_each_message_went_to(http, store):
    mailbox.deliver(store, "carol", b"From: carol@raftcloud.test\r\nTo: Bob <bob@example.org>\r\n"
                    b"Subject: lunch\r\n\r\nnoon?\r\n", folder="sent", unread=False)
    page = http.get("/mail?folder=sent").text
    assert '<th class="who">To</th>' in page
    assert '<td class="sender">Bob &lt;bob@example.org&gt;</td>' in page
    mailbox.deliver(store, "carol", _raw(plain="hi", html=None))
    assert '<th class="who">From</th>' in http.get("/mail").text


def test_a_compose_form_sent_twice_sends_one_message(http, store):
    """The failover worker sends a form on when its frontend died, perhaps after the
    frontend had sent it: the form carries the Message-ID it was shown with, and sending
    is idempotent by Message-ID, so the second sending adds nothing."""
    page = http.get("/mail/compose").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    message_id = html.unescape(re.search(r'name="message_id" value="([^"]+)"', page).group(1))
    assert message_id.endswith("@raftcloud.test>")
    form = {"csrf": csrf, "to": "carol@raftcloud.test", "subject": "Once", "body": "only once",
            "message_id": message_id}
    for _ in range(2):
        assert http.post("/mail/compose", data=form).status_code == 303
    assert [m.subject for m in mailbox.list_messages(store, "carol", "sent")] == ["Once"]
    assert [m.subject for m in mailbox.list_messages(store, "carol", "inbox")] == ["Once"]
    # A form's Message-ID that is not one of ours is replaced by a new one: two messages.
    for forged in ("<x@elsewhere.example>", "not an id"):
        sent = http.post("/mail/compose", data={**form, "subject": "Twice",
                                                "message_id": forged})
        assert sent.status_code == 303
    assert len(mailbox.list_messages(store, "carol", "sent")) == 3


def test_an_empty_cc_field_names_nobody(http, store):
    """A browser sends every field of the form, Cc too when it is empty; on Python 3.13
    the address parser answers one empty pair for "" (a 400 before this was mended)."""
    page = http.get("/mail/compose").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    sent = http.post("/mail/compose", data={"csrf": csrf, "to": "carol@raftcloud.test",
                                            "cc": "", "subject": "No cc", "body": "."})
    assert sent.status_code == 303
    assert [m.subject for m in mailbox.list_messages(store, "carol", "sent")] == ["No cc"]

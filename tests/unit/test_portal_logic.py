"""Portal logic that needs no store: name rules, CSRF, file names, error mapping, mail display.

The app-level tests here use a client factory that fails the test if called:
they check what the portal does *without* touching the store (a new visitor
costs no store write; a forged POST is refused before any store access).
"""

from __future__ import annotations

import pytest
from werkzeug.test import Client as HTTPClient

from portal import create_app
from portal.app import CSP
from portal.auth import safe_next
from portal.errors import http_error
from portal.filenames import BadFileName, check_filename, content_disposition
from portal.mail import message_body, parse_message, sanitize_html
from portal.sessions import check_csrf, csrf_token, new_sid
from raftkv.errors import ConditionFailed, NoLeader, OutcomeUnknown, ProtocolError, TooLarge
from shards.model.accounts import valid_username

from .._portal import UNIT_SECRET as SECRET
from .._portal import no_store, unit_config


@pytest.fixture
def app():
    return create_app(unit_config(), client_factory=no_store)


@pytest.fixture
def http(app) -> HTTPClient:
    return HTTPClient(app)


@pytest.mark.parametrize("name", ["a", "alice", "bob.smith", "x_y-z", "0day", "a" * 32])
def test_valid_usernames(name):
    assert valid_username(name)


@pytest.mark.parametrize("name", ["", "Alice", ".alice", "-a", "_a", "a" * 33, "al ice",
                                  "al/ice", "{a}", "ålice", "a\x00", "a\n"])
def test_invalid_usernames(name):
    assert not valid_username(name)


def test_csrf_token_is_bound_to_sid_and_secret():
    sid = new_sid()
    token = csrf_token(SECRET, sid)
    assert check_csrf(SECRET, sid, token)
    assert not check_csrf(SECRET, new_sid(), token)
    assert not check_csrf(b"t" * 32, sid, token)
    assert not check_csrf(SECRET, sid, None)
    assert not check_csrf(SECRET, sid, "")
    assert not check_csrf(SECRET, sid, token[:-1])


def test_sids_are_long_and_unique():
    sids = {new_sid() for _ in range(100)}
    assert len(sids) == 100
    assert all(len(s) == 43 for s in sids)


@pytest.mark.parametrize("name", ["report.pdf", "a..b.txt", "日本語.txt", ".bashrc",
                                  "<img src=x onerror=alert(1)>.html", "x" * 255])
def test_acceptable_filenames(name):
    assert check_filename(name) == name


@pytest.mark.parametrize("name", ["", "  ", ".", "..", "../etc/passwd", "a/b", "a\\b",
                                  "a\x00b", "a\nb", "a\x7fb", "evil\u202etxt.exe", "x" * 256,
                                  "é" * 128])
def test_rejected_filenames(name):
    with pytest.raises(BadFileName):
        check_filename(name)


def test_content_disposition_is_ascii_and_exact():
    value = content_disposition('naïve "quote"\\ 100%.txt')
    value.encode("ascii")  # a header value must be ASCII
    assert value.startswith('attachment; filename="na_ve _quote__ 100_.txt"; ')
    assert value.endswith("filename*=UTF-8''na%C3%AFve%20%22quote%22%5C%20100%25.txt")


@pytest.mark.parametrize("exc, code", [(NoLeader(), 503), (OutcomeUnknown(), 503),
                                       (ConditionFailed(), 409), (TooLarge(), 413),
                                       (ProtocolError(), 503)])
def test_store_errors_map_to_http(exc, code):
    http_exc = http_error(exc)
    assert http_exc.code == code
    if code == 503:
        assert dict(http_exc.get_headers())["Retry-After"] == "2"


@pytest.mark.parametrize("target, expected", [("/drive", "/drive"), ("/mail?x=1", "/mail?x=1"),
                                              ("//evil.test/", "/"), ("/\\evil.test", "/"),
                                              ("https://evil.test/", "/"), (None, "/")])
def test_safe_next(target, expected):
    assert safe_next(target) == expected


def test_html_mail_is_sanitized():
    clean = sanitize_html('<p onclick="x()">hi<script>alert(1)</script>'
                          '<img src="http://tracker.test/p.gif"><a href="javascript:x()">l</a>'
                          '<style>body{}</style></p>')
    for bad in ("script", "onclick", "img", "tracker", "javascript", "style"):
        assert bad not in clean
    assert "hi" in clean


def test_plain_part_wins_over_html():
    raw = (b"From: a@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\n<b>plain</b>\r\n"
           b"--b\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--b--\r\n")
    kind, body = message_body(parse_message(raw))
    assert (kind, body.strip()) == ("text", "<b>plain</b>")


def test_first_visit_sets_a_cookie_without_touching_the_store(http):
    response = http.get("/")
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("sid=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert response.headers["Content-Security-Policy"] == CSP
    assert 'name="csrf"' in response.text


def test_post_without_csrf_is_forbidden(http):
    http.get("/")
    response = http.post("/login", data={"username": "alice", "password": "x" * 8})
    assert response.status_code == 403
    assert "<html" in response.text and "Traceback" not in response.text


def test_error_pages_are_html(app):
    # No cookie, so no session to show in the header: this app has no store to read one from.
    http = HTTPClient(app, use_cookies=False)
    missing = http.get("/no/such/page")
    assert missing.status_code == 404 and "<html" in missing.text
    wrong_method = http.get("/logout")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    head = http.head("/")
    assert head.status_code == 200 and head.data == b""


def test_pages_need_login(app):
    # Without a cookie there is no session to look up: no store read either.
    http = HTTPClient(app, use_cookies=False)
    for path in ("/drive", "/mail", "/admin", "/password"):
        response = http.get(path)
        assert response.status_code == 303
        assert response.headers["Location"].startswith("/login?next=")


def test_too_large_body_is_a_413_page():
    http = HTTPClient(create_app(unit_config(max_upload=2048), client_factory=no_store))
    http.get("/")  # a session cookie: a POST without one is refused before its body is read
    response = http.post("/login", data={"username": "a", "password": "x" * 5000})
    assert response.status_code == 413 and "<html" in response.text

"""The web pages of a frontend (gunicorn + the portal), on raw sockets byte for byte.

Malformed form fields, hostile ``next`` targets, broken encodings, oversized
heads, traversal and wrong methods: each gets a 4xx page (or, for ``next``, a
redirect to our own home page), never a 500; and the signed-in victim keeps
their session, file and mail.
"""

from __future__ import annotations

import re
import time
import urllib.parse

import pytest

from portal.drive import DRIVE_SCRIPT_HASH
from portal.pages import PAGE_SCRIPT_HASH
from shards.model import accounts

from .._http import Browser
from . import _raw
from .conftest import PASSWORD, new_account, signed_in

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def still_answering(cloud, victim):
    yield
    assert _raw.status_of(_raw.http(cloud.frontend, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                                    "Connection: close\r\n\r\n")) == 200
    page = victim.browser.get("/drive")
    assert page.status == 200 and "keep.txt" in page.text, "the victim is still signed in"


def _form(cloud, path: str) -> tuple[str, str]:
    """A fresh anonymous session's (sid, CSRF token) from the form at ``path``."""
    browser = Browser(f"http://{cloud.frontend}")
    token = browser.get(path).csrf()
    return next(c.value for c in browser.cookies if c.name == "sid"), token


def _post(cloud, path: str, body: str | bytes, sid: str) -> bytes:
    body = body.encode() if isinstance(body, str) else body
    head = (f"POST {path} HTTP/1.1\r\nHost: {cloud.frontend}\r\nCookie: sid={sid}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return _raw.http(cloud.frontend, head, body)


def _refused(answer: bytes, *statuses: int) -> None:
    status = _raw.status_of(answer)
    assert status in (statuses or range(400, 500)), answer[:400]
    body = answer.partition(b"\r\n\r\n")[2]
    assert body.strip(), "a refusal with a message"
    assert b"Traceback" not in answer


# What a scanner put into the CSRF field: each malformed value must be a 400 or 403.
CSRF_VALUES = {
    "csrf-non-ascii": pytest.param(lambda good: good + "\u00bf'\"(",
                                   id="csrf-non-ascii"),
    "csrf-invalid-utf8": pytest.param(lambda good: "%ff%fe" + good,
                                      id="csrf-invalid-utf8"),
    "csrf-huge": pytest.param(lambda good: good * 2000, id="csrf-huge"),
    "csrf-empty": pytest.param(lambda good: "", id="csrf-empty"),
    "csrf-nul": pytest.param(lambda good: good[:8] + "\x00" + good[8:], id="csrf-nul"),
}


@pytest.mark.parametrize("endpoint", ["/login", "/signup"])
@pytest.mark.parametrize("bad_csrf", CSRF_VALUES.values())
def test_a_malformed_csrf_token_is_refused_and_nothing_is_made(cloud, endpoint, bad_csrf):
    sid, good = _form(cloud, endpoint)
    name = f"csrfprobe{int(time.monotonic_ns()) % 10**8}"
    value = bad_csrf(good)
    quoted = value if value.startswith("%") else urllib.parse.quote(value)
    body = f"csrf={quoted}&username={name}&password={urllib.parse.quote(PASSWORD)}" \
           f"&password2={urllib.parse.quote(PASSWORD)}"
    _refused(_post(cloud, endpoint, body, sid), 400, 403, 413)
    assert not accounts.user_exists(cloud.store, name)


@pytest.mark.parametrize("bad_csrf", CSRF_VALUES.values())
def test_a_forged_logout_keeps_the_victim_signed_in(cloud, victim, bad_csrf):
    good = victim.browser.get("/").csrf()
    value = bad_csrf(good)
    quoted = value if value.startswith("%") else urllib.parse.quote(value)
    _refused(_post(cloud, "/logout", f"csrf={quoted}", victim.sid), 400, 403, 413)


NEXT_TARGETS = {
    "next-tab-then-host": pytest.param("/\t/evil.example/x", id="next-tab-then-host"),
    "next-crlf": pytest.param("/\r\nSet-Cookie: sid=planted", id="next-crlf"),
    "next-scheme-relative": pytest.param("//evil.example/x", id="next-scheme-relative"),
    "next-backslash": pytest.param("/\\evil.example/x", id="next-backslash"),
    "next-absolute": pytest.param("https://evil.example/x", id="next-absolute"),
    "next-javascript": pytest.param("javascript:alert(1)", id="next-javascript"),
}


@pytest.mark.parametrize("target", NEXT_TARGETS.values())
def test_a_hostile_next_ends_on_our_home_page(cloud, target):
    name = new_account(cloud, "next")
    sid, csrf = _form(cloud, "/login")
    body = urllib.parse.urlencode({"csrf": csrf, "username": name, "password": PASSWORD,
                                   "next": target})
    answer = _post(cloud, "/login?" + urllib.parse.urlencode({"next": target}), body, sid)
    assert _raw.status_of(answer) in (302, 303), answer[:400]
    location = _raw.headers_of(answer)["location"]
    parts = urllib.parse.urlsplit(location)
    assert parts.netloc in ("", cloud.frontend) and parts.path.startswith("/") \
        and not parts.path.startswith("//"), location
    assert b"planted" not in answer


def _get(cloud, target: str, sid: str = "", extra: str = "", method: str = "GET") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {cloud.frontend}\r\nConnection: close\r\n"
    if sid:
        head += f"Cookie: sid={sid}\r\n"
    return _raw.http(cloud.frontend, head + extra + "\r\n")


# Request targets a signed-in stranger might send; each must be a 4xx.
TARGETS = [
    pytest.param("GET", "/drive/%zz%", id="invalid-percent-encoding"),
    pytest.param("GET", "/mail/%ff%fe%00", id="invalid-utf8-in-path"),
    pytest.param("GET", "/drive/..%2f..%2fetc%2fpasswd", id="file-id-traversal"),
    pytest.param("GET", "/drive/d/..%2f..%2f/zip", id="folder-id-traversal"),
    pytest.param("GET", "/static/../portal/app.py", id="static-traversal"),
    pytest.param("GET", "/static/%2e%2e/%2e%2e/setup.cfg", id="static-encoded-traversal"),
    pytest.param("GET", "/static/%252e%252e/portal/app.py", id="static-double-encoded"),
    pytest.param("PUT", "/login", id="put-method"),
    pytest.param("GET", "/logout", id="get-on-logout"),
    pytest.param("DELETE", "/drive", id="delete-method"),
    pytest.param("TRACE", "/", id="trace-method"),
]


@pytest.mark.parametrize("method, target", TARGETS)
def test_a_hostile_target_gets_a_4xx(cloud, victim, method, target):
    _refused(_get(cloud, target, victim.sid, method=method))


HEADS = {
    "header-of-100-kb": "X-Filler: " + "a" * 100_000 + "\r\n",
    "cookie-of-20-kb": "Cookie: junk=" + "b" * 20_000 + "\r\n",
    "200-headers": "".join(f"X-H{i}: v\r\n" for i in range(200)),
    "request-line-of-20-kb": None,
}


@pytest.mark.parametrize("extra", HEADS.values(), ids=HEADS.keys())
def test_an_oversized_head_gets_a_4xx(cloud, extra):
    if extra is None:
        answer = _get(cloud, "/?" + "q" * 20_000)
    else:
        answer = _get(cloud, "/login", extra=extra)
    assert 400 <= _raw.status_of(answer) < 500, answer[:300]


def test_a_foreign_host_header_never_makes_an_absolute_redirect(cloud):
    answer = _get(cloud, "/drive", extra="Host: evil.example\r\n")
    location = _raw.headers_of(answer).get("location", "")
    assert _raw.status_of(answer) in (302, 303, 400) and "evil.example" not in location, \
        answer[:300]


def test_a_script_in_next_is_shown_escaped(cloud):
    answer = _get(cloud, "/login?next=" + urllib.parse.quote('"><script>alert(1)</script>'))
    assert _raw.status_of(answer) == 200
    assert b"<script>alert(1)" not in answer


def test_forty_slow_heads_leave_the_frontend_answering(cloud):
    sockets = []
    try:
        for _ in range(40):
            sock = _raw.connect(cloud.frontend)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            sockets.append(sock)
        started = time.monotonic()
        with _raw.connect(cloud.frontend, timeout=5) as probe:
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = _raw.drain(probe, wait=5)
        assert _raw.status_of(answer) == 200 and time.monotonic() - started < 5
    finally:
        for sock in sockets:
            sock.close()


BAD_NAMES = ["..", ".", "../../etc/passwd", "a/b", "a\\b", "..\\x", "a\x00b", "tab\there", "",
             "x" * 256, "evil\u202etxt.exe"]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=[
    "dot-dot", "dot", "traversal", "slash", "backslash", "dot-dot-backslash", "nul", "tab",
    "empty", "too-long", "right-to-left-override"])
def test_a_bad_name_is_refused_by_every_form_that_names_things(cloud, victim, bad):
    csrf = victim.browser.get("/drive").csrf()
    for path in ("/drive/mkdir", f"/drive/{victim.file_id}/rename",
                 f"/drive/d/{victim.folder_id}/rename"):
        body = urllib.parse.urlencode({"csrf": csrf, "folder": "root", "name": bad})
        answer = _post(cloud, path, body, victim.sid)
        _refused(answer, 400)
        assert b"cannot" in answer, path


def test_forms_without_their_csrf_token_change_nothing(cloud, victim):
    forged = [("/drive/mkdir", {"name": "x", "folder": "root"}),
              (f"/drive/{victim.file_id}/rename", {"name": "x"}),
              (f"/drive/{victim.file_id}/move", {"target": victim.folder_id}),
              (f"/drive/{victim.file_id}/delete", {}),
              (f"/drive/d/{victim.folder_id}/delete", {"confirm": "yes"}),
              (f"/drive/d/{victim.folder_id}/rename", {"name": "x", "csrf": "0" * 64})]
    for path, fields in forged:
        _refused(_post(cloud, path, urllib.parse.urlencode(fields), victim.sid), 403)


def test_a_script_in_names_is_shown_escaped_everywhere(cloud):
    browser = signed_in(cloud, new_account(cloud, "escaper"))
    evil = """<img src=x onerror="alert('x')">"""  # no "/": that is refused anyway
    page = browser.post("/drive/mkdir", {"csrf": browser.get("/drive").csrf(), "folder": "root",
                                         "name": evil})
    folder = re.search(r'href="/drive/d/([0-9a-f]{24})"', page.text).group(1)
    page = browser.upload("/drive/upload", {"csrf": page.csrf(), "folder": folder},
                          "file", evil + ".txt", b"x", "text/plain")
    file_id = re.search(r'href="/drive/([0-9a-f]{24})"', page.text).group(1)
    pages = [browser.get("/drive").text, browser.get(f"/drive/d/{folder}").text,
             browser.get(f"/drive/{file_id}/move").text,
             browser.get(f"/drive/d/{folder}/move").text]
    for text in pages:
        assert "<img src=x" not in text
        assert "&lt;img src=x onerror=&#34;alert(&#39;x&#39;)&#34;&gt;" in text
        # Ours only: the page script and, on a folder's page, the drive's, each by its hash.
        ours = [f'<script src="/static/pages.js" integrity="{PAGE_SCRIPT_HASH}" defer>']
        drive_script = f'<script src="/static/drive.js" integrity="{DRIVE_SCRIPT_HASH}" defer>'
        assert re.findall(r"<script[^>]*>", text) in (ours, [*ours, drive_script])
    disposition = browser.get(f"/drive/{file_id}").headers["Content-Disposition"]
    assert '"' not in disposition.split('filename="', 1)[1].split('";')[0]

"""The portal's request path against hostile requests, on the real store (issue 13).

In process (werkzeug's test client): malformed fields on every POST route and
on compose are 4xx pages, never a 500; a forged From never leaves.  On a real
gunicorn frontend: a stranger's large POST is answered before its body is
sent, a compose over the size limit costs the worker O(chunk) memory, static
files carry the security headers, and malformed requests on the wire are 4xx.
"""

from __future__ import annotations

import email
import email.policy
import http.client
import io
import re
import secrets
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client as HTTPClient

from portal.app import CSP
from shards.model import accounts, mailbox, outbound

from .._frontend import running_frontend
from .._mail import inprocess_smtpd
from .._portal import ADMIN_PASSWORD, store_portal
from .._procs import Proc, free_port

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
MiB = 1024 * 1024
SLOW_EXAMPLES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
# Values for the URL parts of the POST routes (ids of nothing: CSRF is judged first).
SAMPLE_VALUES = {"folder_id": "0" * 24, "file_id": "0" * 24, "msg_id": "0" * 24,
                 "content_id": "1" * 24, "name": "web1", "action": "restart", "index": 0,
                 "fid": 1, "token": "A" * 43, "owner": "someone", "shared_id": "root"}
_SHARED: dict[str, HTTPClient] = {}  # the hypothesis tests' one signed-in browser


@pytest.fixture(scope="module")
def app(kv_cluster):
    with store_portal(kv_cluster, "fe-sec", addr="127.0.0.1:9", admin_password=ADMIN_PASSWORD,
                      heartbeat_interval=5) as portal:
        yield portal


def _csrf(http: HTTPClient, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', http.get(path).text).group(1)


def _user(client) -> str:
    name = f"sec{secrets.token_hex(4)}"
    accounts.create_user(client, name, PASSWORD)
    return name


def _login(app, name: str, next_url: str = "/") -> tuple[HTTPClient, object]:
    http = HTTPClient(app)
    response = http.post("/login", data={"csrf": _csrf(http), "username": name,
                                         "password": PASSWORD, "next": next_url})
    return http, response


def _shared_browser(app, client) -> HTTPClient:
    """One signed-in browser for every example (a login costs an argon2 check)."""
    if "http" not in _SHARED:
        http, response = _login(app, _user(client))
        assert response.status_code == 303
        _SHARED["http"] = http
    return _SHARED["http"]


def _sample(rule, name: str) -> str:
    """A value for the route's argument ``name``: one of its ``any(...)`` choices, if it
    has them (each route names its own), else the shared sample."""
    choices = getattr(rule._converters.get(name), "items", None)
    return sorted(choices)[0] if choices else SAMPLE_VALUES[name]


def _post_paths(app) -> list[str]:
    adapter = app.url_map.bind("localhost")
    return sorted({adapter.build(rule.endpoint, {k: _sample(rule, k) for k in rule.arguments})
                   for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())})


# -- hole 7: malformed fields ---------------------------------------------------------------

def test_the_scanners_token_is_a_403_on_every_post_route(app, client):
    http, response = _login(app, _user(client))
    assert response.status_code == 303
    paths = _post_paths(app)
    assert {"/login", "/signup", "/logout", "/mail/compose", "/drive/upload",
            "/drive/trash/restore", "/drive/trash/delete", "/drive/trash/empty",
            f"/drive/{'0' * 24}/versions/{'1' * 24}/restore",
            "/drive/with/someone/root/upload", f"/drive/d/{'0' * 24}/sharing/add"} <= set(paths)
    for path in paths:
        answer = http.post(path, data={"csrf": _csrf(http) + "¿'\"(", "name": "x"})
        assert answer.status_code == 403, (path, answer.status_code)
        assert "This form has expired" in answer.text


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(data=st.data(), token=st.text(max_size=80))
def test_any_csrf_text_on_any_post_route_is_a_403(app, client, data, token):
    http = _shared_browser(app, client)
    path = data.draw(st.sampled_from(_post_paths(app)))
    answer = http.post(path, data={"csrf": token, "name": "x"})
    assert answer.status_code == 403, (path, answer.status_code)


@pytest.mark.parametrize("next_url", ["/\r\nSet-Cookie: a=b", "/drive\nX: y", "\n", "/\x00",
                                      "/%0d%0aX:%20y", "/mail\u2028"])
def test_a_line_break_in_next_is_never_a_500(app, client, next_url):
    _http, response = _login(app, _user(client), next_url)
    assert response.status_code == 303
    assert not set(response.headers["Location"]) & set("\r\n\x00")


COMPOSE_FIELD = st.text(max_size=60) | st.sampled_from([
    "a@b.example\r\nBcc: victim@x.example", "<>", "@", "a@", "\"\" <@>", "=?utf-8?q?=0A?=",
    "x" * 2000, "a@b.example, , ,", "\x00", "0" * 24])


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(fields=st.fixed_dictionaries({}, optional={
    name: COMPOSE_FIELD for name in ("to", "cc", "subject", "body", "in_reply_to", "forward_of",
                                     "from")}),
       # A line break cannot be in a part's header line (the test client refuses to send one),
       # nor a lone surrogate (it cannot encode one: no browser could send it either).
       filename=st.text(st.characters(codec="utf-8"), max_size=40),
       ctype=st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40))
def test_compose_fields_are_never_a_500(app, client, fields, filename, ctype):
    http = _shared_browser(app, client)
    data = {"csrf": _csrf(http, "/mail/compose"), **fields}
    if filename:
        data["attachment"] = (io.BytesIO(b"data"), filename, ctype or None)
    answer = http.post("/mail/compose", data=data)
    assert answer.status_code in (200, 303, 400, 404, 413, 429), answer.status_code
    assert "Traceback" not in answer.text


PAGES = ["/", "/mail", "/mail/compose", "/drive", "/drive/d/root", "/password", "/login",
         "/signup", "/account", "/mail/" + "0" * 24, "/mail/x/reply", "/drive/d/root/zip",
         "/drive/search", "/drive/shares", "/drive/shares/new", "/s/" + "A" * 43 + "/d/root",
         "/drive/trash", "/drive/trash/delete", "/drive/trash/empty",
         "/drive/" + "0" * 24 + "/versions",
         "/drive/with", "/drive/with/someone/root", "/drive/d/root/sharing"]
QUERY = st.binary(max_size=60) | st.lists(st.sampled_from(
    [b"folder=", b"page=", b"sort=", b"order=", b"to=", b"next=", b"all=", b"%zz", b"%ff",
     b"-1", b"99999999999999999999", b"\x00", b"&", b"=", b"sent", b"name", b"item=",
     b"undo=", b"0" * 24, b","]), max_size=12).map(
    b"".join)


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(path=st.sampled_from(PAGES), query=QUERY)
def test_any_query_string_on_a_page_is_never_a_500(app, client, path, query):
    http = _shared_browser(app, client)
    answer = http.get(path, environ_overrides={"QUERY_STRING": query.decode("latin-1")})
    assert answer.status_code < 500, (path, query, answer.status_code)


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(path=st.sampled_from(["/drive/mkdir", "/mail/compose", "/logout", "/drive/shares/new",
                             "/s/" + "A" * 43 + "/unlock"]),
       ctype=st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data",
                              "multipart/form-data; boundary=b", "text/plain", "",
                              "application/x-www-form-urlencoded; charset=bogus"]),
       body=st.binary(max_size=300))
def test_any_body_bytes_are_never_a_500(app, client, path, ctype, body):
    http = _shared_browser(app, client)
    token = _csrf(http, "/drive").encode()
    data = b"csrf=" + token + b"&" + body if "urlencoded" in ctype else body
    answer = http.post(path, data=data, content_type=ctype or None)
    assert answer.status_code < 500, (path, ctype, body, answer.status_code)
    if path == "/logout":
        _SHARED.clear()  # that browser is signed out now


# -- the From of mail a user sends is the user's ------------------------------------------

def _stored_from(client, user: str, folder: str) -> list[str]:
    [summary] = [m for m in mailbox.list_messages(client, user, folder)]
    raw = mailbox.get_message(client, user, summary.id)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return [str(value) for value in message.get_all("From") or []]


def test_a_forged_from_in_the_webmail_sends_with_the_users_own(app, client):
    sender, recipient = _user(client), _user(client)
    http, _ = _login(app, sender)
    answer = http.post("/mail/compose", data={
        "csrf": _csrf(http, "/mail/compose"), "to": f"{recipient}@raftcloud.test",
        "from": "Administrator <admin@raftcloud.test>", "subject": "hello", "body": "hi"})
    assert answer.status_code == 303
    assert _stored_from(client, recipient, "inbox") == [f"{sender}@raftcloud.test"]


def test_a_forged_from_through_submission_is_replaced_by_the_users_own(client):
    # The submission port hands the client's bytes to outbound.submit as they are.
    sender, recipient = _user(client), _user(client)
    raw = (f"From: Administrator <admin@raftcloud.test>\r\nSender: admin@raftcloud.test\r\n"
           f"To: {recipient}@raftcloud.test\r\nSubject: urgent\r\n"
           f"Message-ID: <{secrets.token_hex(8)}@x>\r\n\r\nFrom: the body stays\r\n").encode()
    outbound.submit(client, sender, f"{sender}@raftcloud.test", [f"{recipient}@raftcloud.test"],
                    raw, domains=("raftcloud.test",))
    own = f"Administrator <{sender}@raftcloud.test>"
    assert _stored_from(client, recipient, "inbox") == [own]
    assert _stored_from(client, sender, "sent") == [own]


def test_a_forged_from_on_the_submission_port_is_replaced_by_the_users_own(kv_cluster, client):
    sender, recipient = _user(client), _user(client)
    raw = (f"From: Administrator <admin@raftcloud.test>\r\nTo: {recipient}@raftcloud.test\r\n"
           "Subject: from the port\r\n\r\nhello\r\n")
    with inprocess_smtpd(kv_cluster.cluster, client, submission=f"127.0.0.1:{free_port()}",
                         plaintext_auth_on_loopback=True) as settings:
        host, port = settings.submission.rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.login(sender, PASSWORD)
            smtp.sendmail(f"{sender}@raftcloud.test", [f"{recipient}@raftcloud.test"], raw)
    assert _stored_from(client, recipient, "inbox") == [
        f"Administrator <{sender}@raftcloud.test>"]


# -- on a real gunicorn frontend ------------------------------------------------------------

@pytest.fixture(scope="module")
def frontend(kv_cluster, tmp_path_factory) -> Iterator[tuple[str, Proc]]:
    with running_frontend(kv_cluster, tmp_path_factory.mktemp("fe-sec"), "fe-sec-g") as started:
        yield started


class Wire:
    """One raw connection: send what we like, read the answer's head."""

    def __init__(self, addr: str, timeout: float = 10.0) -> None:
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False  # the server answered and closed before taking it all

    def answer(self) -> bytes:
        """The answer's status line and headers (socket.timeout if none comes)."""
        data = b""
        while b"\r\n\r\n" not in data:
            part = self.sock.recv(65536)
            if not part:
                break
            data += part
        return data


def _session(addr: str, login: str | None = None) -> tuple[str, str]:
    """A sid cookie (logged in as ``login`` if given) and a CSRF token for it."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/")
        page = conn.getresponse()
        sid = re.match(r"sid=([^;]+)", page.headers["Set-Cookie"]).group(1)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.read().decode()).group(1)
        if login:
            body = f"csrf={csrf}&username={login}&password={PASSWORD.replace(' ', '+')}"
            conn.request("POST", "/login", body, {
                "Cookie": f"sid={sid}", "Content-Type": "application/x-www-form-urlencoded"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 303
            sid = re.match(r"sid=([^;]+)", answer.headers["Set-Cookie"]).group(1)
            conn.request("GET", "/mail/compose", headers={"Cookie": f"sid={sid}"})
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"',
                             conn.getresponse().read().decode()).group(1)
        return sid, csrf
    finally:
        conn.close()


def _head(method: str, path: str, addr: str, sid: str | None, extra: str) -> bytes:
    cookie = f"Cookie: sid={sid}\r\n" if sid else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}{extra}\r\n".encode()


def test_a_strangers_64_mib_post_is_answered_before_its_body(frontend):
    addr, _ = frontend
    sid, csrf = _session(addr)
    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    cases = [  # (path, sid, expected status): 64 MiB announced, 16 KiB sent
        ("/login", None, b"403"), ("/signup", sid, b"413"), ("/login", sid, b"413"),
        ("/drive/upload", sid, b"303"), ("/mail/compose", sid, b"303"),
    ]
    for path, cookie, status in cases:
        started = time.monotonic()
        with Wire(addr) as wire:
            wire.send(_head("POST", path, addr, cookie, form + f"Content-Length: {64 * MiB}\r\n")
                      + f"csrf={csrf}&username=".encode() + b"a" * 16384)
            answer = wire.answer()
        assert answer.startswith(b"HTTP/1.1 " + status), (path, answer[:200])
        assert time.monotonic() - started < 5
    # Chunked, so the server cannot know the size: it stops reading at the small limit.
    with Wire(addr) as wire:
        wire.send(_head("POST", "/login", addr, sid, form + "Transfer-Encoding: chunked\r\n")
                  + b"".join(b"4000\r\n" + b"a" * 0x4000 + b"\r\n" for _ in range(16)))
        answer = wire.answer()  # 256 KiB sent of a body that has no end yet
    assert answer.startswith((b"HTTP/1.1 403", b"HTTP/1.1 413")), answer[:200]


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _compose_body(csrf: str, to: str) -> tuple[str, bytes, bytes]:
    """A compose form's boundary, its fields (the multipart head) and its closing line."""
    boundary = secrets.token_hex(16)
    head = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                   for k, v in (("csrf", csrf), ("to", to), ("subject", "big"), ("body", "x")))
    return boundary, head.encode(), f"--{boundary}--\r\n".encode()


def _send_compose(wire: Wire, addr: str, sid: str, csrf: str, to: str, sizes: list[int], *,
                  chunked: bool, stop_after: int | None = None) -> None:
    boundary, head, tail = _compose_body(csrf, to)
    block = b"z" * MiB
    parts = [head]
    for i, size in enumerate(sizes):
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; "
                     f"filename=\"f{i}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                     .encode())
        parts.extend([block] * (size // MiB))
        parts.append(b"\r\n")
    parts.append(tail)
    length = sum(len(p) for p in parts)
    framing = ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n")
    wire.send(_head("POST", "/mail/compose", addr, sid,
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}"))
    sent = 0
    for part in parts:
        if stop_after is not None and sent >= stop_after:
            return
        ok = wire.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        sent += len(part)
        if not ok:
            return
    if chunked:
        wire.send(b"0\r\n\r\n")


@pytest.mark.parametrize(("sizes", "chunked", "stop_after"), [
    ([20 * MiB] * 3, False, MiB),    # announced too large: answered before the body
    ([20 * MiB] * 3, True, None),    # chunked: read (to disk) only up to the limit
    ([10 * MiB] * 2, False, None),   # within the body limit, too large once encoded
], ids=["announced", "chunked", "encoded"])
def test_an_oversized_compose_costs_the_worker_little_memory(frontend, client, sizes, chunked,
                                                             stop_after):
    addr, proc = frontend
    sender, recipient = _user(client), _user(client)
    sid, csrf = _session(addr, login=sender)
    to = f"{recipient}@raftcloud.test"
    with Wire(addr, timeout=60) as wire:  # warm up: the compose path's imports and templates
        _send_compose(wire, addr, sid, csrf, to, [MiB], chunked=False)
        assert wire.answer().startswith(b"HTTP/1.1 303")
    worker = _worker_pid(proc.popen.pid)
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # restart the peak (VmHWM) from now
    before = _status_kib(worker, "VmRSS")
    with Wire(addr, timeout=60) as wire:
        _send_compose(wire, addr, sid, csrf, to, sizes, chunked=chunked, stop_after=stop_after)
        answer = wire.answer()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    grown = _status_kib(worker, "VmHWM") - before
    print(f"peak growth of the worker: {grown} KiB")
    assert grown < 40 * 1024, f"the worker grew by {grown // 1024} MiB"
    assert len(mailbox.list_messages(client, recipient, "inbox")) == 1  # only the warm-up


def test_static_files_on_gunicorn_carry_the_security_headers(frontend):
    addr, _ = frontend
    with Wire(addr) as wire:
        wire.send(_head("GET", "/static/style.css", addr, None, "Connection: close\r\n"))
        answer = wire.answer().decode("latin-1")
    assert answer.startswith("HTTP/1.1 200")
    assert re.search(r"(?im)^x-content-type-options: nosniff\r$", answer)
    assert re.search(r"(?im)^x-frame-options: deny\r$", answer)
    assert f"Content-Security-Policy: {CSP}\r\n" in answer


@pytest.mark.parametrize("request_head", [
    b"GET /%zz%ff%00 HTTP/1.1\r\n",
    b"GET /login?next=%ff%fe%0d%0a&x=%zz HTTP/1.1\r\n",
    b"GET /login?next=\x80\xff&\xc3\x28 HTTP/1.1\r\n",
    b"GET /\xff\xfe/x HTTP/1.1\r\n",
    b"GET /mail/%0a%0d HTTP/1.1\r\n",
    b"GET / HTTP/1.1\r\nCookie: sid=\xff\xfe\"; ;;=; sid=%zz\r\n",
    b"GET / HTTP/1.1\r\nCookie: " + b"sid=" + b"A" * 43 + b"\x7f\r\n",
    b"GET /drive HTTP/1.1\r\nCookie: sid=" + b"A" * 43 + b"\r\n",
    b"GET / HTTP/1.1\r\nAccept-Language: \xc3\x28\r\nUser-Agent: \xff\r\n",
    b"GET / HTTP/1.1\r\nIf-Modified-Since: yesterday\r\nRange: bytes=9-1\r\n",
    b"GET /static/style.css HTTP/1.1\r\nIf-Modified-Since: \xff\r\nRange: bytes=x\r\n",
    b"POST /login HTTP/1.1\r\nContent-Type: multipart/form-data\r\nContent-Length: 5\r\n",
    b"POST /login HTTP/1.1\r\nContent-Type: text/\xff; charset=nope\r\nContent-Length: 5\r\n",
], ids=lambda head: head.split(b"\r\n")[0][:30].decode("latin-1"))
def test_malformed_requests_on_the_wire_are_never_a_500(frontend, request_head):
    addr, _ = frontend
    sid, _csrf_token = _session(addr)
    head = request_head.replace(b"HTTP/1.1\r\n",
                                f"HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n".encode(), 1)
    if b"sid=" not in head:
        head = head.replace(b"Host:", f"Cookie: sid={sid}\r\nHost:".encode(), 1)
    with Wire(addr) as wire:
        wire.send(head + b"\r\n" + (b"csrf=" if head.startswith(b"POST") else b""))
        answer = wire.answer()
    status = answer.split(b" ", 2)[1] if answer else b"closed"
    assert status[:1] in (b"2", b"3", b"4", b"c"), answer[:300]


def test_the_frontend_still_serves(frontend):
    addr, _ = frontend
    threads = [threading.Thread(target=_session, args=(addr,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _session(addr)[0]

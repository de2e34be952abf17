"""The portal as deployed: gunicorn with portal/gunicorn_conf.py, configured from the environment.

Some requests go on raw sockets, byte for byte, to see what gunicorn and
werkzeug make of chunked bodies, broken chunks and bodies announced too big.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import secrets
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from .._frontend import frontend_table, gunicorn, running_frontend, serving
from .._procs import free_port, wait_for

pytestmark = pytest.mark.cluster

ADMIN_PASSWORD = "admin-password-1"  # the shared kv_cluster has one admin: test_portal.py makes it first


class Browser:
    """Just enough of a browser: one keep-alive connection and the sid cookie."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.sid = ""

    def request(self, method: str, path: str, body=None, headers=None,
                chunked: bool = False) -> http.client.HTTPResponse:
        headers = dict(headers or {})
        if self.sid:
            headers["Cookie"] = f"sid={self.sid}"
        self.conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = self.conn.getresponse()
        match = re.match(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
        if match:
            self.sid = match.group(1)
        return response

    def close(self) -> None:
        self.conn.close()

    def page(self, path: str) -> str:
        return self.request("GET", path).read().decode()

    def csrf(self, path: str) -> str:
        return re.search(r'name="csrf" value="([0-9a-f]+)"', self.page(path)).group(1)

    def post_form(self, path: str, fields: dict[str, str], form_page: str) -> int:
        body = urlencode({"csrf": self.csrf(form_page), **fields})
        response = self.request("POST", path, body,
                                {"Content-Type": "application/x-www-form-urlencoded"})
        response.read()
        return response.status


@pytest.fixture(scope="module")
def frontend(kv_cluster, tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("frontend")
    (root / "admin.password").write_text(ADMIN_PASSWORD)
    with running_frontend(kv_cluster, root, "fe-g", env={
            "RAFTCLOUD_ADMIN_PASSWORD_FILE": str(root / "admin.password")}) as (addr, _):
        yield addr


@pytest.fixture
def browser(frontend) -> Iterator[Browser]:
    browser = Browser(frontend)
    yield browser
    browser.close()


def test_healthz_and_head(browser):
    response = browser.request("GET", "/healthz")
    body = json.loads(response.read())
    assert response.status == 200 and body["frontend"] == "fe-g" and body["status"] == "ok"
    head = browser.request("HEAD", "/")
    assert head.status == 200 and head.read() == b""
    css = browser.request("GET", "/static/style.css")
    assert css.status == 200 and b"body" in css.read()


def test_admin_created_from_the_password_file(browser):
    wait_for(lambda: browser.post_form("/login", {"username": "admin", "password": ADMIN_PASSWORD},
                                       "/") == 303, 30, "the admin account", interval=0.5)
    assert browser.request("GET", "/admin").status == 200


def test_big_upload_chunked_and_download_over_keepalive(browser):
    name = f"g{secrets.token_hex(4)}"
    assert browser.post_form("/signup", {"username": name, "password": "password-123",
                                         "password2": "password-123"}, "/signup") == 303
    content = os.urandom(12 * 1024 * 1024 + 3)
    boundary = secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"
            f"{browser.csrf('/drive')}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream"
            f"\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:  # a streamed request body: Transfer-Encoding: chunked
        yield head
        for i in range(0, len(content), 256 * 1024):
            yield content[i:i + 256 * 1024]
        yield tail

    response = browser.request(
        "POST", "/drive/upload", body(),
        {"Content-Type": f"multipart/form-data; boundary={boundary}"}, chunked=True)
    response.read()
    assert response.status == 303
    [file_id] = re.findall(r'href="/drive/([0-9a-f]{24})"', browser.page("/drive"))
    download = browser.request("GET", f"/drive/{file_id}")
    assert download.status == 200
    assert int(download.headers["Content-Length"]) == len(content)
    assert download.read() == content


# -- on the wire: chunked bodies, the whole frontend's load, two frontends at once --------

def signup(browser: Browser) -> str:
    name = f"g{secrets.token_hex(4)}"
    assert browser.post_form("/signup", {"username": name, "password": "password-123",
                                         "password2": "password-123"}, "/signup") == 303
    return name


def multipart(csrf: str, filename: str, content: bytes, folder: str = "root") -> tuple[str, bytes]:
    boundary = secrets.token_hex(16)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\n{folder}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return boundary, body


def raw_exchange(addr: str, request: bytes, *, source: str = "127.0.0.1",
                 timeout: float = 30.0) -> bytes:
    """Send ``request`` as given on a fresh connection; everything read until the server closes
    (or the answer's Content-Length is complete)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer (and close) before taking all of it
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
        return data


def test_a_chunked_upload_on_a_raw_socket(frontend, browser):
    signup(browser)
    content = os.urandom(700_000) + b"\r\n0\r\n\r\n" + os.urandom(300_000)  # chunk syntax inside
    boundary, body = multipart(browser.csrf("/drive"), "raw.bin", content)
    chunks = b""
    for i, start in enumerate(range(0, len(body), 100_003)):
        part = body[start:start + 100_003]
        extension = b";note=x" if i == 1 else b""  # RFC 9112 §7.1.1 chunk extensions are legal
        chunks += b"%x%s\r\n%s\r\n" % (len(part), extension, part)
    request = (f"POST /drive/upload HTTP/1.1\r\nHost: {frontend}\r\nCookie: sid={browser.sid}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    answer = raw_exchange(frontend, request + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 303"), answer[:300]
    [file_id] = re.findall(r'href="/drive/([0-9a-f]{24})">raw.bin<', browser.page("/drive"))
    download = browser.request("GET", f"/drive/{file_id}")
    assert download.read() == content
    # A download of unknown length (a folder as a zip, built while sent) goes out chunked.
    archive = browser.request("GET", "/drive/d/root/zip")
    assert archive.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in archive.headers
    assert zipfile.ZipFile(io.BytesIO(archive.read())).read("raw.bin") == content

    broken = raw_exchange(frontend, request + b"zz\r\nnot hex\r\n0\r\n\r\n")
    assert broken.startswith(b"HTTP/1.1 400") and b"could not be read" in broken
    assert browser.request("GET", "/healthz").status == 200  # and it serves on


FRONTEND_QUOTA = 2_000_000


@pytest.fixture(scope="module")
def frontends(kv_cluster, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Two gunicorn frontends on one store: fe-a with two workers, fe-b with a small quota."""
    root = tmp_path_factory.mktemp("frontends")
    addrs = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    config = root / "cluster.toml"
    config.write_text(kv_cluster.path.read_text() + "".join(
        frontend_table(f"fe-{n}", addr) for n, addr in zip("ab", addrs, strict=True)))
    secret = kv_cluster.root / "secret"
    fe_a = gunicorn("fe-a", addrs[0], config, secret, root, workers=2)
    fe_b = gunicorn("fe-b", addrs[1], config, secret, root,
                    env={"RAFTCLOUD_DRIVE_QUOTA": str(FRONTEND_QUOTA)})
    with serving([(fe_a, addrs[0]), (fe_b, addrs[1])]):
        yield addrs[0], addrs[1]


def test_healthz_reports_every_workers_load(frontends):
    fe_a, _ = frontends
    browser = Browser(fe_a)
    try:
        signup(browser)
        boundary, body = multipart(browser.csrf("/drive"), "big.bin", os.urandom(8 * 1024 * 1024))
        response = browser.request("POST", "/drive/upload", body,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response.read()
        [file_id] = re.findall(r'href="/drive/([0-9a-f]{24})"', browser.page("/drive"))
    finally:
        browser.close()
    host, port = fe_a.rsplit(":", 1)
    stalled = []
    try:
        for _ in range(3):  # downloads whose reader never reads: each holds a worker thread
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect((host, int(port)))
            sock.sendall(f"GET /drive/{file_id} HTTP/1.1\r\nHost: {fe_a}\r\n"
                         f"Cookie: sid={browser.sid}\r\n\r\n".encode())
            stalled.append(sock)

        def probe() -> dict:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("GET", "/healthz", headers={"Connection": "close"})
                return json.loads(conn.getresponse().read())
            finally:
                conn.close()

        wait_for(lambda: probe()["load"] >= 4, 20, "the stalled downloads to count")
        for _ in range(6):  # whichever worker answers, it counts them all
            body = probe()
            assert body["workers"] == 2 and body["load"] >= 4, body
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: probe()["load"] == 1, 30, "the load to fall back")


def test_two_gunicorn_frontends_racing_in_one_folder_lose_nothing(frontends):
    browsers = [Browser(addr) for addr in frontends for _ in range(2)]
    try:
        name = signup(browsers[0])
        for other in browsers[1:]:
            assert other.post_form("/login", {"username": name, "password": "password-123"},
                                   "/") == 303
        assert browsers[0].post_form("/drive/mkdir", {"name": "race", "folder": "root"},
                                     "/drive") == 303
        [folder] = re.findall(r'href="/drive/d/([0-9a-f]{24})"', browsers[0].page("/drive"))
        errors: list[BaseException] = []

        def work(browser: Browser, tag: str) -> None:
            try:
                for i in range(5):
                    assert browser.post_form("/drive/mkdir", {"name": f"{tag}{i}",
                                                              "folder": folder},
                                             f"/drive/d/{folder}") == 303
                    made = re.search(rf'href="/drive/d/([0-9a-f]{{24}})"[^>]*>{tag}{i}<',
                                     browser.page(f"/drive/d/{folder}")).group(1)
                    assert browser.post_form(f"/drive/d/{made}/rename",
                                             {"name": f"{tag}{i}-renamed"},
                                             f"/drive/d/{folder}") == 303
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(b, tag))
                   for b, tag in zip(browsers, ("a", "b", "c", "d"), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        expected = sorted(f"{t}{i}-renamed" for t in "abcd" for i in range(5))
        for browser in (browsers[0], browsers[2]):  # as each frontend lists it
            listed = re.findall(r'class="folder">([^<]+)</a>', browser.page(f"/drive/d/{folder}"))
            assert sorted(listed) == expected
    finally:
        for browser in browsers:
            browser.close()


def login_request(addr: str, csrf_browser: Browser, name: str, password: str) -> bytes:
    body = urlencode({"csrf": csrf_browser.csrf("/"), "username": name, "password": password})
    return (f"POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: sid={csrf_browser.sid}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def test_failed_logins_count_across_frontends(frontends):
    fe_a, fe_b = frontends
    owner = Browser(fe_a)
    name = signup(owner)
    owner.close()
    guesser_a, guesser_b = Browser(fe_a), Browser(fe_b)
    try:
        for _ in range(5):  # the default free misses per (account, address)
            answer = raw_exchange(fe_a, login_request(fe_a, guesser_a, name, "a wrong guess"),
                                  source="127.0.0.3")
            assert answer.startswith(b"HTTP/1.1 403")
        answer = raw_exchange(fe_b, login_request(fe_b, guesser_b, name, "password-123"),
                              source="127.0.0.3")
        assert answer.startswith(b"HTTP/1.1 429") and b"Retry-After:" in answer
    finally:
        guesser_a.close()
        guesser_b.close()


def test_an_upload_over_the_quota_is_refused_before_its_body_is_sent(frontends):
    _, fe_b = frontends
    browser = Browser(fe_b)
    try:
        signup(browser)
        csrf = browser.csrf("/drive")
    finally:
        browser.close()
    boundary, body = multipart(csrf, "huge.bin", b"x" * 65536)
    head = (f"POST /drive/upload HTTP/1.1\r\nHost: {fe_b}\r\nCookie: sid={browser.sid}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode()
    started = time.monotonic()
    answer = raw_exchange(fe_b, head + body[:32768], timeout=20)  # 100 MB announced, 32 KB sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than what is left of your quota" in answer
    assert time.monotonic() - started < 10

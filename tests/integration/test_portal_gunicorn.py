"""The portal as deployed: gunicorn with deploy/gunicorn.conf.py, configured from the environment."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from .._procs import Proc, free_port, port_open, python_cmd, wait_for

pytestmark = pytest.mark.cluster

CONF = Path(__file__).parents[2] / "deploy" / "gunicorn.conf.py"
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
    addr = f"127.0.0.1:{free_port()}"
    config = root / "cluster.toml"
    config.write_text(kv_cluster.path.read_text()
                      + f'\n[[frontend]]\nname = "fe-g"\nlisten = "{addr}"\n')
    (root / "admin.password").write_text(ADMIN_PASSWORD)
    proc = Proc("fe-g", python_cmd("gunicorn", "-c", str(CONF), "--bind", addr, "--workers", "1",
                                   "--threads", "4", "portal:create_app()"), root, env={
        "RAFTCLOUD_CONFIG": str(config), "RAFTCLOUD_FRONTEND": "fe-g",
        "RAFTCLOUD_SECRET_FILE": str(kv_cluster.root / "secret"),
        "RAFTCLOUD_ADMIN_PASSWORD_FILE": str(root / "admin.password")})
    proc.start()
    try:
        wait_for(lambda: port_open(addr), 30, "gunicorn to listen")
        yield addr
    except BaseException:
        print(proc.log())
        raise
    finally:
        proc.stop()


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

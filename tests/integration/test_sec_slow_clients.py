"""Issue 13, hole 3: slow clients cannot take an HTTP listener offline; trusted proxies only.

Against a real gunicorn frontend (portal/gunicorn_conf.py, the portal's worker
class), a real balancer and the launcher's control API: sockets that send half
a request head and hang are closed by the server after its head deadline,
while a quick client is answered meanwhile; beyond the connection cap the
longest-waiting of them makes room; a body sent, or an answer read, below the
minimum transfer rate is cut, while a steady client above it is served whole.
X-Forwarded-For counts only from a proxy the cluster file trusts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from balancer.server import Balancer
from deploy.launcher import _serve_control
from deploy.procs import Supervisor

from .._frontend import GUNICORN_CONF, gunicorn, serving
from .._procs import Proc, free_port, python_cmd, wait_for
from .test_balancer_redirect import FakeFrontend

pytestmark = pytest.mark.cluster

HEAD_TIMEOUT = 2.5
IO_TIMEOUT = 3
MAX_CONNECTIONS = 64
MIN_RATE = 1000  # bytes/s a body must average once HEAD_TIMEOUT (the grace) has passed
PROXY = "127.0.0.2"  # the one peer the test cluster trusts to forward
SIGNUPS_PER_ADDRESS = 3


# -- slow sockets ------------------------------------------------------------------------

def slow_sockets(addr: str, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and then nothing."""
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ".encode())
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the socket open that long."""
    sock.settimeout(max(within, 0.01))
    data = b""
    try:
        while part := sock.recv(4096):
            data += part
    except TimeoutError:
        return None
    except OSError:
        pass  # reset: closed too
    return data


def answers_quickly(addr: str, path: str, headers: dict[str, str] | None = None,
                    within: float = 2.0) -> http.client.HTTPResponse:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=within)
    started = time.monotonic()
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        response.body = response.read()
    finally:
        conn.close()
    assert time.monotonic() - started < within
    return response


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def check_slow_heads_are_cut(addr: str, path: str) -> None:
    """40 half heads: the listener answers meanwhile and closes them after its deadline."""
    started = time.monotonic()
    socks = slow_sockets(addr, 40)
    try:
        for _ in range(3):
            assert answers_quickly(addr, path).status in (200, 307, 401)
        endings = [closed_by_server(s, HEAD_TIMEOUT + 5 - (time.monotonic() - started))
                   for s in socks]
        assert all(e is not None for e in endings), "a slow socket outlived the head deadline"
        assert time.monotonic() - started >= HEAD_TIMEOUT - 0.5  # not before it, either
        assert all(e == b"" or e.startswith(b"HTTP/1.1 408") for e in endings), endings[:3]
        assert answers_quickly(addr, path).status in (200, 307, 401)
    finally:
        close_all(socks)


def check_the_cap_makes_room(addr: str, path: str, cap: int) -> None:
    """Far more half heads than the cap: the oldest go at once (503), quick clients get in."""
    started = time.monotonic()
    socks = slow_sockets(addr, cap + 60)
    try:
        for _ in range(3):
            assert answers_quickly(addr, path).status in (200, 307, 401)
        time.sleep(0.2)
        readable, _, _ = select.select(socks, [], [], 0)
        seen = time.monotonic()
        cut = [e for e in (closed_by_server(s, 1.0) for s in readable) if e is not None]
        assert len(cut) >= 60, f"only {len(cut)} connections were closed at the cap"
        assert seen - started < HEAD_TIMEOUT  # so no deadline closed any of them
        assert any(e.startswith(b"HTTP/1.1 503") for e in cut)  # with a clear answer
    finally:
        close_all(socks)


# -- a gunicorn frontend -----------------------------------------------------------------

@pytest.fixture(scope="module")
def frontend(kv_cluster, tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow-frontend")
    addr = f"127.0.0.1:{free_port()}"
    config = root / "cluster.toml"
    # The session's cluster file lifts the per-address limits ([auth]); ours sets
    # its own, low signup limit to see which address a signup is counted against.
    shared = re.sub(r"(?ms)^\[auth\]\n.*?(?=^\[|\Z)", "", kv_cluster.path.read_text())
    config.write_text(shared + f"""
[auth]
address = {{ free = 1000000 }}
signup = {{ free = {SIGNUPS_PER_ADDRESS} }}

[[frontend]]
name = "fe-slow"
listen = "{addr}"

[web]
head_timeout = {HEAD_TIMEOUT}
io_timeout = {IO_TIMEOUT}
max_connections = {MAX_CONNECTIONS}
min_rate = {MIN_RATE}
trusted_proxies = ["{PROXY}"]
""")
    proc = gunicorn("fe-slow", addr, config, kv_cluster.root / "secret", root)
    with serving([(proc, addr)]):
        wait_for(lambda: answers_quickly(addr, "/healthz", within=5).status == 200, 30,
                 "the frontend to answer")
        yield addr


def test_frontend_answers_while_slow_heads_hang_and_cuts_them_at_the_deadline(frontend):
    check_slow_heads_are_cut(frontend, "/healthz")


def test_frontend_connection_cap_makes_room_for_quick_clients(frontend):
    check_the_cap_makes_room(frontend, "/healthz", MAX_CONNECTIONS)


def test_frontend_cuts_a_dripped_body_after_the_read_timeout(frontend):
    member = Visitor(frontend, fresh_loopback())
    assert member.signup() == 303
    host, port = frontend.rsplit(":", 1)
    socks = []
    try:
        for _ in range(6):  # more than the worker's 4 threads: uploads that stop half-way
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(f"POST /drive/upload HTTP/1.1\r\nHost: {frontend}\r\n"
                         f"Cookie: sid={member.sid}\r\nContent-Length: 100000\r\n"
                         "Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n"
                         "--b0undary\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"
                         .encode())
            socks.append(sock)
        started = time.monotonic()
        endings = [closed_by_server(s, IO_TIMEOUT + 8) for s in socks]
        assert all(e is not None for e in endings), "a dripped body held its thread"
        assert time.monotonic() - started < IO_TIMEOUT + 8
        assert answers_quickly(frontend, "/healthz").status == 200
    finally:
        close_all(socks)


def drip(socks: list[socket.socket], stop: threading.Event, interval: float = 0.5,
         rounds: int = 40) -> None:
    """Send each socket one byte every ``interval`` (at most ``rounds`` times), until ``stop``."""
    open_socks = list(socks)
    for _ in range(rounds):
        if stop.wait(interval) or not open_socks:
            return
        for sock in list(open_socks):
            try:
                sock.send(b"a")
            except OSError:  # the server cut it
                open_socks.remove(sock)


def test_frontend_cuts_a_body_dripped_below_the_min_rate(frontend):
    # Any well-formed sid passes the check before an anonymous form's body (up
    # to 64 KiB).  A byte every 0.5 s never lets one read wait io_timeout, but
    # is far below min_rate: each such body is cut once the grace has passed.
    host, port = frontend.rsplit(":", 1)
    socks: list[socket.socket] = []
    stop = threading.Event()
    dripper = threading.Thread(target=drip, args=(socks, stop), daemon=True)
    try:
        for _ in range(6):  # more than the worker's 4 threads
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(f"POST /login HTTP/1.1\r\nHost: {frontend}\r\n"
                         f"Cookie: sid={secrets.token_urlsafe(32)}\r\nContent-Length: 65000\r\n"
                         "Content-Type: application/x-www-form-urlencoded\r\n\r\ncsrf="
                         .encode())
            socks.append(sock)
        started = time.monotonic()
        dripper.start()
        # Queued behind the dripped bodies, it gets a thread once the first are cut.
        assert answers_quickly(frontend, "/healthz", within=HEAD_TIMEOUT + 4).status == 200
        deadline = started + 2 * HEAD_TIMEOUT + 6  # the last two waited for a thread
        endings = [closed_by_server(s, deadline - time.monotonic()) for s in socks]
        assert all(e is not None for e in endings), "a body dripped below min_rate held its thread"
        assert answers_quickly(frontend, "/healthz").status == 200
    finally:
        stop.set()
        if dripper.is_alive():
            dripper.join()
        close_all(socks)


def test_frontend_answers_while_answered_clients_never_hang_up(frontend):
    # After a "Connection: close" answer the server lingers for the peer's FIN
    # (up to 2 s); stock gthread does that on its event loop, one peer at a time.
    host, port = frontend.rsplit(":", 1)
    socks = []
    try:
        for _ in range(12):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {frontend}\r\n"
                         "Connection: close\r\n\r\n".encode())
            socks.append(sock)
        time.sleep(0.5)
        for _ in range(3):
            assert answers_quickly(frontend, "/healthz").status == 200
    finally:
        close_all(socks)


@contextlib.contextmanager
def download_frontend(kv_cluster, root: Path, web: str) -> Iterator[tuple[str, int]]:
    """A gunicorn frontend of tests/integration/_download_app.py (6 MiB per GET) with
    the given ``[web]`` lines."""
    addr = f"127.0.0.1:{free_port()}"
    config = root / "cluster.toml"
    config.write_text(kv_cluster.path.read_text() + f"\n[web]\n{web}\n")
    proc = Proc("fe-download", python_cmd(
        "gunicorn", "-c", GUNICORN_CONF, "--bind", addr, "--workers", "1", "--threads", "2",
        "--chdir", str(Path(__file__).parent), "_download_app:app"), root, env={
        "RAFTCLOUD_CONFIG": str(config), "RAFTCLOUD_SECRET_FILE": str(kv_cluster.root / "secret")})
    with serving([(proc, addr)]):
        host, port = addr.rsplit(":", 1)
        yield host, int(port)


def read_download(host: str, port: int, pause: float, within: float) -> tuple[int, bool]:
    """GET the download reading 16 KiB per ``pause`` seconds through a small receive buffer:
    the bytes received, and whether the server ended the answer within ``within`` seconds."""
    started = time.monotonic()
    received = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while time.monotonic() - started < within:
            try:
                part = sock.recv(16384)
            except OSError:  # reset: ended too
                return received, True
            if not part:
                return received, True
            received += len(part)
            time.sleep(pause)
    return received, False


def test_a_slow_but_steady_download_is_not_cut_by_the_io_timeout(kv_cluster, tmp_path):
    # io_timeout bounds a stall; a reader at ~600 KB/s takes longer than it for
    # each 1 MiB piece of an answer (once the socket buffers are full), and must
    # still get every byte.
    with download_frontend(kv_cluster, tmp_path, "io_timeout = 1") as (host, port):
        received, ended = read_download(host, port, 0.025, 60)
        assert ended and received > 6 * 1024 * 1024, f"cut off after {received} bytes"


def test_an_answer_read_below_the_min_rate_is_cut_and_a_steady_reader_is_served(
        kv_cluster, tmp_path):
    # 32 KB/s against a min_rate of 200 KB/s: no single write waits io_timeout
    # (30 s), yet the answer is cut soon after the 1 s grace.  A reader at about
    # 4 times the rate, at the same time, gets all 6 MiB.
    with download_frontend(kv_cluster, tmp_path, "head_timeout = 1\nmin_rate = 200000") as (
            host, port):
        steady: list[tuple[int, bool]] = []
        reader = threading.Thread(target=lambda: steady.append(
            read_download(host, port, 0.02, 60)), daemon=True)
        reader.start()
        received, ended = read_download(host, port, 0.5, 15)
        reader.join(70)
        assert ended, f"a reader at 32 KB/s still held its thread after 15 s ({received} bytes)"
        assert received < 6 * 1024 * 1024
        assert steady and steady[0][0] > 6 * 1024 * 1024, f"the steady reader got {steady}"


# -- trusted proxies ---------------------------------------------------------------------

class Visitor:
    """A browser on one source address that may claim to forward for someone."""

    def __init__(self, addr: str, source: str, forwarded_for: str | None = None) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30,
                                               source_address=(source, 0))
        self.headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        self.sid = ""

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        headers = {**self.headers, **(headers or {})}
        if self.sid:
            headers["Cookie"] = f"sid={self.sid}"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        match = re.match(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
        if match:
            self.sid = match.group(1)
        return response.status, response.read().decode()

    def signup(self) -> int:
        _, page = self.request("GET", "/signup")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        name = f"p{secrets.token_hex(5)}"
        status, _ = self.request("POST", "/signup", urlencode({
            "csrf": csrf, "username": name, "password": "password-123",
            "password2": "password-123"}), {"Content-Type": "application/x-www-form-urlencoded"})
        self.conn.close()
        return status


def signups_until_refused(frontend: str, source: str, forwarded_for, attempts: int) -> int:
    """How many signups pass before the per-address limit answers 429 (``attempts`` if none)."""
    for i in range(attempts):
        status = Visitor(frontend, source, forwarded_for(i)).signup()
        if status == 429:
            return i
        assert status == 303, status
    return attempts


def fresh_loopback() -> str:
    return f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(frontend):
    # Each signup claims a new address; the limit still counts the real peer.
    peer = fresh_loopback()
    passed = signups_until_refused(frontend, peer, lambda i: f"198.51.100.{i + 1}", 8)
    assert passed == SIGNUPS_PER_ADDRESS, "a forged X-Forwarded-For escaped the per-address signup limit"


def test_x_forwarded_for_from_the_trusted_proxy_names_the_client(frontend):
    # Through the proxy, distinct clients each get their own budget ...
    client_base = fresh_loopback().rsplit(".", 1)[0]
    passed = signups_until_refused(frontend, PROXY, lambda i: f"{client_base}.{i + 1}", 8)
    assert passed == 8
    # ... one client is limited however the proxy's own address fares, and an
    # address the client wrote left of the proxy's entry changes nothing.
    client = fresh_loopback()
    passed = signups_until_refused(
        frontend, PROXY, lambda i: f"203.0.113.{i + 1}, {client}", 8)
    assert passed == SIGNUPS_PER_ADDRESS


# -- the balancer ------------------------------------------------------------------------

@pytest.fixture
def balancer(kv_cluster, client) -> Iterator[Balancer]:
    """A balancer with one live (fake) frontend, a short head deadline and [web] scheme https."""
    fake = FakeFrontend()
    cluster = dataclasses.replace(
        kv_cluster.cluster,
        tables={**kv_cluster.cluster.tables, "web": {"scheme": "https"},
                "balancer": {"name": f"balancer-{secrets.token_hex(3)}",
                             "listen": f"127.0.0.1:{free_port()}",
                             "head_timeout": HEAD_TIMEOUT, "max_connections": MAX_CONNECTIONS}})
    server = Balancer(cluster, client, discover=lambda: [fake.addr])
    server.fake = fake
    server.start()
    try:
        wait_for(lambda: any(f.live for f in server.pool.snapshot()), 10, "the frontend check")
        yield server
    finally:
        server.stop()
        fake.kill()


def test_balancer_answers_while_slow_heads_hang_and_cuts_them(balancer):
    check_slow_heads_are_cut(balancer.address, "/")


def test_balancer_connection_cap_makes_room(balancer):
    check_the_cap_makes_room(balancer.address, "/", MAX_CONNECTIONS)


def test_balancer_redirects_to_the_declared_scheme(balancer):
    response = answers_quickly(balancer.address, "/drive?x=1")
    assert response.status == 307
    assert response.getheader("Location") == f"https://{balancer.fake.addr}/drive?x=1"


# -- the launcher's control API ----------------------------------------------------------

@pytest.fixture
def control(tmp_path) -> Iterator[str]:
    addr = f"127.0.0.1:{free_port()}"
    server = _serve_control(addr, Supervisor([], tmp_path / "logs", {}), "token-" + "x" * 20,
                            threading.Event(), head_timeout=HEAD_TIMEOUT,
                            max_connections=MAX_CONNECTIONS)
    try:
        yield addr
    finally:
        server.shutdown()
        server.server_close()


def test_control_api_answers_while_slow_heads_hang_and_cuts_them(control):
    check_slow_heads_are_cut(control, "/processes")


def test_control_api_connection_cap_makes_room(control):
    check_the_cap_makes_room(control, "/processes", MAX_CONNECTIONS)

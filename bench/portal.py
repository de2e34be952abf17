"""The portal under load: wrk against its pages next to a werkzeug hello-world, same gunicorn.

    python -m bench.portal [--duration 10] [--connections 16] [--transfers 3] [--json]

Starts a 3-replica store and two gunicorn servers with ``portal/gunicorn_conf.py``
and the same workers and threads: the portal, and :mod:`bench.hello` (the least
a werkzeug app can do).  Then, in one run:

* ``wrk`` (Debian's) against the hello-world, the login page (anonymous: no
  store access) and a logged-in drive listing (a session read, the listing's
  version check, the quota read): requests/s, p50 and p99;
* a 10 MB upload and download through the portal, ``--transfers`` times each:
  median seconds and MB/s.

Every wrk run lasts ``--duration`` seconds; the transfers are bounded in count.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

import click

from tests._procs import Proc, free_port, port_open, python_cmd, wait_for
from tests.cluster import KVCluster

from .common import stop_cleanly_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
CONF = "python:portal.gunicorn_conf"
PASSWORD = "bench-password-1"
MB = 1_000_000


def gunicorn(stack: ExitStack, root: Path, name: str, app: str, workers: int, threads: int,
             env: dict[str, str]) -> str:
    addr = f"127.0.0.1:{free_port()}"
    proc = Proc(name, python_cmd("gunicorn", "-c", CONF, "--bind", addr, "--workers",
                                 str(workers), "--threads", str(threads), "--chdir", str(ROOT),
                                 app), root, env=env).start()
    stack.callback(proc.stop)
    wait_for(lambda: port_open(addr), 30, f"{name} to listen")
    return addr


class Session:
    """One keep-alive connection with the sid cookie."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.sid = ""

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
        headers = {**(headers or {}), **({"Cookie": f"sid={self.sid}"} if self.sid else {})}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        match = re.match(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
        if match:
            self.sid = match.group(1)
        return response.status, data

    def csrf(self, path: str) -> str:
        return re.search(rb'name="csrf" value="([0-9a-f]+)"', self.request("GET", path)[1]
                         ).group(1).decode()

    def form(self, path: str, fields: dict[str, str], page: str) -> int:
        body = urlencode({"csrf": self.csrf(page), **fields})
        return self.request("POST", path, body,
                            {"Content-Type": "application/x-www-form-urlencoded"})[0]


def prepare_user(addr: str) -> Session:
    """A user with a few folders and files, so the listing has something to show."""
    session = Session(addr)
    name = f"bench{secrets.token_hex(3)}"
    assert session.form("/signup", {"username": name, "password": PASSWORD,
                                    "password2": PASSWORD}, "/signup") == 303
    for i in range(10):
        assert session.form("/drive/mkdir", {"name": f"folder {i}", "folder": "root"},
                            "/drive") == 303
    for i in range(10):
        upload(session, f"file {i}.txt", b"x" * (1000 * i + 1))
    return session


def upload(session: Session, name: str, content: bytes) -> int:
    boundary = secrets.token_hex(16)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"
            f"{session.csrf('/drive')}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream"
            f"\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return session.request("POST", "/drive/upload", body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}"})[0]


def wrk(url: str, duration: float, connections: int, cookie: str = "") -> dict[str, float]:
    """requests/s, p50 and p99 (ms) of one wrk run."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency", url]
    if cookie:
        argv[1:1] = ["-H", f"Cookie: sid={cookie}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(percent: str) -> float:
        value, suffix = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * unit[suffix]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"),
            "non_2xx": float(errors.group(1)) if errors else 0.0}


def transfers(addr: str, session: Session, count: int) -> dict[str, float]:
    """Median seconds of a 10 MB upload and of its download, on a keep-alive connection."""
    content = os.urandom(10 * MB)
    ups, downs = [], []
    for i in range(count):
        session.conn.close()  # idle through wrk, the server dropped it: start afresh, untimed
        csrf = session.csrf("/drive")
        boundary = secrets.token_hex(16)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}"
                f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"ten-{i}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        started = time.perf_counter()
        status, _ = session.request("POST", "/drive/upload", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        ups.append(time.perf_counter() - started)
        assert status == 303, status
        page = session.request("GET", "/drive")[1].decode()
        file_id = re.search(rf'href="/drive/([0-9a-f]{{24}})">ten-{i}.bin<', page).group(1)
        started = time.perf_counter()
        status, data = session.request("GET", f"/drive/{file_id}")
        downs.append(time.perf_counter() - started)
        assert status == 200 and data == content
    up, down = statistics.median(ups), statistics.median(downs)
    return {"upload_s": up, "upload_mb_s": 10 / up, "download_s": down, "download_mb_s": 10 / down}


def table(pages: dict[str, dict[str, float]], moved: dict[str, float]) -> str:
    hello = pages["hello-world"]["rps"]
    lines = ["| target (same gunicorn settings) | req/s | p50 ms | p99 ms | vs hello-world |",
             "|---|--:|--:|--:|--:|"]
    for name, r in pages.items():
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['rps'] / hello:.2f} |")
    lines += ["", "| 10 MB through one frontend | seconds (median) | MB/s |", "|---|--:|--:|",
              f"| upload (multipart POST) | {moved['upload_s']:.2f} | {moved['upload_mb_s']:.1f} |",
              f"| download (GET) | {moved['download_s']:.2f} | {moved['download_mb_s']:.1f} |"]
    return "\n".join(lines)



@click.command()
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(1, 120),
              help="Seconds per wrk run.")
@click.option("--connections", default=16, show_default=True, type=click.IntRange(1, 256),
              help="wrk's open connections.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--transfers", "count", default=3, show_default=True, type=click.IntRange(1, 20),
              help="10 MB uploads and downloads; the table shows medians.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
def main(duration: float, connections: int, workers: int, threads: int, count: int,
         as_json: bool) -> None:
    """Measure the portal's pages and transfers next to a werkzeug hello-world."""
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk not found (apt-get install wrk)")
    stop_cleanly_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-portal-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        cluster = KVCluster(root / "kv")
        stack.callback(cluster.stop)
        cluster.start()
        cluster.leader()
        config = root / "cluster.toml"
        config.write_text(cluster.path.read_text() + "\n[[frontend]]\nname = \"bench\"\n"
                          "listen = \"127.0.0.1:1\"\n")
        env = {"RAFTCLOUD_CONFIG": str(config), "RAFTCLOUD_FRONTEND": "bench",
               "RAFTCLOUD_SECRET_FILE": str(cluster.root / "secret")}
        portal = gunicorn(stack, root, "portal", "portal:create_app()", workers, threads, env)
        hello = gunicorn(stack, root, "hello", "bench.hello:app", workers, threads, {})
        session = prepare_user(portal)
        click.echo("warming up", err=True)
        for url in (f"http://{hello}/", f"http://{portal}/login"):
            wrk(url, 1, connections)
        pages = {}
        for name, url, cookie in (("hello-world", f"http://{hello}/", ""),
                                  ("login page", f"http://{portal}/login", ""),
                                  ("drive listing (logged in)", f"http://{portal}/drive",
                                   session.sid)):
            pages[name] = wrk(url, duration, connections, cookie)
            click.echo(f"{name}: {pages[name]['rps']:,.0f} req/s", err=True)
        moved = transfers(portal, session, count)
    if as_json:
        click.echo(json.dumps({"pages": pages, "transfers": moved,
                               "settings": {"workers": workers, "threads": threads,
                                            "connections": connections,
                                            "duration": duration}}, indent=2))
    else:
        click.echo(f"gunicorn gthread, {workers} workers x {threads} threads, wrk -t2 "
                   f"-c{connections} -d{duration:.0f}s, {os.cpu_count()} cores, "
                   f"Python {sys.version.split()[0]}")
        click.echo(table(pages, moved))


if __name__ == "__main__":
    main()

"""The portal under load: wrk against its pages, with the login page as the reference.

    python -m bench.portal [--duration 10] [--connections 16] [--messages 500]
                           [--folder-sizes 10,1000,10000] [--transfers 3] [--json]
                           [--profile [--profile-seconds 10] [--artifacts artifacts]]

Starts a 3-replica store and two gunicorn servers with ``portal/gunicorn_conf.py``
and the same workers and threads: the portal, and :mod:`bench.hello` (the least
a werkzeug app can do).  It signs a user up through the portal's forms (10
folders and 10 files in the root), delivers ``--messages`` messages to the
user's inbox and fills a folder per ``--folder-sizes`` entry with that many
files, both through the data model (:mod:`bench.seed`).  Then, in one run:

* ``wrk`` (Debian's) against the hello-world, the login page (anonymous: no
  store access), and, signed in, the drive's root listing, the inbox listing
  (its first page), one message (the mail view), and the listing of each
  filled folder: requests/s, p50 and p99, each page's requests/s as a multiple
  of the login page's, and each folder's p99 as a multiple of the smallest's;
* a 10 MB upload and download through the portal, ``--transfers`` times each:
  median seconds and MB/s.

``--profile`` then drives each signed-in page with wrk once more and records, with
py-spy (:mod:`bench.profile`), one portal worker and the store's leader replica at
the same time: a flame graph and the raw stacks of each, and a summary of where the
time goes, into ``--artifacts`` (``portal-<page>-worker`` and ``portal-<page>-leader``).
Those runs are slowed by the profiler and kept out of the tables.

The table puts issue 16's aims beside the numbers (aims to compare with, not
checks: the exit status does not depend on them).  Every wrk run lasts
``--duration`` seconds (a request may take up to :data:`WRK_TIMEOUT`); the
seeding and the transfers are bounded in count, and the seeding by
``--seed-time-limit`` too.
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
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from shards.site import Site
from tests._procs import Proc, free_port, port_open, python_cmd, wait_for
from tests.cluster import KVCluster

from .common import stop_cleanly_on_sigterm
from .profile import INSTALL_HINT, ProfileError, Recorded, profile, py_spy_binary
from .seed import fill_folder, fill_inbox

ROOT = Path(__file__).resolve().parents[1]
CONF = "python:portal.gunicorn_conf"
PASSWORD = "bench-password-1"
MB = 1_000_000
EXIT_MARGIN = 3.0     # seconds wrk runs past the profiler's recordings
WRK_TIMEOUT = 30      # seconds a request may take before wrk counts it as timed out
HELLO, LOGIN = "hello-world", "login page (anonymous: no store access)"
DRIVE, INBOX, MAIL = ("drive listing (signed in)", "inbox listing (signed in)",
                      "mail view (signed in)")


@dataclass(frozen=True)
class Aim:
    """Issue 16's aim for one number: at least or at most ``bound``."""

    bound: float
    at_least: bool

    def text(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.bound:g}×"

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


# requests/s as a multiple of the login page's; p99 of the largest folder over the smallest's
PAGE_AIMS = {DRIVE: Aim(0.5, True), INBOX: Aim(0.5, True), MAIL: Aim(0.4, True)}
FOLDER_AIM = Aim(1.5, False)


PROFILED = {DRIVE: "drive", INBOX: "inbox", MAIL: "mail-view"}  # page -> artifacts' name
PROFILE_START = 2.0   # seconds of wrk before py-spy starts recording


def gunicorn(stack: ExitStack, root: Path, name: str, app: str, workers: int, threads: int,
             env: dict[str, str]) -> tuple[str, Proc]:
    addr = f"127.0.0.1:{free_port()}"
    proc = Proc(name, python_cmd("gunicorn", "-c", CONF, "--bind", addr, "--workers",
                                 str(workers), "--threads", str(threads), "--chdir", str(ROOT),
                                 app), root, env=env).start()
    stack.callback(proc.stop)
    wait_for(lambda: port_open(addr), 30, f"{name} to listen")
    return addr, proc


def children(master: Proc) -> list[int]:
    """A gunicorn master's workers (its children)."""
    assert master.popen is not None
    pid = master.popen.pid
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_pid(master: Proc) -> int:
    """The portal worker that used the most CPU so far: wrk's connections may all have
    landed on one worker, and an idle one would show nothing."""
    workers = children(master)
    if not workers:
        raise click.ClickException("the portal has no workers to profile")
    return max(workers, key=cpu_seconds)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUMeter:
    """CPU time per role (the portal's workers, the leader, the followers) over a run."""

    def __init__(self, portal: Proc, cluster: KVCluster) -> None:
        self.portal, self.cluster = portal, cluster

    def pids(self) -> dict[str, list[int]]:
        leader = self.cluster.leader()
        replicas = {name: proc.popen.pid for name, proc in self.cluster.procs.items()
                    if proc.popen is not None}
        return {"portal": children(self.portal), "leader": [replicas[leader]],
                "followers": [pid for name, pid in replicas.items() if name != leader]}

    def measure(self, run: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``run``'s result with each role's CPU milliseconds per request added."""
        pids = self.pids()
        before = {role: sum(map(cpu_seconds, group)) for role, group in pids.items()}
        result = run()
        requests = result["rps"] * result["seconds"]
        for role, group in pids.items():
            used = sum(map(cpu_seconds, group)) - before[role]
            result[f"cpu_{role}"] = 1000 * used / requests if requests else float("nan")
        return result


def profile_page(binary: str, url: str, cookie: str, connections: int, seconds: float,
                 pids: dict[str, int], artifacts: Path, page: str) -> list[Recorded]:
    """wrk on ``url`` while py-spy records each of ``pids`` (role -> pid) at once;
    wrk runs from before the recordings start until after they end."""
    name = PROFILED[page]
    wrk_time = PROFILE_START + 2 * seconds + EXIT_MARGIN
    load = threading.Thread(target=wrk, args=(url, wrk_time, connections, cookie), daemon=True)
    load.start()
    time.sleep(PROFILE_START)
    recorded: dict[str, Recorded] = {}
    failed: list[ProfileError] = []

    def one(role: str, pid: int) -> None:
        try:
            recorded[role] = profile(binary, pid, artifacts, f"portal-{name}-{role}", seconds,
                                     f"{role} ({pid}) under wrk on the {page} (py-spy, "
                                     f"{seconds:g} s)")
        except ProfileError as exc:  # e.g. not permitted to read another process's memory
            failed.append(exc)

    recorders = [threading.Thread(target=one, args=item) for item in pids.items()]
    for thread in recorders:
        thread.start()
    for thread in recorders:
        thread.join()
    load.join(wrk_time + WRK_TIMEOUT + 60)
    if failed:
        raise click.ClickException(str(failed[0]))
    return [recorded[role] for role in pids]


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


def prepare_user(addr: str) -> tuple[Session, str]:
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
    return session, name


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
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency",
            "--timeout", f"{WRK_TIMEOUT}s", url]
    if cookie:
        argv[1:1] = ["-H", f"Cookie: sid={cookie}"]
    result = parse_wrk(subprocess.run(argv, capture_output=True, text=True,
                                      timeout=duration + WRK_TIMEOUT + 60, check=True).stdout)
    return {**result, "seconds": duration}


def parse_wrk(out: str) -> dict[str, float]:
    """The numbers of wrk's report (``--latency``): requests/s, p50 and p99 in ms, and the
    requests that failed: answered other than 2xx/3xx, socket errors, timeouts."""
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(percent: str) -> float:
        value, suffix = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * unit[suffix]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # "Socket errors: connect 0, read 0, write 0, timeout 3", only when there were some
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"),
            "non_2xx": float(errors.group(1)) if errors else 0.0,
            "socket_errors": float(sum(map(int, socket.groups()[:3]))) if socket else 0.0,
            "timeouts": float(socket.group(4)) if socket else 0.0}


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


def _failed(r: dict[str, float]) -> str:
    return f"{r['non_2xx'] + r['socket_errors'] + r['timeouts']:,.0f}"


def page_table(pages: dict[str, dict[str, float]]) -> str:
    """Each page next to the login page, with issue 16's aim where it has one."""
    login = pages[LOGIN]["rps"]
    lines = ["| page (same gunicorn settings) | req/s | p50 ms | p99 ms | × login page | aim "
             "| failed | CPU ms/request: portal, leader, followers |",
             "|---|--:|--:|--:|--:|---|--:|---|"]
    for name, r in pages.items():
        ratio = r["rps"] / login if login else float("nan")
        aim = PAGE_AIMS.get(name)
        verdict = "reference" if name == LOGIN else (
            f"{aim.text()}: {'met' if aim.met(ratio) else '**missed**'}" if aim else "")
        cpu = (f"{r['cpu_portal']:.2f}, {r['cpu_leader']:.2f}, {r['cpu_followers']:.2f}"
               if "cpu_portal" in r else "")
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{ratio:.2f} | {verdict} | {_failed(r)} | {cpu} |")
    return "\n".join(lines)


def folder_table(folders: dict[int, dict[str, float]]) -> str:
    """A folder's listing by its size: p99 next to the smallest folder's."""
    smallest, largest = min(folders), max(folders)
    base = folders[smallest]["p99"]
    lines = [f"| drive listing (signed in), folder of | req/s | p50 ms | p99 ms "
             f"| p99 × {smallest:,} files | aim | failed |", "|---|--:|--:|--:|--:|---|--:|"]
    for size, r in sorted(folders.items()):
        ratio = r["p99"] / base if base else float("nan")
        verdict = (f"{FOLDER_AIM.text()}: {'met' if FOLDER_AIM.met(ratio) else '**missed**'}"
                   if size == largest and largest != smallest else "")
        lines.append(f"| {size:,} files | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{ratio:.2f} | {verdict} | {_failed(r)} |")
    return "\n".join(lines)


def transfer_table(moved: dict[str, float]) -> str:
    return "\n".join([
        "| 10 MB through one frontend | seconds (median) | MB/s |", "|---|--:|--:|",
        f"| upload (multipart POST) | {moved['upload_s']:.2f} | {moved['upload_mb_s']:.1f} |",
        f"| download (GET) | {moved['download_s']:.2f} | {moved['download_mb_s']:.1f} |"])


def sizes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        found = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter("a comma-separated list of file counts") from None
    if not found or not all(0 <= n <= 20_000 for n in found):
        raise click.BadParameter("one to a few counts, each from 0 to 20,000")
    return found


def seed(cluster: KVCluster, user: str, messages: int, folder_sizes: list[int],
         time_limit: float) -> tuple[list[str], dict[int, str]]:
    """The user's inbox (message ids) and filled folders (size -> folder id)."""
    deadline = time.monotonic() + time_limit
    address = f"{user}@{Site.of(cluster.cluster).domains[0]}"
    with cluster.client(timeout=30) as client:
        started = time.monotonic()
        ids = fill_inbox(client, user, address, messages, deadline)
        click.echo(f"delivered {messages} messages in {time.monotonic() - started:.1f} s",
                   err=True)
        folders = {}
        for size in folder_sizes:
            started = time.monotonic()
            folders[size] = fill_folder(client, user, f"{size} files", size, deadline)
            click.echo(f"filled a folder with {size:,} files in "
                       f"{time.monotonic() - started:.1f} s", err=True)
    return ids, folders


def check_page(session: Session, path: str) -> None:
    """The page answers 200 to the signed-in session: wrk would time redirects otherwise."""
    session.conn.close()
    status, body = session.request("GET", path)
    if status != 200:
        raise click.ClickException(f"GET {path} answered {status}: {body[:300]!r}")


@click.command()
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(1, 120),
              help="Seconds per wrk run.")
@click.option("--connections", default=16, show_default=True, type=click.IntRange(1, 256),
              help="wrk's open connections.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--messages", default=500, show_default=True, type=click.IntRange(1, 5000),
              help="Messages delivered to the inbox before the mail pages are measured.")
@click.option("--folder-sizes", default="10,1000,10000", show_default=True, callback=sizes,
              help="A folder is filled with each of these many files and its listing timed.")
@click.option("--seed-time-limit", default=300.0, show_default=True,
              type=click.FloatRange(1, 3600), help="Seconds the inbox and folders may take.")
@click.option("--transfers", "count", default=3, show_default=True, type=click.IntRange(1, 20),
              help="10 MB uploads and downloads; the table shows medians.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON instead.")
@click.option("--profile", "with_profile", is_flag=True,
              help="Then profile a portal worker and the leader under each signed-in page.")
@click.option("--profile-seconds", default=10.0, show_default=True,
              type=click.FloatRange(1, 120), help="Seconds of each recording (two per page).")
@click.option("--artifacts", default=Path("artifacts"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where --profile writes its files.")
def main(duration: float, connections: int, workers: int, threads: int, messages: int,
         folder_sizes: list[int], seed_time_limit: float, count: int, as_json: bool,
         with_profile: bool, profile_seconds: float, artifacts: Path) -> None:
    """Measure the portal's pages against its login page, and transfers."""
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk not found (apt-get install wrk)")
    py_spy = py_spy_binary() if with_profile else None
    if with_profile and py_spy is None:
        raise click.ClickException(INSTALL_HINT)
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
        portal, master = gunicorn(stack, root, "portal", "portal:create_app()", workers,
                                  threads, env)
        hello, _ = gunicorn(stack, root, "hello", "bench.hello:app", workers, threads, {})
        session, user = prepare_user(portal)
        message_ids, folder_ids = seed(cluster, user, messages, folder_sizes, seed_time_limit)
        signed_in = {DRIVE: "/drive", INBOX: "/mail",
                     MAIL: f"/mail/{message_ids[len(message_ids) // 2]}"}
        folder_paths = {size: f"/drive/d/{folder_id}" for size, folder_id in folder_ids.items()}
        for path in [*signed_in.values(), *folder_paths.values()]:
            check_page(session, path)
        click.echo("warming up", err=True)
        for url in (f"http://{hello}/", f"http://{portal}/login"):
            wrk(url, 1, connections)
        pages: dict[str, dict[str, float]] = {}
        targets = [(HELLO, f"http://{hello}/", ""), (LOGIN, f"http://{portal}/login", ""),
                   *((name, f"http://{portal}{path}", session.sid)
                     for name, path in signed_in.items())]
        meter = CPUMeter(master, cluster)
        for name, url, cookie in targets:
            pages[name] = (wrk(url, duration, connections, cookie) if name == HELLO else
                           meter.measure(partial(wrk, url, duration, connections, cookie)))
            click.echo(f"{name}: {pages[name]['rps']:,.0f} req/s", err=True)
        folders: dict[int, dict[str, float]] = {}
        for size, path in folder_paths.items():
            folders[size] = wrk(f"http://{portal}{path}", duration, connections, session.sid)
            click.echo(f"folder of {size:,} files: {folders[size]['rps']:,.0f} req/s, "
                       f"p99 {folders[size]['p99']:.1f} ms", err=True)
        moved = transfers(portal, session, count)
        recorded: list[Recorded] = []
        if py_spy is not None:
            for name, path in signed_in.items():
                leader = cluster.procs[cluster.leader()].popen
                assert leader is not None
                recorded += profile_page(py_spy, f"http://{portal}{path}", session.sid,
                                         connections, profile_seconds,
                                         {"worker": worker_pid(master), "leader": leader.pid},
                                         artifacts, name)
                click.echo(f"profiled the {name}", err=True)
    settings: dict[str, Any] = {"workers": workers, "threads": threads,
                                "connections": connections, "duration": duration,
                                "messages": messages, "folder_sizes": folder_sizes}
    if as_json:
        click.echo(json.dumps({"pages": pages, "folders": folders, "transfers": moved,
                               "settings": settings}, indent=2))
        return
    click.echo(f"gunicorn gthread, {workers} workers x {threads} threads, wrk -t2 "
               f"-c{connections} -d{duration:.0f}s, {os.cpu_count()} cores, "
               f"Python {sys.version.split()[0]}; the drive's root holds 10 folders, 10 files "
               f"and the {len(folder_sizes)} filled folders; the inbox {messages} messages "
               f"(its first page lists 25)\n")
    click.echo(page_table(pages))
    if folders:
        click.echo("\n" + folder_table(folders))
    click.echo("\n" + transfer_table(moved))
    for done in recorded:
        click.echo(f"\n{done.text}\nflame graph: {done.flamegraph}; raw stacks: {done.raw}")


if __name__ == "__main__":
    main()

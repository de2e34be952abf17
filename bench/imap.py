"""Our IMAP server beside Dovecot and pymap's in-memory backend: APPEND, SELECT, header FETCH.

    python -m bench.imap [--messages 10000] [--repeats 5] [--only dovecot,pymap-dict,ours]
                         [--seed 19] [--fill-time-limit 1800] [--json]

Starts each server on a loopback port (:mod:`bench.imap_servers`): Debian's
Dovecot with a Maildir, pymap's ``dict`` backend (the library alone, every
message in memory), and raftcloud-imapd (pymap on our store) on a cloud of its
own; a server that is not installed is left out with a message.  One
``imaplib`` client in this process then, for every server in the same run:

* APPENDs ``--messages`` messages (3 to 20 KB, generated from ``--seed``, the
  same bytes for every server) to a new folder, one APPEND at a time, in
  batches of :data:`FILL_BATCH` that take turns between the servers, so that
  whatever else the machine does falls on all alike: messages per second over
  the whole fill;
* ``--repeats`` times, each time on a new connection: times SELECT of the
  folder, then ``UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO
  SUBJECT DATE MESSAGE-ID)])`` (what a client lists a folder with), with the CPU
  time this process spent reading the answer and the CPU time of the server's
  processes meanwhile; the servers take turns, and the table shows medians.

The table gives each number as a multiple of Dovecot's, with issue 19's aim beside
(our header FETCH within 3x Dovecot's time: compared, not checked).  An answer
with the wrong number of messages is counted under "problems".  Every command
waits at most :data:`COMMAND_TIMEOUT` seconds, and a server whose fill takes
longer than ``--fill-time-limit`` seconds is stopped and reported, so the run ends
by itself.  The exit status is 1 if a server that was started failed.
"""

from __future__ import annotations

import imaplib
import json
import math
import random
import socket
import ssl
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, redirect_stdout, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import click

from .common import stop_cleanly_on_sigterm
from .imap_servers import (
    NO_DOVECOT,
    NO_IMAPD,
    NO_PYMAP,
    Server,
    ServerError,
    dovecot_binary,
    imapd_importable,
    pymap_installed,
    start_dovecot,
    start_ours,
    start_pymap_dict,
    tree_cpu_seconds,
)

SERVERS = ("dovecot", "pymap-dict", "ours")   # --only's names, in the table's order
FOLDER = "bench"
FETCH_ITEMS = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
FILL_BATCH = 500           # messages one server appends before the next takes its turn
COMMAND_TIMEOUT = 120.0    # seconds any one IMAP command may take (socket timeout)
MIN_SIZE, MAX_SIZE = 3_000, 20_000   # message bytes, drawn log-uniformly
AIM = 3.0                  # issue 19: our header FETCH within this multiple of Dovecot's time
FIRST_DATE = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
WORDS = ("raft", "leader", "quorum", "shard", "mail", "folder", "invoice", "meeting", "draft",
         "report", "budget", "release", "the", "of", "and", "to", "in", "for", "on", "with",
         "we", "please", "review", "attached", "tomorrow", "update", "cluster", "disk", "notes")
NAMES = ("Alice Martin", "Bob Chen", "Carol Diaz", "Dan Okafor", "Eve Novak", "Frank Ito",
         "Grace Silva", "Heidi Berg", "Ivan Petrov", "Judy Haddad")


def message(seed: int, i: int) -> tuple[bytes, datetime, bool]:
    """Message ``i`` of the set ``seed`` makes: its bytes (CRLF lines), date, and whether
    it is APPENDed as \\Seen.  The same arguments always give the same message."""
    rng = random.Random(f"{seed}:{i}")
    size = int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))
    date = FIRST_DATE + timedelta(minutes=7 * i + rng.randrange(7))
    sender, recipient = rng.sample(NAMES, 2)
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9))).capitalize()
    headers = [
        f"Return-Path: <{_address(sender)}>",
        f"Received: from mx{rng.randrange(1, 4)}.example.test "
        f"(mx.example.test [192.0.2.{i % 250 + 1}])"
        f"\r\n\tby mail.example.test with ESMTPS id {rng.getrandbits(48):012x}"
        f"\r\n\tfor <{_address(recipient)}>; {format_datetime(date)}",
        f"From: {sender} <{_address(sender)}>",
        f"To: {recipient} <{_address(recipient)}>",
        f"Subject: {subject} ({i})",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <{seed}.{i}.{rng.getrandbits(32):08x}@example.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
    ]
    head = ("\r\n".join(headers) + "\r\n\r\n").encode()
    lines, length = [], len(head)
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(6, 14))) + "\r\n"
        lines.append(line)
        length += len(line)
    return head + "".join(lines).encode(), date, rng.random() < 2 / 3


def _address(name: str) -> str:
    return f"{name.split()[0].lower()}@example.test"


def connect(server: Server) -> imaplib.IMAP4:
    """A logged-in connection; STARTTLS first where the server refuses plaintext login."""
    conn = imaplib.IMAP4(server.host, server.port, timeout=COMMAND_TIMEOUT)
    try:
        # imaplib writes an APPEND's literal and its closing CRLF in two sends: with Nagle
        # on, the CRLF waits for the server's delayed ACK (40 ms), which pymap's answers
        # do not hasten and Dovecot's do; that would measure imaplib, not the servers.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if "LOGINDISABLED" in conn.capabilities and "STARTTLS" in conn.capabilities:
            # Loopback to a server this bench started: its certificate is self-made.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn.starttls(context)
        conn.login(server.user, server.password)
    except BaseException:
        with suppress(OSError):
            conn.shutdown()
        raise
    return conn


def _ok(answer: tuple[str, list[Any]], command: str) -> list[Any]:
    typ, data = answer
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{command}: {typ} {data!r}"[:300])
    return data


@dataclass
class Fill:
    """One server's part of the fill."""

    appended: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def per_s(self) -> float:
        return self.appended / self.seconds if self.seconds else 0.0


def append_batch(conn: imaplib.IMAP4, batch: list[tuple[bytes, datetime, bool]],
                 fill: Fill, time_limit: float) -> None:
    """APPEND ``batch`` one message at a time, counting into ``fill``; stop, with
    ``fill.error`` set, once the fill's APPENDs have taken ``time_limit`` seconds."""
    start = time.perf_counter()
    try:
        for raw, date, seen in batch:
            _ok(conn.append(FOLDER, "(\\Seen)" if seen else None, date, raw), "APPEND")
            fill.appended += 1
            if fill.seconds + time.perf_counter() - start > time_limit:
                fill.error = (f"stopped after {fill.appended} APPEND(s): past "
                              f"--fill-time-limit ({time_limit:g} s)")
                break
    finally:
        fill.seconds += time.perf_counter() - start


def fill_all(servers: list[Server], messages: int, seed: int,
             time_limit: float) -> tuple[dict[str, Fill], int]:
    """APPEND the same ``messages`` to a new folder on every server, batch by batch, the
    servers taking turns (each goes first as often): each server's fill, and the bytes of
    the messages.  A server that fails or outlasts ``time_limit`` seconds of appending
    stops there, with its error recorded."""
    fills = {s.key: Fill() for s in servers}
    size = 0
    conns: dict[str, imaplib.IMAP4] = {}
    try:
        for server in servers:
            try:
                conns[server.key] = conn = connect(server)
                _ok(conn.create(FOLDER), "CREATE")
            except (imaplib.IMAP4.error, OSError) as exc:
                fills[server.key].error = f"login or CREATE failed: {exc}"
        for first in range(0, messages, FILL_BATCH):
            batch = [message(seed, i) for i in range(first, min(messages, first + FILL_BATCH))]
            size += sum(len(raw) for raw, _date, _seen in batch)
            turn = first // FILL_BATCH % len(servers)
            for server in servers[turn:] + servers[:turn]:
                fill = fills[server.key]
                if fill.error is not None:
                    continue
                try:
                    append_batch(conns[server.key], batch, fill, time_limit)
                except (imaplib.IMAP4.error, OSError) as exc:
                    fill.error = f"APPEND failed after {fill.appended} messages: {exc}"
            click.echo(f"filled {min(messages, first + FILL_BATCH)}/{messages}: " + ", ".join(
                f"{k} {f.per_s:,.0f} msg/s" if f.error is None else f"{k} failed"
                for k, f in fills.items()), err=True)
    finally:
        for conn in conns.values():
            with suppress(imaplib.IMAP4.error, OSError):
                conn.logout()
    return fills, size


def probe(server: Server, messages: int) -> dict[str, Any]:
    """On a new connection: SELECT the folder, then FETCH every message's headers, timed;
    and whether the answers held ``messages`` messages."""
    conn = connect(server)
    try:
        start = time.perf_counter()
        exists = _ok(conn.select(FOLDER), "SELECT")
        select_s = time.perf_counter() - start
        served, cpu = tree_cpu_seconds(server.pid), time.process_time()
        start = time.perf_counter()
        data = _ok(conn.uid("FETCH", "1:*", FETCH_ITEMS), "UID FETCH")
        fetch_s, fetch_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        server_cpu_s = tree_cpu_seconds(server.pid) - served
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            conn.logout()
    fetched = sum(1 for item in data
                  if isinstance(item, tuple) and b"message-id:" in item[1].lower())
    count = _exists(exists)
    return {"select_s": select_s, "fetch_s": fetch_s, "fetch_cpu_s": fetch_cpu_s,
            "server_cpu_s": server_cpu_s, "exists": count, "fetched": fetched,
            "wrong": int(count != messages) + int(fetched != messages)}


def _exists(select_data: list[Any]) -> int:
    """SELECT's EXISTS count as imaplib hands it over (the last one seen); -1 if none."""
    last = select_data[-1] if select_data else None
    return int(last) if isinstance(last, bytes) and last.isdigit() else -1


def probe_all(servers: list[Server], messages: int, repeats: int,
              failed: dict[str, str]) -> list[dict[str, Any]]:
    """``repeats`` rounds of :func:`probe`, the servers taking turns at going first; a
    server that fails is recorded in ``failed`` and left out of the later rounds."""
    runs: list[dict[str, Any]] = []
    for run in range(repeats if servers else 0):
        turn = run % len(servers)
        for server in servers[turn:] + servers[:turn]:
            if server.key in failed:
                continue
            try:
                result = probe(server, messages)
            except (imaplib.IMAP4.error, OSError) as exc:
                failed[server.key] = f"SELECT or FETCH failed: {exc}"
                continue
            runs.append({"run": run, "server": server.key, **result})
            click.echo(f"run {run + 1}/{repeats} {server.key:10} SELECT "
                       f"{result['select_s'] * 1000:,.1f} ms, FETCH {result['fetch_s']:.3f} s",
                       err=True)
    return runs


@dataclass(frozen=True)
class Summary:
    """One server's row: the fill's rate and the medians of the probes."""

    label: str
    append_per_s: float | None = None
    select_ms: float | None = None
    fetch_s: float | None = None
    fetch_cpu_s: float | None = None
    server_cpu_s: float | None = None
    problems: list[str] = field(default_factory=list)


def summarize(servers: list[Server], fills: dict[str, Fill], runs: list[dict[str, Any]],
              failed: dict[str, str]) -> dict[str, Summary]:
    out = {}
    for server in servers:
        fill, mine = fills.get(server.key), [r for r in runs if r["server"] == server.key]
        # a failed fill is in ``failed`` too: say it once
        problems = [p for p in dict.fromkeys((fill.error if fill else None,
                                              failed.get(server.key))) if p]
        wrong = sum(r["wrong"] for r in mine)
        if wrong:
            problems.append(f"{wrong} answer(s) with the wrong number of messages")
        select_s = _median(mine, "select_s")
        out[server.key] = Summary(
            server.label, fill.per_s if fill and fill.error is None else None,
            None if select_s is None else select_s * 1000, _median(mine, "fetch_s"),
            _median(mine, "fetch_cpu_s"), _median(mine, "server_cpu_s"), problems)
    return out


def _median(runs: list[dict[str, Any]], name: str) -> float | None:
    return statistics.median(r[name] for r in runs) if runs else None


def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _ratio(value: float | None, reference: float | None) -> str:
    return "–" if value is None or not reference else f"{value / reference:.2f}"


def table(summary: dict[str, Summary]) -> str:
    """The markdown table: one row per server, each number beside its multiple of Dovecot's."""
    ref = summary.get("dovecot", Summary(""))
    lines = ["| server | APPEND msg/s | × Dovecot | SELECT ms | × Dovecot | header FETCH s "
             "| × Dovecot | CPU in FETCH s: client, server | problems |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for s in summary.values():
        lines.append(" | ".join([
            f"| {s.label}", _number(s.append_per_s, ",.0f"), _ratio(s.append_per_s, ref.append_per_s),
            _number(s.select_ms, ",.1f"), _ratio(s.select_ms, ref.select_ms),
            _number(s.fetch_s, ".3f"), _ratio(s.fetch_s, ref.fetch_s),
            f"{_number(s.fetch_cpu_s, '.2f')}, {_number(s.server_cpu_s, '.2f')}",
            "; ".join(s.problems) or "none"]) + " |")
    return "\n".join(lines)


def aim_line(summary: dict[str, Summary], messages: int) -> str:
    ours, ref = summary.get("ours"), summary.get("dovecot")
    if ours is None or ref is None or ours.fetch_s is None or not ref.fetch_s:
        return f"Aim (issue 19): our header FETCH within {AIM:g}× Dovecot's time: not measured."
    ratio = ours.fetch_s / ref.fetch_s
    verdict = "met" if ratio <= AIM else "**missed**"
    size = "" if messages == 10_000 else f" (the aim is for 10,000 messages; this run had {messages:,})"
    return (f"Aim (issue 19): our header FETCH within {AIM:g}× Dovecot's time: "
            f"{ratio:.2f}×, {verdict}{size}.")


def parse_only(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown or not names:
        raise click.BadParameter(f"name servers among {', '.join(SERVERS)}; got {value!r}")
    return [s for s in SERVERS if s in names]


def start_servers(stack: ExitStack, root: Path, wanted: list[str],
                  skipped: dict[str, str], failed: dict[str, str]) -> list[Server]:
    """Start the wanted servers that are installed; record why the others are not there."""
    started = []
    for key in wanted:
        try:
            if key == "dovecot":
                binary = dovecot_binary()
                if binary is None:
                    skipped[key] = NO_DOVECOT
                    continue
                started.append(start_dovecot(stack, root / "dovecot", binary))
            elif key == "pymap-dict":
                if not pymap_installed():
                    skipped[key] = NO_PYMAP
                    continue
                started.append(start_pymap_dict(stack, root / "pymap"))
            elif not imapd_importable():
                skipped[key] = NO_IMAPD
            else:
                started.append(start_ours(stack, root / "ours"))
        except ServerError as exc:
            failed[key] = f"did not start: {exc}"
        if key in skipped or key in failed:
            click.echo(f"{key}: {skipped.get(key) or failed[key]}", err=True)
    return started


@click.command()
@click.option("--messages", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Messages APPENDed to the folder of each server.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 100),
              help="SELECT and header FETCH rounds; the table shows medians.")
@click.option("--only", default=",".join(SERVERS), show_default=True, callback=parse_only,
              help="The servers to measure, comma-separated.")
@click.option("--seed", default=19, show_default=True, type=int,
              help="Makes the messages: the same seed, the same bytes.")
@click.option("--fill-time-limit", default=1800.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds of APPENDing after which a server "
              "is stopped and reported.")
@click.option("--json", "as_json", is_flag=True, help="Print every number as JSON instead.")
def main(messages: int, repeats: int, only: list[str], seed: int, fill_time_limit: float,
         as_json: bool) -> None:
    """Time APPEND, SELECT and a header FETCH on Dovecot, pymap's dict backend and ours."""
    stop_cleanly_on_sigterm()
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    # stdout is for the table or the JSON alone: what the cloud's helpers print on a
    # failure (its processes' logs) goes to stderr with the progress lines.
    with (redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-imap-") as tmp,
          ExitStack() as stack):
        root = Path(tmp)
        root.chmod(0o711)  # Dovecot's mail user (not us, when we are root) reaches its Maildir
        servers = start_servers(stack, root, only, skipped, failed)
        if not servers:
            raise click.ClickException("no server to measure: "
                                       + "; ".join(f"{k}: {v}" for k, v in
                                                   {**skipped, **failed}.items()))
        fills, size = fill_all(servers, messages, seed, fill_time_limit)
        failed.update({k: f.error for k, f in fills.items() if f.error})
        runs = probe_all([s for s in servers if s.key not in failed], messages, repeats, failed)
    summary = summarize(servers, fills, runs, failed)
    if as_json:
        click.echo(json.dumps({
            "messages": messages, "bytes": size, "repeats": repeats, "seed": seed,
            "skipped": skipped, "failed": failed, "runs": runs,
            "fill": {k: {**asdict(f), "per_s": f.per_s} for k, f in fills.items()},
            "summary": {k: asdict(s) for k, s in summary.items()}}, indent=2))
    else:
        click.echo(table(summary))
        click.echo(f"\n{messages:,} messages ({size / 1e6:,.1f} MB, seed {seed}) APPENDed one at a "
                   f"time; SELECT and header FETCH: median of {repeats} run(s), each on a new "
                   "connection.  × Dovecot: for APPEND the rate over Dovecot's (below 1 is "
                   "slower), for SELECT and FETCH the time over Dovecot's (above 1 is slower).  "
                   "One imaplib client on the same machine; its CPU is part of every time.")
        click.echo(aim_line(summary, messages))
        for key, why in {**skipped, **failed}.items():
            if key not in summary:
                click.echo(f"{key}: {why}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

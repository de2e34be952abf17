"""smtpd in the test process, and the loopback "internet" mail tests talk to.

:func:`inprocess_smtpd` runs the real :class:`smtpd.server.SmtpServer` on fresh
ports.  Its outbound worker may connect to exchangers on private addresses
(``[smtpd] allow_private_exchangers``): the tests' remote servers listen on
127.0.0.25 and up.  :func:`local_dns` is a dnsmasq on loopback answering the
MX and A records a test names.
"""

from __future__ import annotations

import dataclasses
import email.utils
import secrets
import shutil
import smtplib
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dns.resolver
import pytest

from raftkv.cluster import ClusterConfig
from smtpd.server import SmtpServer
from smtpd.settings import SmtpdSettings

from ._procs import NO_DNS, Proc, free_port, wait_for

TEST_SMTPD_TABLE = {"allow_private_exchangers": True}


def with_tables(cluster: ClusterConfig, **tables: Mapping[str, Any]) -> ClusterConfig:
    """``cluster`` with extra keys in some of its tables (``mail={...}``, ``smtpd={...}``)."""
    merged = dict(cluster.tables)
    for name, values in tables.items():
        merged[name] = {**cluster.table(name), **values}
    return dataclasses.replace(cluster, tables=merged)


@contextmanager
def inprocess_smtpd(cluster: ClusterConfig, client: Any, *,
                    tables: Mapping[str, Mapping[str, Any]] | None = None,
                    **settings: Any) -> Iterator[SmtpdSettings]:
    """smtpd's inbound port (and whatever ``settings`` add) in this process, on fresh ports.

    :param tables: extra keys for the cluster file's tables, e.g.
        ``{"smtpd": {"line_timeout": 1}, "mail": {"mailbox_quota": 10_000}}``.
    :param settings: more keys of its ``[smtpd]`` table (``submission=...``).
    """
    tables = dict(tables or {})
    # NO_DNS never answers: a stranger's message waits out dns_timeout for SPF and for
    # DMARC (temperror both) before it is stored, so tests keep that wait short.
    tables["smtpd"] = {"name": f"smtpd-{secrets.token_hex(3)}", "resolver": NO_DNS,
                       "dns_timeout": 0.5, "inbound": f"127.0.0.1:{free_port()}", **settings,
                       **TEST_SMTPD_TABLE, **tables.get("smtpd", {})}
    server = SmtpServer(with_tables(cluster, **tables), client, hostname="mx.raftcloud.test")
    server.start()
    try:
        yield server.settings
    finally:
        server.stop()


@contextmanager
def loopback_submission(cluster: ClusterConfig, client: Any) -> Iterator[tuple[str, int]]:
    """smtpd's submission port in this process, AUTH allowed without TLS (loopback only)."""
    with inprocess_smtpd(cluster, client, submission=f"127.0.0.1:{free_port()}",
                         plaintext_auth_on_loopback=True) as config:
        host, port = config.submission.rsplit(":", 1)
        yield host, int(port)


@contextmanager
def local_dns(root: Path, records: list[str]) -> Iterator[str]:
    """dnsmasq on 127.0.0.1 answering ``records`` (dnsmasq options) for ``*.test``; its address."""
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is missing: `make test` installs dnsmasq-base")
    port = free_port()
    proc = Proc("dnsmasq", ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                            f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                            "--no-resolv", "--no-hosts", "--pid-file=", "--local=/test/",
                            *records], root).start()
    try:
        wait_for(lambda: proc.alive and _answers(port), 10, "dnsmasq")
        yield f"127.0.0.1:{port}"
    except BaseException:
        print(proc.log())
        raise
    finally:
        proc.stop()


def _answers(port: int) -> bool:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], port, 1.0
    try:
        resolver.resolve("nonexistent.test", "A")
    except dns.resolver.NXDOMAIN:
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return True


class ConnectionRecorder:
    """A TCP listener that notes every connection and answers 421: did anyone dial it?"""

    def __init__(self, host: str, port: int) -> None:
        self.peers: list[str] = []
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.sendall(b"421 4.3.2 not today\r\n")

    def __enter__(self) -> ConnectionRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def send_html(inbound: str, to: str, subject: str, html: str, plain: str | None = None) -> None:
    """An HTML message (with a plain alternative if ``plain``) over SMTP to ``inbound``."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "News <news@example.org>", to, subject
    message["Date"] = email.utils.formatdate(localtime=True)  # a zone: shown as <time>
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    if plain is None:
        message.set_content(html, subtype="html")
    else:
        message.set_content(plain)
        message.add_alternative(html, subtype="html")
    host, port = inbound.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.send_message(message)

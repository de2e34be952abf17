"""imapd in the test process on fresh loopback ports, and the client side of IMAP tests.

:func:`inprocess_imapd` runs the real :class:`imapd.server.ImapServer` (its own
event loop thread, real sockets, the real store) with a self-signed certificate
made for the test, as smtpd's fixtures do (``tests/_mail.py``).
"""

from __future__ import annotations

import imaplib
import re
import secrets
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.tls import ensure_certificate
from imapd.server import ImapServer
from imapd.settings import ImapdSettings
from raftkv.cluster import ClusterConfig
from shards.peers import tls_context

from ._mail import with_tables
from ._procs import free_port


@contextmanager
def inprocess_imapd(cluster: ClusterConfig, client: Any, certs: Path, *,
                    tables: Mapping[str, Mapping[str, Any]] | None = None,
                    **settings: Any) -> Iterator[ImapdSettings]:
    """imapd's two listeners in this process, on fresh ports.

    :param certs: a directory for the self-signed certificate (made once).
    :param tables: extra keys for the cluster file's tables (``{"auth": {...}}``).
    :param settings: more keys of its ``[imapd]`` table.
    """
    tables = dict(tables or {})
    tables["imapd"] = {"name": f"imapd-{secrets.token_hex(3)}",
                       "listen": f"127.0.0.1:{free_port()}",
                       "listen_tls": f"127.0.0.1:{free_port()}", **settings,
                       **tables.get("imapd", {})}
    cert, key = ensure_certificate(certs, "localhost")
    server = ImapServer(with_tables(cluster, **tables), client,
                        tls=tls_context(str(cert), str(key)))
    server.start()
    try:
        yield server.settings
    finally:
        server.stop()


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    return context


def hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def connect(settings: ImapdSettings, *, tls: bool = False, source: str = "",
            timeout: float = 30) -> imaplib.IMAP4:
    """An imaplib client on the plain port (or the TLS port), from ``source`` if given."""
    if tls:
        host, port = hostport(settings.listen_tls)
        connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=client_tls(),
                                                      timeout=timeout)
    else:
        host, port = hostport(settings.listen)
        connection = _SourcedIMAP4(host, port, timeout=timeout, source=source)
    return connection


class _SourcedIMAP4(imaplib.IMAP4):
    """imaplib's client, connecting from a chosen loopback address (limiter tests)."""

    def __init__(self, host: str, port: int, *, timeout: float, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        import socket
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0) if self._source else None)


def response_code(data: list[Any], name: str) -> list[str] | None:
    """The arguments of response code ``[NAME ...]`` in an imaplib answer, if present."""
    for item in data:
        text = item.decode() if isinstance(item, bytes) else ""
        match = re.search(rf"\[{name} ([^\]]*)\]", text)
        if match:
            return match.group(1).split()
    return None


def ok(answer: tuple[str, list[Any]]) -> list[Any]:
    """The data of an imaplib answer that must be OK."""
    assert answer[0] == "OK", answer
    return answer[1]


def sample_message(subject: str, body: str = "hello", *, message_id: str | None = None,
                   size: int = 0) -> bytes:
    """A small RFC 5322 message with its own Message-ID (padded to ``size`` bytes if given)."""
    message_id = message_id or f"<{secrets.token_hex(8)}@example.org>"
    raw = (f"From: bob@example.org\r\nTo: someone@raftcloud.test\r\nSubject: {subject}\r\n"
           f"Message-ID: {message_id}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
           f"{body}\r\n").encode()
    if size > len(raw):
        line = b"x" * 76 + b"\r\n"
        raw += line * ((size - len(raw)) // len(line))
    return raw

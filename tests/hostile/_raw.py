"""Bytes on a socket, exactly as a stranger sends them: no client library tidies them up."""

from __future__ import annotations

import socket
import time


def connect(addr: str, timeout: float = 10.0, source: str = "") -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def drain(sock: socket.socket, wait: float = 5.0, limit: int = 1 << 20) -> bytes:
    """What the peer sends before it closes or goes quiet for ``wait`` s (at most ``limit``)."""
    sock.settimeout(wait)
    received = b""
    try:
        while len(received) < limit and (chunk := sock.recv(65536)):
            received += chunk
    except (TimeoutError, ConnectionError):
        pass
    return received


def drain_until_closed(sock: socket.socket, wait: float = 5.0) -> tuple[bytes, bool]:
    """What the peer sends, and whether it then closed (rather than went quiet for ``wait`` s)."""
    sock.settimeout(wait)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if len(received) > 1 << 20:
                return received, False
    except TimeoutError:
        return received, False
    except ConnectionError:
        pass
    return received, True


def exchange(addr: str, payload: bytes, wait: float = 5.0, source: str = "") -> bytes:
    """Send ``payload`` (the peer may close half-way), then read what comes back."""
    with connect(addr, source=source) as sock:
        try:
            sock.sendall(payload)
        except ConnectionError:
            pass  # refused mid-send: the answer, if any, is still in our buffer
        return drain(sock, wait)


def http(addr: str, head: str | bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """One raw HTTP/1.1 exchange with ``Connection: close``."""
    if isinstance(head, str):
        head = head.encode("latin-1")
    return exchange(addr, head + body, wait)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 when there is none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else 0


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def stream_until_closed(sock: socket.socket, limit: int, seconds: float = 20.0) -> tuple[int, bool]:
    """Send junk until the peer closes: (bytes sent, whether it closed), bounded in size and time."""
    sent, block = 0, b"A" * 65536
    deadline = time.monotonic() + seconds
    sock.settimeout(5)
    try:
        while sent < limit and time.monotonic() < deadline:
            sock.sendall(block)
            sent += len(block)
    except ConnectionError:
        return sent, True
    except TimeoutError:
        pass  # the peer stopped reading without closing: it is stuck buffering
    return sent, False

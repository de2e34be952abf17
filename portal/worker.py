"""A gunicorn gthread worker that reads each request head in its event loop, with a deadline.

Why this worker.  Stock gthread hands a connection to a thread as soon as a
byte arrives, and the thread then blocks until the whole head is in: 40 sockets
that send ``GET / HTTP/1.1\\r\\nX-a: b`` and stop hold every thread of a
frontend, and its ``/healthz`` stops answering.  gunicorn's documentation
recommends a buffering proxy or async workers (gevent, eventlet).  A proxy is
one more daemon to deploy on every host; gevent would monkey-patch the
threaded, pipelined store client every request uses.  So this subclass keeps
gthread and changes one thing: the head is read in the worker's selector loop,
non-blocking, against a total deadline (``[web] head_timeout``), and only a
connection whose head is complete goes to a thread.  Bodies still stream from
the socket into the app (uploads are never buffered whole), each read bounded
by ``[web] io_timeout``, so a dripped body or an unread answer frees its thread
once the peer goes quiet for that long.

Also bounded: heads larger than :data:`MAX_HEAD` (431), the connections one
worker holds (``[web] max_connections``; at the cap the oldest connection
still waiting for a head, else the oldest idle keep-alive one, is closed to
make room, and only when every connection is busy is a newcomer refused with
503), and the lingering close after a ``Connection: close`` answer: stock
gthread waits for the peer's FIN on its event loop (up to 2 s, for one peer at
a time, while nobody else is served); this worker waits for it in the loop's
selector, blocking nothing.

TLS and cleartext HTTP/2 need bytes we cannot read raw; with either configured
the worker behaves like stock gthread (our frontends serve plain HTTP/1.1
behind the balancer or a TLS proxy).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from raftkv.cluster import CONFIG_ENV, load_cluster

from .listener import ListenerLimits, listener_limits

# The largest request head we wait for.  Browsers send a few KiB (cookies
# included); gunicorn's own limits would let one connection buffer ~800 KiB.
MAX_HEAD = 64 * 1024
# After a "Connection: close" answer: how long, and how many bytes, we read for
# the peer's FIN before closing anyway (gunicorn's util.close_graceful's bounds).
LINGER_TIME = 2.0
LINGER_BYTES = 64 * 1024
SEND_SLICE = 64 * 1024  # each slice of an answer gets io_timeout to leave (_PacedSocket)


def _answer(status: str, text: str) -> bytes:
    body = text.encode() + b"\n"
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _answer("408 Request Timeout", "The request was not received in time.")
HEAD_TOO_LARGE = _answer("431 Request Header Fields Too Large", "The request head is too large.")
BUSY = _answer("503 Service Unavailable", "Too many connections; please try again.")


def limits_from_environment() -> ListenerLimits:
    """The ``[web]`` table's limits of the cluster file gunicorn was started with (defaults
    when there is none, e.g. a benchmark's hello-world app)."""
    path = os.environ.get(CONFIG_ENV)
    return listener_limits(load_cluster(path).table("web")) if path else ListenerLimits()


class _PacedSocket:
    """A connection's socket whose ``sendall`` gives every :data:`SEND_SLICE` its own timeout.

    Python's ``sendall`` applies the socket timeout to the whole call, so one
    1 MiB piece of a download would have to go out within ``io_timeout``:
    slow but steady readers would be cut off.  Sent in slices, the timeout
    bounds a stall, not a transfer.  Everything else goes to the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), SEND_SLICE):
            self._sock.sendall(view[start:start + SEND_SLICE])


class _Conn(TConn):
    """A connection and the head bytes read for it by the event loop."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any,
                 io_timeout: float) -> None:
        super().__init__(cfg, _PacedSocket(sock), client, server)
        self.io_timeout = io_timeout
        self.head = bytearray()
        self.head_deadline = 0.0
        self.head_ready = False   # the head is in self.head: the next enqueue goes to a thread
        self.linger_deadline = 0.0
        self.drained = 0

    def init(self) -> None:
        # Runs in the thread, before the parser reads: hand it the head we read.
        super().init()
        if self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head = bytearray()
        self.sock.settimeout(self.io_timeout)


def _send_nowait(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass  # best effort: the peer is closed, or not reading


class HeadReadingWorker(ThreadWorker):
    """gthread, with request heads read by the event loop under a deadline (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits_from_environment()
        # Accepting stays on: the cap is ours (evict or refuse), not a full backlog.
        self.worker_connections = self.limits.max_connections + 1
        self.reads_heads = not self.cfg.is_ssl and "h2" not in (self.cfg.http_protocols or ())
        # Connections waiting for their head, oldest (= earliest deadline) first,
        # and answered ones waiting for the peer's FIN.
        self.heads: OrderedDict[_Conn, None] = OrderedDict()
        self.lingering: OrderedDict[_Conn, None] = OrderedDict()

    def init_process(self) -> None:
        if not self.reads_heads:
            self.log.warning("TLS or HTTP/2 configured: request heads are read by threads")
        super().init_process()

    # -- accepting, with the connection cap -------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        if self.nr_conns >= self.limits.max_connections and not self._evict_one():
            _send_nowait(sock, BUSY)
            util.close(sock)
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self.cfg, sock, addr, listener.getsockname(),
                               self.limits.io_timeout))

    def _evict_one(self) -> bool:
        """Close a lingering connection, else the oldest that waits for a head, else the
        oldest idle one."""
        if self.lingering:
            self._close_lingering(next(iter(self.lingering)))
            return True
        if self.heads:
            self._drop(next(iter(self.heads)), BUSY)
            return True
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            self._unregister(conn)
            self.nr_conns -= 1
            conn.close()
            return True
        return False

    # -- reading heads in the event loop ----------------------------------------------------

    def enqueue_req(self, conn: _Conn) -> None:
        """Every path to a thread passes here: only a complete head goes on."""
        if not self.reads_heads or conn.head_ready:
            conn.head_ready = False
            conn.data_ready = True  # gthread's own wait for a first byte is not needed
            super().enqueue_req(conn)
            return
        if conn.parser is not None:  # pipelined bytes read ahead by the previous request
            conn.head += conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        conn.head_deadline = time.monotonic() + self.limits.head_timeout
        self.heads[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))
        if conn.head:
            self._check_head(conn)

    def _on_head_bytes(self, conn: _Conn, _sock: object) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its head
            self._drop(conn, b"")
            return
        conn.head += data
        self._check_head(conn)

    def _check_head(self, conn: _Conn) -> None:
        # Empty lines before a request line are allowed (RFC 9112 section 2.2),
        # so they must not count as the end of the head.
        start = len(conn.head) - len(conn.head.lstrip(b"\r\n"))
        if conn.head.find(b"\r\n\r\n", start) >= 0:
            del self.heads[conn]
            self._unregister(conn)
            conn.head_ready = True
            self.enqueue_req(conn)
        elif len(conn.head) > MAX_HEAD:
            self._drop(conn, HEAD_TOO_LARGE)

    def _drop(self, conn: _Conn, answer: bytes) -> None:
        self.heads.pop(conn, None)
        self._unregister(conn)
        if answer:
            _send_nowait(conn.sock, answer)
        self.nr_conns -= 1
        conn.close()

    def _unregister(self, conn: _Conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # not registered (any more)

    def murder_pending(self) -> None:
        """Runs every turn of the event loop: close heads and lingering past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads:
            conn = next(iter(self.heads))
            if self.alive and conn.head_deadline > now:
                break
            self._drop(conn, REQUEST_TIMEOUT)
        while self.lingering:
            conn = next(iter(self.lingering))
            if self.alive and conn.linger_deadline > now:
                break
            self._close_lingering(conn)

    # -- closing without blocking the loop ---------------------------------------------------

    def finish_request(self, conn: _Conn, fs: Any) -> None:
        try:
            keep = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - gthread closes such a connection too
            keep = False
        if keep:  # kept alive (or deferred): gthread's own handling
            super().finish_request(conn, fs)
            return
        # Half-close, then read until the peer's FIN (RFC 9112 section 9.6), so
        # unread bytes do not turn our close into a reset that truncates the answer.
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        conn.linger_deadline = time.monotonic() + LINGER_TIME
        self.lingering[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_bytes, conn))

    def _on_linger_bytes(self, conn: _Conn, _sock: object) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_BYTES:
            self._close_lingering(conn)

    def _close_lingering(self, conn: _Conn) -> None:
        del self.lingering[conn]
        self._unregister(conn)
        self.nr_conns -= 1
        conn.close()

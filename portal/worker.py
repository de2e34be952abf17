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
by ``[web] io_timeout``; and since a body dripped a byte at a time (or an answer
read as slowly) would never let one read wait that long, each request must
also move its bytes at an average of ``[web] min_rate`` bytes/s once a grace
of ``head_timeout`` has passed (:class:`_MeteredSocket`), else it is cut.

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
import fcntl
import functools
import os
import selectors
import socket
import struct
import termios
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from raftkv.boundedhttp import BUSY, REQUEST_TIMEOUT, ListenerLimits, plain_answer, send_nowait
from raftkv.cluster import CONFIG_ENV, load_cluster

from .config import web_listener_limits

# The largest request head we wait for.  Browsers send a few KiB (cookies
# included); gunicorn's own limits would let one connection buffer ~800 KiB.
MAX_HEAD = 64 * 1024
# After a "Connection: close" answer: how long, and how many bytes, we read for
# the peer's FIN before closing anyway (gunicorn's util.close_graceful's bounds).
LINGER_TIME = 2.0
LINGER_BYTES = 64 * 1024
SEND_PIECE = 64 * 1024  # how much of a file answer is read at a time (_MeteredSocket)


HEAD_TOO_LARGE = plain_answer("431 Request Header Fields Too Large",
                              "The request head is too large.")


@functools.cache
def limits_from_environment() -> ListenerLimits:
    """The ``[web]`` table's limits of the cluster file gunicorn was started with (defaults
    when there is none, e.g. a benchmark's hello-world app)."""
    path = os.environ.get(CONFIG_ENV)
    return web_listener_limits(load_cluster(path).table("web")) if path else ListenerLimits()


class _MeteredSocket:
    """A connection's socket that holds each request to a minimum average transfer rate.

    Only the time a thread spends waiting in ``recv``/``send`` counts (the
    app's own work does not), against a budget of ``grace + moved / min_rate``
    seconds, where ``moved`` is the request's bytes received plus answer bytes
    the peer has acknowledged (bytes still in our send buffer do not count, or
    4 MiB of kernel buffer would buy a slow reader a long wait).  Each call
    waits at most the rest of that budget (and at most the socket's timeout,
    ``io_timeout``); once spent, this and every later call of the request
    raise ``TimeoutError`` and the worker closes the connection.  Answers go out
    with ``send`` in a loop, so a stall, not a whole piece, is what is timed.
    Everything else goes to the socket.
    """

    def __init__(self, sock: socket.socket, min_rate: float, grace: float) -> None:
        self._sock = sock
        self._min_rate = min_rate
        self._grace = grace
        self.start_request()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def start_request(self) -> None:
        """Each request gets its own budget: an early fast one buys no slack for later."""
        self._waited = 0.0
        self._received = 0
        self._sent = 0
        self._cut = False

    def _acknowledged(self) -> int:
        try:  # bytes sent but not yet acknowledged by the peer (Linux, BSD)
            unacked = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ,
                                                     b"\0\0\0\0"))[0]
        except (OSError, AttributeError):
            unacked = 0
        return max(self._sent - unacked, 0)

    def _timed(self, call: Any, *args: Any) -> Any:
        prior = self._sock.gettimeout()  # io_timeout in a request's thread
        try:
            while True:
                acked = self._acknowledged() if self._sent else 0
                budget = self._grace + (self._received + acked) / self._min_rate - self._waited
                if self._cut or budget <= 0:
                    self._cut_off()
                    raise TimeoutError("the peer moves its bytes slower than [web] min_rate")
                bound_by_budget = prior is None or budget < prior
                self._sock.settimeout(budget if bound_by_budget else prior)
                started = time.monotonic()
                try:
                    return call(*args)
                except TimeoutError:
                    # A send waits until a third of the send buffer (up to 4 MiB) is
                    # free, which a steady reader may take longer than io_timeout to
                    # make: a wait is a stall only if the peer acknowledged nothing.
                    progressed = self._sent and self._acknowledged() > acked
                    if not bound_by_budget and not progressed:
                        raise
                finally:
                    self._waited += time.monotonic() - started
        finally:
            self._sock.settimeout(prior)

    def _cut_off(self) -> None:
        if self._cut:
            return
        self._cut = True
        if not self._sent:  # no answer begun: say why (best effort)
            send_nowait(self._sock, REQUEST_TIMEOUT)
            return
        # Mid-answer: the close that follows drops what our buffer still holds
        # (a reset), rather than feeding it to this peer at its pace.
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def recv(self, size: int, *flags: int) -> bytes:
        data = self._timed(self._sock.recv, size, *flags)
        self._received += len(data)
        return data

    def send(self, data: bytes | memoryview, *flags: int) -> int:
        sent = self._timed(self._sock.send, data, *flags)
        self._sent += sent
        return sent

    def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view):]

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """gunicorn's file answers: read and sent through :meth:`sendall`, metered too."""
        file.seek(offset)
        total = 0
        while count is None or total < count:
            piece = file.read(SEND_PIECE if count is None else min(SEND_PIECE, count - total))
            if not piece:
                break
            self.sendall(piece)
            total += len(piece)
        return total


class _Conn(TConn):
    """A connection and the head bytes read for it by the event loop."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any,
                 limits: ListenerLimits) -> None:
        super().__init__(cfg, _MeteredSocket(sock, limits.min_rate, limits.head_timeout),
                         client, server)
        self.io_timeout = limits.io_timeout
        self.raw = sock  # for the event loop's non-blocking reads and writes: not metered
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


def _recv_nowait(sock: socket.socket) -> bytes | None:
    """What a readable socket holds (b"" once the peer is gone); None when it was a false alarm."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


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
            send_nowait(sock, BUSY)
            util.close(sock)
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self.cfg, sock, addr, listener.getsockname(), self.limits))

    def _evict_one(self) -> bool:
        """Close the oldest connection that waits for a head, else the oldest idle one,
        else a lingering one.

        Lingering ones go last: their answer is sent but maybe not yet read, and
        closing a socket with the peer's bytes unread sends a reset that makes the
        peer drop that answer (a quick client answered during a burst of slow heads
        got "connection reset" instead of its page)."""
        if self.heads:
            self._drop(next(iter(self.heads)), BUSY)
            return True
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            self._unregister(conn)
            self.nr_conns -= 1
            conn.close()
            return True
        if self.lingering:
            self._close_lingering(next(iter(self.lingering)))
            return True
        return False

    def handle(self, conn: _Conn) -> Any:
        conn.sock.start_request()  # runs in the thread, once per request
        return super().handle(conn)

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
        data = _recv_nowait(conn.raw)
        if data is None:
            return
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
            send_nowait(conn.raw, answer)
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
        data = _recv_nowait(conn.raw)
        if data is None:
            return
        conn.drained += len(data)
        if not data or conn.drained > LINGER_BYTES:
            self._close_lingering(conn)

    def _close_lingering(self, conn: _Conn) -> None:
        del self.lingering[conn]
        self._unregister(conn)
        self.nr_conns -= 1
        conn.close()

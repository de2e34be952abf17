"""An ``http.server`` that slow or numerous clients cannot take offline.

For the cluster's small HTTP listeners (the balancer, the launcher's control
API); it lives here, in the lowest layer, because both use it.  A plain
``ThreadingHTTPServer`` gives each connection a thread that waits as long as
the client likes: 40 sockets sending half a request head hold 40 threads
forever, and nothing limits how many.  This server keeps a thread per
connection (http.server parses the bytes) and adds three bounds:

- a **head deadline**: from the moment a connection waits for a request (just
  accepted, or idle between keep-alive requests) its whole head must arrive
  within ``head_timeout`` seconds, however it trickles in; a watchdog thread
  answers 408 and shuts the socket down, which wakes the blocked thread;
- a **per-read timeout** (``io_timeout``) on every read and write after that;
- a **connection cap** (``max_connections``): at the cap the connection that
  has waited longest for its head is closed (503) to make room, so a flood of
  slow sockets cannot starve a quick client; only when every held connection
  is busy with a request is the newcomer refused (503).

The same bounds, with ``min_rate``, hold the frontends' gunicorn worker
(``portal/worker.py``).  Their values come from the cluster file (``[web]``,
``[balancer]``) and are read and checked by :func:`listener_limits` only.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .background import BackgroundLoop
from .errors import ConfigError

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.2  # seconds between the watchdog's looks: how late a deadline may be enforced


@dataclass(frozen=True)
class ListenerLimits:
    """How long and how many, for one HTTP listener; the defaults are a frontend's."""

    head_timeout: float = 10.0   # seconds from a connection's first wait to its whole request head
    io_timeout: float = 30.0     # seconds one read of a body (or one write of an answer) may wait
    max_connections: int = 1000  # connections held at once; beyond, the oldest waiting one goes
    # bytes/s a request's body and answer must average once head_timeout has
    # passed (time spent waiting on the peer only), so a drip cannot hold a thread
    min_rate: float = 4096.0


LISTENER_KEYS = frozenset(f.name for f in dataclasses.fields(ListenerLimits))


def listener_limits(table: Mapping[str, Any], table_name: str, *,
                    defaults: ListenerLimits = ListenerLimits(),
                    keys: frozenset[str] = LISTENER_KEYS) -> ListenerLimits:
    """The ``keys`` of a cluster-file table that set a listener's limits (others are ignored).

    :param table_name: the table's name, for the error messages.
    :raises ConfigError: a value of the wrong type or out of range.
    """
    values: dict[str, Any] = {}
    for key in keys & table.keys():
        value = table[key]
        wanted = int if key == "max_connections" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"{table_name}.{key} must be a number, got {value!r}")
        values[key] = value if key == "max_connections" else float(value)
    limits = dataclasses.replace(defaults, **values)
    for key in ("head_timeout", "io_timeout"):
        if not 0 < getattr(limits, key) <= 3600:
            raise ConfigError(f"{table_name}.{key} must be in (0, 3600] seconds")
    if not 0 < limits.min_rate <= 1e9:
        raise ConfigError(f"{table_name}.min_rate must be in (0, 1e9] bytes per second")
    if limits.max_connections < 2:
        raise ConfigError(f"{table_name}.max_connections must be at least 2")
    return limits


def plain_answer(status: str, text: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer with a short text body."""
    body = text.encode() + b"\n"
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


REQUEST_TIMEOUT = plain_answer("408 Request Timeout", "The request was not received in time.")
BUSY = plain_answer("503 Service Unavailable", "Too many connections; please try again.")


def send_nowait(sock: socket.socket, data: bytes) -> None:
    """Send what the socket takes without blocking; best effort (the peer may be gone or stuck)."""
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except (OSError, ValueError):  # ValueError: a TLS socket takes no flags; it is just cut
        pass


def _abort(sock: socket.socket, answer: bytes) -> None:
    """Answer without blocking (best effort) and shut the socket down, waking its reader."""
    send_nowait(sock, answer)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` with a head deadline, a per-read timeout and a connection cap.

    Its handler must derive from :class:`BoundedRequestHandler`.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BoundedRequestHandler], *,
                 head_timeout: float = 10.0, io_timeout: float = 30.0,
                 max_connections: int = 256) -> None:
        if head_timeout <= 0 or io_timeout <= 0 or max_connections < 1:
            raise ValueError("head_timeout, io_timeout and max_connections must be positive")
        self.head_timeout = head_timeout
        self.io_timeout = io_timeout
        self.max_connections = max_connections
        self._lock = threading.Lock()
        # Every connection held: its head deadline while it waits for one, None while busy.
        self._held: dict[socket.socket, float | None] = {}
        self._watchdog = _HeadWatchdog(self)  # before binding: a failed bind calls server_close
        super().__init__(addr, handler)
        self._watchdog.start()

    def held(self) -> int:
        """How many connections the server holds now."""
        with self._lock:
            return len(self._held)

    # -- socketserver hooks --------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._held) >= self.max_connections and not self._evict_locked():
                _abort(request, BUSY)
                self.shutdown_request(request)
                return
            self._held[request] = time.monotonic() + self.head_timeout
        super().process_request(request, client_address)

    def close_request(self, request: Any) -> None:
        with self._lock:
            self._held.pop(request, None)
        super().close_request(request)

    def server_close(self) -> None:
        self._watchdog.stop()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A socket we shut down (deadline, eviction) or a peer gone: not worth a traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    # -- the handler's reports -----------------------------------------------------------

    def waiting_for_head(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._held:
                self._held[sock] = time.monotonic() + self.head_timeout

    def head_received(self, sock: socket.socket) -> bool:
        """Mark the connection busy; False when it was already timed out or evicted."""
        with self._lock:
            if sock not in self._held:
                return False
            self._held[sock] = None
            return True

    # -- enforcing -----------------------------------------------------------------------

    def _evict_locked(self) -> bool:
        waiting = [(deadline, sock) for sock, deadline in self._held.items() if deadline]
        if not waiting:
            return False
        _, oldest = min(waiting, key=lambda item: item[0])
        del self._held[oldest]
        _abort(oldest, BUSY)
        return True

    def expire_late_heads(self) -> None:
        """Answer 408 to every connection past its head deadline, and shut it down."""
        now = time.monotonic()
        with self._lock:
            late = [s for s, deadline in self._held.items() if deadline and deadline < now]
            for sock in late:
                del self._held[sock]  # no longer counted: its thread is about to end
        for sock in late:
            _abort(sock, REQUEST_TIMEOUT)


class _HeadWatchdog(BackgroundLoop):
    """Enforces one server's head deadlines every :data:`WATCH_INTERVAL`, until it closes."""

    def __init__(self, server: BoundedHTTPServer) -> None:
        super().__init__("http-head-watchdog", WATCH_INTERVAL, first_delay=WATCH_INTERVAL)
        self._server = server

    def step(self) -> None:
        self._server.expire_late_heads()


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """Reports to :class:`BoundedHTTPServer` when it waits for a head and when it has one."""

    server: BoundedHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.io_timeout)

    def handle_one_request(self) -> None:
        self.server.waiting_for_head(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not self.server.head_received(self.connection):
            self.close_connection = True  # cut off mid-head: what we parsed is not the request
            return False
        return True

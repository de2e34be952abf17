"""One pipelined, authenticated connection from a client to one replica.

Any number of threads may send on it at once: each request gets a connection-
local id, and a reader thread hands each answer to the waiting caller.  When the
connection breaks, every waiting caller learns it at once.  Frames are sealed
when the handshake says so (always, unless both ends are on loopback).
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from concurrent.futures import Future
from typing import Any

from . import protocol
from .cluster import split_addr
from .errors import AuthenticationFailed, ProtocolError, UnavailableError

CONNECT_TIMEOUT = 2.0
ATTEMPT_TIMEOUT = 3.0      # a client's one try at one replica; then the next (same request id)
# A send that makes no progress for this long fails the connection (a paused or
# wedged replica), instead of blocking its sender forever.
SEND_STALL_TIMEOUT = 10.0


class Connection:
    """A socket to one replica's client port, shared by threads."""

    def __init__(self, addr: str, secret: bytes) -> None:
        self.addr = addr
        host, port = split_addr(addr)
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise UnavailableError(f"cannot connect to {addr}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            seconds = int(SEND_STALL_TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", seconds, int((SEND_STALL_TIMEOUT - seconds) * 1e6)))
            self._channel = protocol.client_handshake(sock, secret)
        except AuthenticationFailed:
            # Not transient: no retry, at this replica or another, will change the secret.
            sock.close()
            raise
        except (OSError, ProtocolError) as exc:
            sock.close()
            raise UnavailableError(f"cannot connect to {addr}: {exc}") from exc
        except BaseException:
            sock.close()  # whatever broke the handshake, the socket is not left to the GC
            raise
        sock.settimeout(None)
        self._sock = sock
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name=f"raftkv-{addr}", daemon=True)
        self._reader.start()

    def send(self, request: dict[str, Any], payload: bytes | None = None) -> Future[dict[str, Any]]:
        """Send a request; the future resolves to the whole answer frame.

        :param payload: large bytes sent where ``request`` holds
            :data:`raftkv.protocol.PAYLOAD`, without being copied.
        """
        future: Future[dict[str, Any]] = Future()
        frame_id = next(self._ids)
        request = {**request, "id": frame_id}
        frame = (protocol.encode(request),) if payload is None else \
            protocol.encode_parts(request, payload)
        with self._lock:
            if self.closed:
                raise UnavailableError(f"connection to {self.addr} is closed")
            self._waiting[frame_id] = future
        try:
            with self._send_lock:
                # Sealed under the lock: a frame's nonce is its place in the stream.
                for part in self._channel.seal(frame):
                    self._sock.sendall(part)
        except OSError as exc:
            self._fail_all(exc)
        return future

    def forget(self, future: Future[dict[str, Any]]) -> None:
        """Stop waiting for a request that timed out (its answer will be dropped)."""
        with self._lock:
            for frame_id, waiting in list(self._waiting.items()):
                if waiting is future:
                    del self._waiting[frame_id]

    def _read_loop(self) -> None:
        try:
            while True:
                answer = protocol.read_frame(self._sock, self._channel)
                frame_id = answer.get("id")
                with self._lock:
                    future = None if frame_id is None else self._waiting.pop(frame_id, None)
                if future is not None:
                    future.set_result(answer)
                elif frame_id is None and "error" in answer:
                    raise ProtocolError(str(answer.get("message")))
        except Exception as exc:  # noqa: BLE001 - whatever broke the stream ends the connection
            self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self.closed = True
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UnavailableError(f"connection to {self.addr} lost: {exc}"))
        try:
            self._sock.close()
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._fail_all(ConnectionError("closed"))

"""The Raft port: strangers' connections bounded in number, time and frame size
(docs/engine-fixes.md).
"""

from __future__ import annotations

import logging
import select
import struct
import time
import zlib
from typing import Any

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport

from .pinned import (
    ENTRY_CAP,
    LISTEN_BACKLOG,
    MAX_RAFT_FRAME,
    MAX_RAFT_UNAUTHENTICATED,
    RAFT_AUTH_DEADLINE,
    _Connection,
)

# Messages stored, not compressed: above any batch of entries (appendEntriesBatchSizeBytes
# is 4 x ENTRY_CAP), below a snapshot's piece (256 KiB).
STORE_ABOVE = 4 * ENTRY_CAP + 64 * 1024

log = logging.getLogger(__name__)

class _GuardedTransport(pysyncobj.syncobj.TCPTransport):
    """Strangers' connections to the Raft port cost little and do not last.

    pysyncobj keeps every accepted connection until it authenticates, with no
    bound on how many, and its inactivity timeout runs only when a socket has
    an event: a silent connection stayed for ever.  Here a connection has
    :data:`RAFT_AUTH_DEADLINE` to authenticate (the tick closes late ones), and
    at most :data:`MAX_RAFT_UNAUTHENTICATED` wait at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Unauthenticated connections, oldest first -> when they were accepted.
        self._accepted_at: dict[Any, float] = {}
        self._next_report = 0.0
        super().__init__(*args, **kwargs)

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        waiting = [c for c in self._accepted_at if c in self._unknownConnections]
        if len(waiting) >= MAX_RAFT_UNAUTHENTICATED:
            now = time.monotonic()
            if now >= self._next_report:  # a flood must not flood the log too
                self._next_report = now + 10.0
                log.warning("the Raft port holds %d connections not yet authenticated: "
                            "closing the oldest for each new one", len(waiting))
            waiting[0].disconnect()
        self._accepted_at[conn] = time.monotonic()
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        if not self._accepted_at:
            return
        now = time.monotonic()
        for conn, accepted in list(self._accepted_at.items()):
            if conn not in self._unknownConnections:
                del self._accepted_at[conn]  # authenticated, or gone
            elif now - accepted > RAFT_AUTH_DEADLINE:
                del self._accepted_at[conn]
                conn.disconnect()


class _BoundedConnection(pysyncobj.tcp_connection.TcpConnection):
    """A Raft-port connection that never buffers more than one frame's worth.

    pysyncobj reads until the socket is drained and only then looks at the
    4-byte length header, so a stranger claiming gigabytes fills memory before
    authentication ever runs, and the quadratic buffer append stalls the tick
    thread until the leader loses its role (docs/engine-fixes.md, "Huge frame headers").  Here an
    impossible length closes the connection at once, and reading pauses while
    a whole frame is already buffered.
    """

    def _TcpConnection__processRead(self) -> bool:  # noqa: N802 - pysyncobj's name
        buffered = self._TcpConnection__readBuffer
        if len(buffered) > MAX_RAFT_FRAME + 4:
            return False  # let the parser consume what is there first
        if not _Connection._TcpConnection__processRead(self):
            return False
        buffered = self._TcpConnection__readBuffer
        if len(buffered) >= 4:
            (length,) = struct.unpack("i", buffered[:4])  # pysyncobj's native signed header
            if not 0 < length <= MAX_RAFT_FRAME:
                log.warning("closing a Raft connection that announced a %d-byte frame", length)
                self.disconnect()
                return False
        return True


    def pending_bytes(self) -> int:
        """Bytes sent but still in our buffer: the socket has not taken them yet."""
        return len(self._TcpConnection__writeBuffer)

    def flush(self) -> None:
        """Hand the socket what it takes now (the engine does so only when it sends)."""
        self._TcpConnection__trySendBuffer()


class _StoreLargeMessages:
    """The Raft port's compression: pysyncobj compresses every message with zlib at
    level 3, which runs at about 40 MB/s on a snapshot's pages of mail and files (it
    made a 1 GB catch-up take 32 s).  A message larger than any batch of entries
    (a snapshot's piece) is stored instead (level 0); the receiver's decompress
    reads both, so peers on older code understand it."""

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0 if len(data) > STORE_ABOVE else level)

    decompress = staticmethod(zlib.decompress)


pysyncobj.tcp_connection.zlib = _StoreLargeMessages


# Both the listening side and the dialling side construct connections by this name.
pysyncobj.tcp_server.TcpConnection = _BoundedConnection
pysyncobj.transport.TcpConnection = _BoundedConnection


class _PromptServer(pysyncobj.tcp_server.TcpServer):
    """The Raft port's listener: a queue of :data:`LISTEN_BACKLOG` connections, all
    accepted at each poll.  The engine listens with a queue of 5 and accepts one
    connection per tick, so a burst of strangers' connects filled the queue and a
    peer's connect was dropped and retried for seconds."""

    def bind(self) -> None:
        super().bind()
        self._TcpServer__socket.listen(LISTEN_BACKLOG)

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:  # noqa: N802
        accept_one = pysyncobj.tcp_server.TcpServer._TcpServer__onNewConnection
        waiting = select.poll()  # select.select fails on descriptors above 1023
        waiting.register(descr, select.POLLIN)
        for _ in range(LISTEN_BACKLOG):
            accept_one(self, descr, event)
            if self._TcpServer__fileno is None or not waiting.poll(0):
                return


pysyncobj.transport.TcpServer = _PromptServer

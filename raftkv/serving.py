"""The client port's connections: the handshake, the requests read, the answers sent.

A mixin of :class:`raftkv.server.NodeServer`, which answers each request
(``handle``).  The port stays open to everyone who knows the secret, and costs a
stranger's connections little: at most :data:`MAX_HANDSHAKING` connections may be
in their handshake at once (a new one pushes out the oldest), each for at most
:data:`~raftkv.protocol.HANDSHAKE_TIMEOUT`; a begun frame must be whole within
:data:`~raftkv.protocol.FRAME_TIMEOUT`; beyond ``[store] max_connections`` a new
connection is closed at once.  Idle client connections stay: clients keep theirs.
A connection has at most :data:`MAX_REQUESTS_PER_CONNECTION` requests in progress,
and the node at most :data:`MAX_BLOB_OPS` chunk reads and writes, so that its memory
stays bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import protocol
from .errors import ProtocolError, RaftKVError
from .operations import OPERATIONS
from .replica_metrics import REQUESTS

if TYPE_CHECKING:
    from .server import StoreSettings

log = logging.getLogger("raftkv.server")

MAX_REQUESTS_PER_CONNECTION = 2048
# Chunk reads and writes in progress on this node at once, over all connections.
# A connection whose next frame is a chunk op waits here before it reads further,
# so a node holds a few megabytes of chunks, not whatever its clients send.
MAX_BLOB_OPS = 8
# Connections in their handshake at once; a new one pushes the oldest out, so
# a flood of strangers cannot keep a client or peer with the secret from joining.
MAX_HANDSHAKING = 128
# A connection's read buffer before reading pauses (frames above it are still
# read whole): what a stranger's bytes can cost before the handshake refuses them.
READ_BUFFER = 64 * 1024
REPORT_INTERVAL = 10.0           # seconds between two warnings about refused connections
_PAYLOAD_OPS = frozenset({"blob_get", "snapshot_read"})  # answers sent without copying their bytes


class ConnectionServing:
    """Mixin of :class:`raftkv.server.NodeServer`: ``serve_connection`` serves one client
    connection until it closes."""

    secret: bytes
    settings: StoreSettings

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _init_connections(self) -> None:
        self._blob_slots: asyncio.Semaphore | None = None  # made in the loop (run)
        self._open: set[asyncio.StreamWriter] = set()
        self._handshaking: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._over_cap = _Report("closed connections at the connection cap")
        self._refused = _Report("refused connections that did not complete the handshake")

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._open) >= self.settings.max_connections:
            self._over_cap.note(peer)
            writer.transport.abort()
            return
        self._open.add(writer)
        try:
            channel = await self._authenticate(reader, writer, peer)
            if channel is not None:
                await self._serve_requests(reader, writer, channel, peer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: Any) -> protocol.Channel | None:
        """The handshake, within its deadline and under the handshake cap; None when refused."""
        self._handshaking[writer] = None
        if len(self._handshaking) > MAX_HANDSHAKING:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            oldest.transport.abort()  # its handshake fails at once and ends its task
        sealed = self.settings.encryption == "always" or not (
            isinstance(peer, tuple) and protocol.is_loopback(peer[0]))
        try:
            return await protocol.server_handshake(reader, writer, self.secret, sealed=sealed)
        except (ProtocolError, OSError) as exc:
            self._refused.note(f"{peer}: {exc}")
            return None
        finally:
            self._handshaking.pop(writer, None)

    async def _serve_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              channel: protocol.Channel, peer: Any) -> None:
        slots = asyncio.Semaphore(MAX_REQUESTS_PER_CONNECTION)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    request = await protocol.read_frame_async(reader, channel)
                except ProtocolError as exc:
                    log.warning("malformed frame from %s: %s", peer, exc)
                    _send(writer, channel, (protocol.encode({"id": None, **exc.to_wire()}),))
                    break
                if request is None:
                    break
                await slots.acquire()
                operation = OPERATIONS.get(op) if isinstance(op := request.get("op"), str) else None
                blob_slots = self._blob_slots if operation is not None and operation.chunk else None
                if blob_slots is not None:
                    await blob_slots.acquire()
                task = asyncio.create_task(
                    self._answer(request, writer, channel, slots, blob_slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter,
                      channel: protocol.Channel, slots: asyncio.Semaphore,
                      blob_slots: asyncio.Semaphore | None) -> None:
        request_id = request.pop("id", None)
        op = request.get("op")
        began = time.perf_counter()
        try:
            try:
                answer = {"id": request_id, "ok": await self.handle(request)}
            except RaftKVError as exc:
                answer = {"id": request_id, **exc.to_wire()}
            except Exception:
                log.exception("internal error on %r", op)
                answer = {"id": request_id, "error": "RaftKVError", "message": "internal error"}
            finally:
                slots.release()
            _observe(op, answer, time.perf_counter() - began)
            del request  # a chunk's bytes, for blob_put: free them before waiting to send
            payload = answer["ok"].get("data") if op in _PAYLOAD_OPS and "ok" in answer else None
            if isinstance(payload, bytes) and payload:
                answer["ok"]["data"] = protocol.PAYLOAD
                _send(writer, channel, protocol.encode_parts(answer, payload))
            else:
                _send(writer, channel, (protocol.encode(answer),))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if blob_slots is not None:
                blob_slots.release()


def _send(writer: asyncio.StreamWriter, channel: protocol.Channel, frame: Sequence[bytes]) -> None:
    """Put one frame on the wire, sealed if the channel is: no await in between,
    so frames are sealed in the order they are sent."""
    parts = channel.seal(frame)
    if len(parts) == 1:
        writer.write(parts[0])
    else:
        writer.writelines(parts)


class _Report:
    """A warning that a flood would repeat for every connection: logged at most once
    per :data:`REPORT_INTERVAL`, with how many it stands for."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._count = 0
        self._next = 0.0

    def note(self, detail: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            log.warning("%s: %d since the last report (latest: %s)", self.what, self._count, detail)
            self._count = 0
            self._next = now + REPORT_INTERVAL


def _observe(op: object, answer: dict[str, Any], seconds: float) -> None:
    """One request's metrics (raftkv/replica_metrics.py): labelled by the operation's
    registered name and the error's class name only, so a client cannot mint labels."""
    name = op if isinstance(op, str) and op in OPERATIONS else "unknown"
    REQUESTS.observe(name, answer.get("error", "ok"), seconds)

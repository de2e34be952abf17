"""Moving large values between a client and a group: uploads and streamed reads.

An upload (docs/store-promises.md, "Blobs") goes in this order:

1. it reads a few chunks from the stream and registers their names under its
   upload id through Raft (an *intent*), so that no replica's garbage collector
   takes them while the upload runs, however long it runs: a thread renews the
   intent's lease until the upload ends;
2. it sends each chunk to every replica (one sender per replica, in order), and
   goes on while at most :data:`WINDOW` chunks are not yet on a majority;
3. once a majority holds every chunk, the caller writes the cell holding the
   manifest with ``upload=<id>``, which retires the intent in the same Raft step.

A replica that falls :data:`LAG_LIMIT` chunks behind is skipped for the chunks
after that (it repairs itself from its peers later), so a slow or paused replica
costs neither speed nor memory.  The client never holds more than about
``WINDOW + INTENT_GROUP`` chunks (plus a lagging replica's backlog), whatever the
value's size.

Reads fetch :data:`READ_AHEAD` chunks in parallel, each from a replica chosen by
the chunk's name (spreading the work over the group) with failover to the others,
and verify every chunk's hash.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import protocol
from .background import BackgroundLoop
from .blobs import CHUNK_SIZE, make_manifest
from .errors import RaftKVError, UnavailableError, from_wire
from .interface import Readable

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

WINDOW = 16          # chunks sent but not yet confirmed by a majority
INTENT_GROUP = 8     # chunks whose names go through Raft in one intent command
LAG_LIMIT = 32       # unanswered chunks after which a replica is skipped
READ_AHEAD = 6       # chunks fetched ahead of the reader
UPLOAD_LEASE = 300.0  # seconds an intent lives unless renewed; renewed every quarter of it


class _ChunkWrite:
    """One chunk on its way to the replicas: settled once a majority has it, or cannot."""

    def __init__(self, name: str, replicas: int) -> None:
        self.name = name
        self._needed = replicas // 2 + 1
        self._replicas = replicas
        self._stored = 0
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._settled = threading.Event()

    def answer(self, error: str | None) -> None:
        with self._lock:
            if error is None:
                self._stored += 1
            else:
                self._errors.append(error)
            if self._stored >= self._needed or len(self._errors) > self._replicas - self._needed:
                self._settled.set()

    def wait(self, timeout: float) -> None:
        """Return once a majority holds the chunk; raise when that cannot happen in time."""
        self._settled.wait(timeout)
        with self._lock:
            if self._stored >= self._needed:
                return
            reason = self._errors[0] if self._errors else f"no majority within {timeout:.1f}s"
            raise UnavailableError(f"chunk {self.name[:12]} stored on {self._stored} of "
                                   f"{self._replicas} replicas: {reason}")


class _Lane:
    """The chunks of one upload going to one replica, sent in order by one thread."""

    def __init__(self, client: Client, addr: str) -> None:
        self._client = client
        self.addr = addr
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftkv-upload")
        self._lock = threading.Lock()
        self._unanswered = 0

    def send(self, write: _ChunkWrite, data: bytes) -> None:
        with self._lock:
            if self._unanswered >= LAG_LIMIT:
                lagging = True
            else:
                lagging = False
                self._unanswered += 1
        if lagging:
            write.answer(f"{self.addr} is {LAG_LIMIT} chunks behind")
        else:
            self._sender.submit(self._send, write, data)

    def _send(self, write: _ChunkWrite, data: bytes) -> None:
        try:
            conn = self._client.connection(self.addr)
            answer = conn.send({"op": "blob_put", "name": write.name, "data": protocol.PAYLOAD},
                               data)
        except RaftKVError as exc:
            self._done(write, str(exc))
            return
        answer.add_done_callback(lambda f: self._answered(write, f))

    def _answered(self, write: _ChunkWrite, future: Future[dict[str, Any]]) -> None:
        exc = future.exception()
        if exc is not None:
            self._done(write, str(exc))
        elif "error" in future.result():
            self._done(write, str(from_wire(future.result())))
        else:
            self._done(write, None)

    def _done(self, write: _ChunkWrite, error: str | None) -> None:
        with self._lock:
            self._unanswered -= 1
        write.answer(error)

    def close(self) -> None:
        self._sender.shutdown(wait=False)


class _LeaseRenewer(BackgroundLoop):
    """Renews an upload's intent every quarter lease, from its first registration to its end."""

    def __init__(self, client: Client, upload_id: int, lease: float) -> None:
        super().__init__("raftkv-lease", lease / 4, first_delay=lease / 4)
        self._client = client
        self._upload_id = upload_id
        self._lease = lease
        self.renewals = 0

    def step(self) -> None:
        try:
            self._client.intent(self._upload_id, [], lease=self._lease)
            self.renewals += 1
        except RaftKVError as exc:
            log.warning("could not renew upload %d: %s", self._upload_id, exc)


class Upload:
    """One client call's large values on their way to the group, under one intent.

    Use as a context manager; :meth:`write` stores one value and returns its
    manifest; the caller then writes the cell(s) with ``upload=self.id``.
    """

    def __init__(self, client: Client, lease: float = UPLOAD_LEASE) -> None:
        self.id = random.getrandbits(62) + 1
        self._client = client
        self._lease = lease
        self._lanes = [_Lane(client, addr) for addr in client.addrs]
        self.registered = False
        self._renewer = _LeaseRenewer(client, self.id, lease)

    def write(self, stream: Readable) -> bytes:
        """Store everything ``stream`` yields; the manifest, once a majority has each chunk."""
        digests: list[bytes] = []
        size = 0
        in_flight: deque[_ChunkWrite] = deque()
        eof = False
        while not eof:
            group: list[tuple[bytes, bytes]] = []
            while len(group) < INTENT_GROUP:
                chunk = read_full(stream, CHUNK_SIZE)
                if chunk:
                    group.append((hashlib.sha256(chunk).digest(), chunk))
                if len(chunk) < CHUNK_SIZE:
                    eof = True
                    break
            if not group:
                break
            self._register([digest for digest, _ in group])
            for digest, chunk in group:
                in_flight.append(self._send(digest.hex(), chunk))
                digests.append(digest)
                size += len(chunk)
            del group  # only the lanes hold the bytes now
            while len(in_flight) > WINDOW:
                in_flight.popleft().wait(self._client.timeout)
        manifest, index = make_manifest(size, digests)
        if index:
            index_digests = [hashlib.sha256(chunk).digest() for chunk in index]
            self._register(index_digests)
            in_flight.extend(self._send(d.hex(), chunk)
                             for d, chunk in zip(index_digests, index, strict=True))
        while in_flight:
            in_flight.popleft().wait(self._client.timeout)
        return manifest

    def _send(self, name: str, data: bytes) -> _ChunkWrite:
        write = _ChunkWrite(name, len(self._lanes))
        for lane in self._lanes:
            lane.send(write, data)
        return write

    def _register(self, digests: list[bytes]) -> None:
        self._client.intent(self.id, digests, lease=self._lease, new=not self.registered)
        if not self.registered:
            self.registered = True
            self._renewer.start()

    @property
    def renewals(self) -> int:
        """How many times the intent's lease was renewed (tests, diagnostics)."""
        return self._renewer.renewals

    def abandon(self) -> None:
        """Give the chunks back to the garbage collector now (best effort)."""
        if self.registered:
            try:
                self._client.intent_end(self.id)
            except RaftKVError as exc:
                log.info("upload %d left to expire: %s", self.id, exc)

    def close(self) -> None:
        # On the caller's request path: a renewal in flight is not waited for.
        self._renewer.stop(timeout=0)
        for lane in self._lanes:
            lane.close()

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_ahead(pool: ThreadPoolExecutor, names: Iterable[str],
               fetch: Callable[[str], bytes]) -> Iterator[bytes]:
    """``fetch(name)`` for each name, in order, with up to READ_AHEAD fetches running."""
    pending: deque[Future[bytes]] = deque()
    names = iter(names)
    try:
        while True:
            while len(pending) < READ_AHEAD:
                name = next(names, None)
                if name is None:
                    break
                pending.append(pool.submit(fetch, name))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def skip_bytes(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    """``chunks`` without their first ``skip`` bytes (closing it when closed itself)."""
    try:
        for chunk in chunks:
            if skip:
                chunk, skip = chunk[skip:], max(0, skip - len(chunk))
            if chunk:
                yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class ReplicaPenalty:
    """Replicas that recently failed to serve a chunk are asked last for a while."""

    def __init__(self, seconds: float = 5.0) -> None:
        self._seconds = seconds
        self._until: dict[str, float] = {}

    def order(self, addrs: tuple[str, ...], name: str) -> list[str]:
        start = int(name[:8], 16) % len(addrs)
        rotated = list(addrs[start:] + addrs[:start])
        now = time.monotonic()
        return sorted(rotated, key=lambda a: self._until.get(a, 0.0) > now)

    def failed(self, addr: str) -> None:
        self._until[addr] = time.monotonic() + self._seconds


def read_full(stream: Readable, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first (streams may return less)."""
    parts, missing = [], size
    while missing:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    if len(parts) == 1 and type(parts[0]) is bytes:
        return parts[0]
    return b"".join(parts)

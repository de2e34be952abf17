"""``raftkv.Client``: the thread-safe, pipelined client of one Raft group.

* Finds the leader and follows ``NotLeader`` hints; retries transient failures
  until its deadline.
* Every write carries ``(client id, sequence number)`` fixed before the first
  try: a retry reuses them, so the group applies a write exactly once.  A write
  whose deadline passes raises :class:`~raftkv.errors.OutcomeUnknown`.

This module holds that: the connections to the replicas, the session's sequence
numbers, the tries at the leader and the stale reads.  The calls are the mixins':
the cell API (:mod:`raftkv.client_cells`), values of any size as blobs
(:mod:`raftkv.client_blobs`), the group's upkeep (:mod:`raftkv.client_upkeep`)
and backups (:mod:`raftkv.client_backup`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .client_backup import BackupCalls
from .client_blobs import INLINE_LIMIT as INLINE_LIMIT  # re-exported: tests and bench import it here
from .client_blobs import BlobCalls
from .client_cells import CellCalls
from .client_cells import cells_request as cells_request  # re-exported: shards, the test store
from .client_cells import ttl_field as ttl_field
from .client_upkeep import UpkeepCalls
from .connection import ATTEMPT_TIMEOUT, Connection
from .errors import (
    AuthenticationFailed,
    ClientClosed,
    ConfigError,
    Frozen,
    NotLeader,
    OutcomeUnknown,
    ProtocolError,
    RaftKVError,
    Timeout,
    UnavailableError,
    from_wire,
)
from .interface import Consistency
from .transfer import READ_AHEAD, UPLOAD_LEASE, ReplicaPenalty

FROZEN_PAUSE = 0.01        # seconds between tries of a write a backup's freeze refused


class _Session:
    """Sequence numbers of one client and the low-water mark of answered ones."""

    def __init__(self) -> None:
        self.client_id = random.getrandbits(62) + 1
        self._next = 1
        self._outstanding: set[int] = set()
        self._lock = threading.Lock()

    def begin(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            self._outstanding.add(seq)
            return seq

    def end(self, seq: int) -> None:
        with self._lock:
            self._outstanding.discard(seq)

    def ack(self) -> int:
        """Every sequence number at or below this one has been answered."""
        with self._lock:
            return (min(self._outstanding) if self._outstanding else self._next) - 1


# BlobCalls before CellCalls: the cell calls' placeholders for the blob calls' methods
# must not hide them.
class Client(BlobCalls, CellCalls, UpkeepCalls, BackupCalls):
    """Talk to one group of replicas.

    :param addrs: the client ports (``host:port``) of the group's replicas.
    :param secret: the cluster secret.
    :param timeout: how long one call may take in all, retries included.
    :param upload_lease: seconds a large value's upload stays protected from
        garbage collection without renewal (it is renewed while the upload runs).
    """

    def __init__(self, addrs: Sequence[str], secret: bytes, *, timeout: float = 10.0,
                 upload_lease: float = UPLOAD_LEASE) -> None:
        if not addrs:
            raise ConfigError("a client needs at least one replica address")
        self.addrs = tuple(addrs)
        self.secret = secret
        self.timeout = timeout
        self._session = _Session()
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._leader = self.addrs[0]
        self.upload_lease = upload_lease
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=2 * len(self.addrs),
                                        thread_name_prefix="raftkv-status")
        self._fetch_pool = ThreadPoolExecutor(max_workers=2 * READ_AHEAD,
                                              thread_name_prefix="raftkv-fetch")
        self._penalty = ReplicaPenalty()
        self._refused: set[str] = set()  # replicas whose handshake refused our secret

    # -- plumbing ---------------------------------------------------------

    def connection(self, addr: str) -> Connection:
        """The open connection to replica ``addr`` (made on first use).

        Low-level: for raftkv's own helpers (:mod:`raftkv.transfer` pipelines
        chunks on it); everything else goes through the methods below.
        """
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            conn = self._connections.get(addr)
            if conn is not None and not conn.closed:
                return conn
        try:
            conn = Connection(addr, self.secret)  # connect outside the lock
        except AuthenticationFailed as exc:
            # One replica refusing is that replica's problem (an old secret file, another
            # cluster's process on the port): pass on to the others, as for one that is
            # down.  Only when every replica refuses is it ours: no retry changes a secret.
            with self._lock:
                self._refused.add(addr)
                everyone = self._refused.issuperset(self.addrs)
            if everyone:
                raise
            raise UnavailableError(f"{addr} refused this client's secret: {exc}") from exc
        with self._lock:
            self._refused.discard(addr)
            if self._closed:
                # close() ran while we connected: it cannot have seen this connection.
                conn.close()
                raise ClientClosed("the client is closed")
            old = self._connections.get(addr)
            if old is not None and not old.closed:
                conn.close()
                return old
            self._connections[addr] = conn
            return conn

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request to one replica; raises the answer's error."""
        conn = self.connection(addr)
        future = conn.send(request)
        try:
            answer = future.result(timeout)
        except FutureTimeout:
            conn.forget(future)
            raise Timeout(f"no answer from {addr} in {timeout:.1f}s") from None
        if "error" in answer:
            raise from_wire(answer)
        result = answer.get("ok")
        if not isinstance(result, dict):
            raise ProtocolError("answer without a result")
        return result

    def _call(self, request: dict[str, Any], *, write: bool) -> dict[str, Any]:
        """Send to the leader, following hints and retrying until the deadline."""
        deadline = time.monotonic() + self.timeout
        seq = 0
        if write:
            seq = self._session.begin()
            request = {**request, "cid": self._session.client_id, "seq": seq}
        attempt = 0
        try:
            while not self._closed:
                addr = self._leader
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if write:
                    request["ack"] = self._session.ack()
                try:
                    result = self._send_to(addr, request, min(remaining, ATTEMPT_TIMEOUT))
                except NotLeader as exc:
                    self._leader = exc.leader if exc.leader in self.addrs else self._next_addr(addr)
                    if exc.leader is None or exc.leader == addr:
                        time.sleep(min(0.05 * 2 ** min(attempt, 4), 0.5))
                except UnavailableError:
                    self._leader = self._next_addr(addr)
                    time.sleep(min(0.02 * 2 ** min(attempt, 5), 0.5))
                else:
                    if "error" not in result:
                        return result
                    err = from_wire(result)
                    if not isinstance(err, Frozen):
                        raise err
                    # Not applied and not kept (raftkv/freezing.py): the same request
                    # again once the backup's moment has passed.
                    time.sleep(FROZEN_PAUSE)
                attempt += 1
        finally:
            if write:
                self._session.end(seq)
        if write:
            raise OutcomeUnknown(f"write not confirmed within {self.timeout}s; it may have applied")
        raise Timeout(f"no leader answered within {self.timeout}s")

    def _next_addr(self, addr: str) -> str:
        index = self.addrs.index(addr) if addr in self.addrs else -1
        return self.addrs[(index + 1) % len(self.addrs)]

    def _read(self, request: dict[str, Any], consistency: Consistency) -> dict[str, Any]:
        if consistency == "linearizable":
            return self._call(request, write=False)
        if consistency != "stale":
            raise ValueError("consistency is 'linearizable' or 'stale'")
        # A stale read takes any replica that answers, labelled as such.  A
        # replica's refusal (say, one that is behind) passes on to the next; the
        # last one is raised.
        last: RaftKVError = UnavailableError("no replica answered")
        for addr in self.addrs:
            try:
                result = self._send_to(addr, {**request, "consistency": "stale"},
                                       ATTEMPT_TIMEOUT)
            except UnavailableError as exc:
                last = exc
                continue
            if "error" not in result:
                return result
            last = from_wire(result)
        raise last

    def status(self) -> list[dict[str, Any]]:
        """Each replica's status; ``alive`` is False for one that did not answer."""
        def one(addr: str) -> dict[str, Any]:
            try:
                return {"alive": True, **self._send_to(addr, {"op": "status"}, 2.0)}
            except RaftKVError as exc:
                return {"alive": False, "addr": addr, "error": str(exc)}
        return list(self._pool.map(one, self.addrs))

    def close(self) -> None:
        """Close every connection; calls in progress or made later fail at once."""
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
        self._pool.shutdown(wait=False)
        self._fetch_pool.shutdown(wait=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

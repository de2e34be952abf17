"""The node registry: which long-running processes exist, where, and whether they are alive.

Every frontend, smtpd and balancer writes one cell about itself every
:data:`HEARTBEAT_INTERVAL` seconds; the balancer reads it to find frontends and
the admin console to show every node with alive/down.  A node is *alive* while
its last heartbeat is younger than :data:`ALIVE_WINDOW`, so a process that
crashes (kill -9) turns "down" by itself without anyone cleaning up after it.

Layout: row :data:`REGISTRY_ROW`, one column ``<kind>/<name>`` per process,
holding msgpack ``{"addr", "info", "heartbeat"}``.  The row lives in the config
group when the cluster has one (docs/architecture.md, "Processes and ports"), else
in the storage group that owns its shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from raftkv.background import BackgroundLoop
from raftkv.errors import RaftKVError, UnavailableError
from raftkv.interface import KeyValueStore

__all__ = ["ALIVE_WINDOW", "HEARTBEAT_INTERVAL", "REGISTRY_ROW", "Heartbeat", "NodeInfo",
           "list_nodes", "register", "unregister"]

log = logging.getLogger(__name__)

REGISTRY_ROW = "_registry"
ALIVE_WINDOW = 10.0       # seconds without a heartbeat before a node counts as down
HEARTBEAT_INTERVAL = 2.0  # a node misses four beats in a row before it is declared down

InfoSource = dict[str, Any] | Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class NodeInfo:
    """One registered process, as last reported by itself."""

    kind: str                  # "frontend", "smtpd", "balancer", ...
    name: str                  # unique within its kind (the cluster file's process name)
    addr: str                  # host:port where it serves (what a browser or MTA dials)
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # kind-specific extras
    heartbeat: float = 0.0     # time.time() of its last beat, by the node's own clock
    alive: bool = False        # heartbeat within ALIVE_WINDOW of the reader's clock


class ClusterStore(KeyValueStore, Protocol):
    """The cluster's store (:class:`shards.Client`), whose config group may be apart."""

    def config_group(self) -> KeyValueStore | None:
        """The config group's store, if the cluster has one."""
        ...


def _store(client: ClusterStore) -> KeyValueStore:
    """Where the registry row lives: the config group, or the storage groups."""
    return client.config_group() or client


def _column(kind: str, name: str) -> str:
    # The kind is a column prefix that list_nodes filters on, so it may not contain "/".
    if not kind or "/" in kind or not name:
        raise ValueError(f"bad registry key kind={kind!r} name={name!r}")
    return f"{kind}/{name}"


def register(client: ClusterStore, *, kind: str, name: str, addr: str,
             info: dict[str, Any] | None = None) -> None:
    """Record (or refresh) a node's address and heartbeat.

    :param info: small, msgpack-able extras (pid, load, version); the cell stays small.
    :raises UnavailableError: the store cannot take the write right now.
    """
    column = _column(kind, name)
    payload = {"addr": addr, "info": info or {}, "heartbeat": time.time()}
    _store(client).put(REGISTRY_ROW, column, msgpack.packb(payload, use_bin_type=True))


def unregister(client: ClusterStore, *, kind: str, name: str) -> bool:
    """Forget a node (the admin console's "remove"); returns whether it was registered.

    A process that merely stops should *not* unregister: showing it as down is the point.
    """
    return _store(client).delete(REGISTRY_ROW, _column(kind, name))


def list_nodes(client: ClusterStore, kind: str | None = None, *,
               now: float | None = None) -> list[NodeInfo]:
    """Every registered node (of one ``kind`` if given), sorted by kind and name.

    :param now: the reader's clock, for tests; aliveness compares it with the
        writer's clock, so hosts need roughly synchronised clocks (NTP), far
        tighter than :data:`ALIVE_WINDOW`.
    :raises UnavailableError: the store cannot answer right now.
    """
    prefix = f"{kind}/" if kind else ""
    cells = _store(client).get_row(REGISTRY_ROW, prefix=prefix)
    now = time.time() if now is None else now
    nodes = []
    for column, cell in cells.items():
        node = decode_node(column, cell.value, now)
        if node is not None:
            nodes.append(node)
    nodes.sort(key=lambda n: (n.kind, n.name))
    return nodes


def decode_node(column: str, value: bytes, now: float) -> NodeInfo | None:
    """Parse one registry cell; a malformed one is logged and skipped, never fatal."""
    kind, sep, name = column.partition("/")
    try:
        payload = msgpack.unpackb(value, raw=False)
        addr = str(payload["addr"])
        heartbeat = float(payload["heartbeat"])
        info = payload.get("info") or {}
        if not sep or not isinstance(info, dict):
            raise ValueError("bad shape")
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        log.warning("ignoring malformed registry cell %r: %s", column, exc)
        return None
    alive = now - heartbeat <= ALIVE_WINDOW
    return NodeInfo(kind=kind, name=name, addr=addr, info=info, heartbeat=heartbeat, alive=alive)


class Heartbeat(BackgroundLoop):
    """A daemon thread that re-registers a node every ``interval`` seconds until stopped.

    Store outages are logged (once when they start, once when they end) and
    ridden out: a node keeps serving while the store is unavailable, and its
    registry entry simply ages until the store is back.

    :param info: a dict, or a callable returning one at each beat (e.g. current load).
    """

    def __init__(self, client: ClusterStore, *, kind: str, name: str, addr: str,
                 info: InfoSource | None = None, interval: float = HEARTBEAT_INTERVAL) -> None:
        _column(kind, name)  # fail in the caller's thread, not silently in ours
        self._client = client
        self._key = {"kind": kind, "name": name, "addr": addr}
        self._info = info
        self._failing = False
        super().__init__(f"heartbeat-{kind}-{name}", interval)

    def step(self) -> None:
        self.beat()

    def beat(self) -> None:
        """Register once now, in the calling thread, swallowing (and logging) store errors."""
        try:
            info = self._info() if callable(self._info) else self._info
        except Exception:  # the caller's callback must not end the heartbeat thread
            log.exception("heartbeat info callback of %s/%s failed",
                          self._key["kind"], self._key["name"])
            info = None
        try:
            register(self._client, info=info, **self._key)
        except UnavailableError as exc:
            if not self._failing:
                log.warning("heartbeat of %s/%s failed, will keep trying: %s",
                            self._key["kind"], self._key["name"], exc)
            self._failing = True
            return
        except RaftKVError:
            # Not transient (e.g. a bad secret); still keep the node serving, but loudly.
            log.exception("heartbeat of %s/%s failed", self._key["kind"], self._key["name"])
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat of %s/%s recovered", self._key["kind"], self._key["name"])
            self._failing = False

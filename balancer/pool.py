"""The balancer's view of the frontends: discovered from the registry, health-checked.

One background thread does a round every :data:`CHECK_INTERVAL`: ask the
registry which frontends are alive, then GET each one's ``/healthz`` in
parallel (a dead one costs its timeout, not everyone's).  Request threads only
read the result, under a lock, so a redirect never waits for the network.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from raftkv.background import STOP_TIMEOUT, BackgroundLoop
from raftkv.cluster import split_addr
from raftkv.errors import ConfigError, RaftKVError
from shards.model.registry import list_nodes

from .choice import FrontendState, choose, parse_health

if TYPE_CHECKING:
    from shards import Client

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0   # seconds between rounds: how long a dead frontend may still get clients
CHECK_TIMEOUT = 0.5    # a /healthz slower than this counts as dead
MAX_HEALTH_BODY = 64 * 1024

Discover = Callable[[], Iterable[str]]


def registry_frontends(client: Client) -> Discover:
    """A discover function: the addresses of the frontends the registry shows alive."""
    def discover() -> list[str]:
        return [node.addr for node in list_nodes(client, "frontend") if node.alive]
    return discover


def check_health(addr: str, timeout: float = CHECK_TIMEOUT, *, tls: bool = False) -> float | None:
    """GET ``http(s)://addr/healthz``: the frontend's load, or None if it is not live.

    ``tls``: the frontends serve HTTPS themselves (``[web] tls_cert``).  Their
    certificate is not verified here: the balancer sends no cookie and reads
    only a load figure, so a forged answer could at worst steer which frontend a
    browser is sent to, and that browser checks the certificate itself.
    """
    try:
        host, port = split_addr(addr)
        conn = (http.client.HTTPSConnection(host, port, timeout=timeout,
                                            context=ssl._create_unverified_context())  # noqa: S323
                if tls else http.client.HTTPConnection(host, port, timeout=timeout))
        try:
            conn.request("GET", "/healthz", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read(MAX_HEALTH_BODY)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ConfigError) as exc:
        log.debug("health check of %s failed: %r", addr, exc)
        return None
    return parse_health(response.status, body)


class FrontendPool(BackgroundLoop):
    """The frontends and their health, refreshed by a background thread.

    :param discover: returns the frontend addresses to consider; when it raises
        a store error, the previous list is kept, so the balancer rides out a
        store outage on health checks alone.
    """

    def __init__(self, discover: Discover, *, interval: float = CHECK_INTERVAL,
                 timeout: float = CHECK_TIMEOUT,
                 check: Callable[[str, float], float | None] = check_health) -> None:
        self._discover = discover
        self._timeout = timeout
        self._check = check
        self._lock = threading.Lock()
        self._states: dict[str, FrontendState] = {}
        self._addrs: list[str] = []
        self._discovery_failing = False
        self._checkers = ThreadPoolExecutor(16, thread_name_prefix="balancer-check")
        super().__init__("balancer-pool", interval)

    def stop(self, timeout: float | None = STOP_TIMEOUT) -> bool:
        ended = super().stop(timeout)
        self._checkers.shutdown(wait=False, cancel_futures=True)
        return ended

    def snapshot(self) -> list[FrontendState]:
        """The current state of every known frontend."""
        with self._lock:
            return list(self._states.values())

    def pick(self) -> FrontendState | None:
        """Choose a frontend for one new client and count the redirect against it."""
        with self._lock:
            chosen = choose(self._states.values())
            if chosen is not None:
                self._states[chosen.addr] = replace(chosen, redirects=chosen.redirects + 1)
            return chosen

    def refresh(self) -> None:
        """One round: rediscover, then health-check every frontend."""
        try:
            self._addrs = sorted(set(self._discover()))
            if self._discovery_failing:
                log.info("frontend discovery works again")
            self._discovery_failing = False
        except RaftKVError as exc:
            if not self._discovery_failing:
                log.warning("cannot read the registry, keeping %d known frontend(s): %s",
                            len(self._addrs), exc)
            self._discovery_failing = True
        loads = list(self._checkers.map(lambda a: self._check(a, self._timeout), self._addrs))
        states = {addr: FrontendState(addr, live=load is not None, load=load or 0.0)
                  for addr, load in zip(self._addrs, loads, strict=True)}
        with self._lock:
            for addr, state in states.items():
                old = self._states.get(addr)
                if old is None or old.live != state.live:
                    log.info("frontend %s is %s", addr, "live" if state.live else "dead")
            self._states = states

    def step(self) -> None:
        self.refresh()

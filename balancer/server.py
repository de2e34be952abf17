"""``raftcloud-balancer``: redirect each new client to a live, least-loaded frontend.

Every request, whatever its method or path, gets a ``307 Temporary Redirect``
to the same path and query on a frontend (307, not 302, so a POST stays a
POST), with ``Cache-Control: no-store`` so the browser asks us again next time
instead of remembering a frontend that may since have died.  With no live
frontend the answer is 503 with ``Retry-After``.  Only the first request of a
client passes through here; the frontends serve the rest.

The listener is a :class:`raftkv.boundedhttp.BoundedHTTPServer`: a request
head must arrive within ``[balancer] head_timeout`` seconds and at most
``[balancer] max_connections`` connections are held, so slow clients cannot
take the entry point offline.  Redirects use the scheme of ``[web] scheme``.
With ``[web] tls_cert`` the balancer serves HTTPS with it, as the frontends do:
a form a failover worker sends on through us stays on one https site, so its
SameSite=Lax cookie goes with it (docs/architecture.md, "Failover").
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any

import click

from raftkv.boundedhttp import BoundedHTTPServer, BoundedRequestHandler
from raftkv.cluster import CONFIG_ENV, split_addr
from raftkv.logs import setup_logging
from shards import Client
from shards.model.registry import Heartbeat
from shards.service import run_service

from .choice import redirect_location
from .metrics import ANSWERS, LIVE_FRONTENDS
from .pool import Discover, FrontendPool, check_health, registry_frontends
from .settings import BalancerSettings

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

log = logging.getLogger("balancer.server")  # also under "python -m"

RETRY_AFTER = 2  # seconds; a frontend that restarts is back in about this time
_UNAVAILABLE_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service unavailable</title></head>
<body><h1>Service unavailable</h1>
<p>No web frontend is available right now. Please try again in a few seconds.</p>
</body></html>
"""


class RedirectHandler(BoundedRequestHandler):
    """Answers every request with a redirect (or a 503); never reads a request body."""

    server: _BalancerHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: a load generator need not reconnect each time
    server_version = "raftcloud-balancer"

    def _answer(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            # We do not read bodies, so the connection cannot carry another request.
            self.close_connection = True
        frontend = self.server.pool.pick()
        if frontend is None:
            ANSWERS.labels("unavailable").inc()
            self._unavailable()
            return
        ANSWERS.labels("redirect").inc()
        self.send_response(307)
        self.send_header("Location", redirect_location(frontend.addr, self.path,
                                                         self.server.scheme))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _unavailable(self) -> None:
        self.send_response(503)
        self.send_header("Retry-After", str(RETRY_AFTER))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_UNAVAILABLE_PAGE)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(_UNAVAILABLE_PAGE)

    # http.server dispatches on these names; every method gets the same answer.
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer  # noqa: N815

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        # http.server writes every request to stderr; we keep access logs at debug level.
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        log.info("%s %s", self.address_string(), format % args)


class _BalancerHTTPServer(BoundedHTTPServer):
    request_queue_size = 128  # many browsers arriving at once queue instead of being refused

    def __init__(self, addr: tuple[str, int], pool: FrontendPool,
                 settings: BalancerSettings) -> None:
        self.pool = pool
        self.scheme = settings.scheme
        self.tls: ssl.SSLContext | None = None
        if settings.tls is not None:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(*settings.tls)
        super().__init__(addr, RedirectHandler, head_timeout=settings.limits.head_timeout,
                         io_timeout=settings.limits.io_timeout,
                         max_connections=settings.limits.max_connections)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake runs on the connection's first read, in its own thread and
            # under its head deadline: a client that stalls it holds only that thread.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class Balancer:
    """The balancer's listener, frontend pool and heartbeat.

    :param client: the store client (owned by the caller, not closed by :meth:`stop`).
    :param discover: where frontend addresses come from; the registry by default.
    :raises ConfigError: the cluster file has no ``[balancer]`` section, or a bad one
        (:mod:`balancer.settings`).
    :raises OSError: the listen address cannot be bound.
    """

    def __init__(self, cluster: ClusterConfig, client: Client, *,
                 discover: Discover | None = None) -> None:
        self.settings = BalancerSettings.from_cluster(cluster)
        self.pool = FrontendPool(discover or registry_frontends(client),
                                 check=functools.partial(check_health,
                                                         tls=self.settings.tls is not None))
        self._httpd = _BalancerHTTPServer(split_addr(self.settings.listen), self.pool,
                                          self.settings)
        self._serving = threading.Thread(target=self._httpd.serve_forever, name="balancer-http",
                                         daemon=True)
        self._heartbeat = Heartbeat(client, kind="balancer", name=self.settings.name,
                                    addr=self.address, info=self._info)
        LIVE_FRONTENDS.set_function(self._live)  # read at scrape time

    @property
    def address(self) -> str:
        """The host:port actually bound."""
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)  # an IP socket's address, never a Unix path
        return f"{host}:{port}"

    def _live(self) -> int:
        return sum(1 for f in self.pool.snapshot() if f.live)

    def _info(self) -> dict[str, object]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "live_frontends": self._live()}

    def start(self) -> None:
        self.pool.start()
        self._serving.start()
        self._heartbeat.start()
        log.info("balancer %s listening on %s", self.settings.name, self.address)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.pool.stop()
        self._heartbeat.stop()
        log.info("balancer %s stopped", self.settings.name)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              default=lambda: os.environ.get(CONFIG_ENV), show_default=f"${CONFIG_ENV}",
              help="The cluster file.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(config_path: str | None, log_level: str) -> None:
    """Run the cluster's HTTP balancer: redirect new clients to a live frontend."""
    setup_logging("balancer", log_level)
    run_service("raftcloud-balancer", config_path, Balancer)


if __name__ == "__main__":
    main()

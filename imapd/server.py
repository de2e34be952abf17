"""``raftcloud-imapd``: the IMAP process -- pymap's protocol on the mail model.

One asyncio event loop, in a thread of its own, serves every connection of
two listeners: ``listen`` (plain IMAP, STARTTLS when there is a certificate)
and ``listen_tls`` (TLS from the first byte, the 993 of a real deployment).
Each connection is pymap's command loop (:mod:`imapd.connection`,
:mod:`imapd.state`) on our backend (:mod:`imapd.session`); store calls run in
a bounded pool of threads (:mod:`imapd.store`).  The process registers itself
in the node registry, heartbeats, serves its metrics when the launcher asks,
and stops cleanly on SIGTERM or SIGINT.

Connections (:class:`shards.peers.ConnectionGate`, smtpd's rule too): at most
``max_connections_per_address`` per client address (an IPv6 /56 counts as one);
one more gets ``* BYE`` and is closed before any greeting.  At
``max_connections`` per listener the oldest connection that has not logged in
is told ``* BYE`` and closed to make room; a newcomer is refused only when
every connection is logged in, so strangers holding connections open cannot
lock the users out.  Each connection's time bounds are :mod:`imapd.connection`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import uuid
from contextlib import AsyncExitStack, closing
from typing import TYPE_CHECKING, Any

import click
from proxyprotocol.sock import SocketInfo
from pymap.context import connection_exit

from raftkv.cluster import CONFIG_ENV, split_addr
from raftkv.logs import setup_logging
from shards import Client
from shards.model import mailbox
from shards.model.apppasswords import KEY_PURPOSE as APP_PASSWORD_KEY
from shards.model.ratelimit import Limits
from shards.model.registry import Heartbeat
from shards.peers import ConnectionGate, address_key, tls_context
from shards.readonly import fallback_for
from shards.service import run_service

from .cache import FolderRecords
from .config import ImapConfig
from .connection import BoundedConnection, Hangup
from .login import Login
from .metrics import CLOSED, OPEN, SESSIONS
from .session import session_factory
from .settings import ImapdSettings
from .state import ImapState
from .store import StoreCalls

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

log = logging.getLogger("imapd.server")  # also under "python -m"

TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
EVICTED = b"* BYE [UNAVAILABLE] Too many connections, closing this one (not logged in)\r\n"
START_TIMEOUT = 10.0  # seconds for the listeners to open


class _Tracked:
    """A connection as the gate sees it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.state: ImapState | None = None

    def evictable(self) -> bool:
        return self.state is None or not self.state.logged_in

    def evict(self) -> None:
        CLOSED.labels("evicted").inc()
        if not self.writer.is_closing():
            self.writer.write(EVICTED)
            self.writer.close()


class Listener:
    """One listening address: its pymap settings, its gate, and a connection's life."""

    def __init__(self, addr: str, config: ImapConfig, login: Login, failures_allowed: int,
                 tls: ssl.SSLContext | None) -> None:
        self.addr = addr
        self.config = config
        self.login = login
        self.gate = ConnectionGate(config.settings.limits)
        self._failures_allowed = failures_allowed
        self._tls = tls
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        host, port = split_addr(self.addr)
        limits = self.config.settings.limits
        self.server = await asyncio.start_server(
            self.serve, host, port, ssl=self._tls, limit=limits.max_line,
            ssl_handshake_timeout=limits.line_timeout if self._tls else None,
            reuse_address=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tracked = _Tracked(writer)
        key = address_key(writer.get_extra_info("peername"))
        if not self.gate.enter(key, tracked):
            SESSIONS.labels("refused").inc()
            log.warning("refusing a connection from %s: too many connections", key)
            writer.write(TOO_MANY)
            writer.close()
            return
        SESSIONS.labels("accepted").inc()
        OPEN.inc()
        try:
            await self._run(reader, writer, tracked)
        except (Hangup, EOFError, ConnectionError, ssl.SSLError):
            pass  # the client left, or we closed it for a reason already logged
        except Exception:  # noqa: BLE001 - one connection's bug never stops the listener
            log.exception("a connection from %s failed", key)
        finally:
            self.gate.leave(tracked)
            OPEN.dec()
            writer.close()

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   tracked: _Tracked) -> None:
        info = SocketInfo.get(writer, None, unique_id=uuid.uuid4().bytes)
        state = ImapState(self.login, self.config, failures_allowed=self._failures_allowed)
        tracked.state = state
        connection = BoundedConnection(
            self.config.commands, self.config, reader, writer, info,
            limits=self.config.settings.limits, logged_in=lambda: state.logged_in)
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(connection))
            await connection.run(state)

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for tracked in self.gate.connections():  # Server.close_clients is 3.13's only
            tracked.writer.close()
        async with asyncio.timeout(START_TIMEOUT / 2):
            await self.server.wait_closed()


class ImapServer:
    """Both listeners, their event loop's thread, and the heartbeat.

    :param client: the store client; owned by the caller, not closed by :meth:`stop`.
    :param tls: the certificate's context; None: no STARTTLS and no TLS port.
    :raises ConfigError: the cluster file has no ``[imapd]`` section, or a bad one.
    """

    def __init__(self, cluster: ClusterConfig, client: Client, *,
                 tls: ssl.SSLContext | None = None) -> None:
        self.settings = s = ImapdSettings.from_cluster(cluster)
        auth_limits = Limits.from_table(cluster.table("auth"))  # shared with every door
        self.reads = fallback_for(client)
        self.calls = StoreCalls(self.reads)
        quota = mailbox.quota_setting(cluster.table("mail"))
        app_key = cluster.derive_key(APP_PASSWORD_KEY)  # as the portal's and smtpd's
        folders = FolderRecords()  # selected folders' records, shared by both listeners
        self.listeners: list[Listener] = []
        for addr, implicit in ((s.listen, False), (s.listen_tls, True)):
            if not addr:
                continue
            if implicit and tls is None:
                log.warning("no TLS certificate: the TLS port %s stays closed", addr)
                continue
            config = ImapConfig(s, tls=tls, implicit_tls=implicit)
            login = Login(self.calls, auth_limits, app_key, session_factory(
                config, self.calls, quota=quota, idle_poll=s.idle_poll, folders=folders))
            self.listeners.append(Listener(addr, config, login,
                                           auth_limits.failures_per_connection,
                                           tls if implicit else None))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="imapd-loop",
                                        daemon=True)
        self._heartbeat = Heartbeat(client, kind="imapd", name=s.name, addr=s.listen,
                                    info={"listen": s.listen, "listen_tls": s.listen_tls,
                                          "pid": os.getpid(), "host": socket.gethostname()})

    def start(self) -> None:
        """Start listening (raises OSError if a port is taken) and heartbeating."""
        self._thread.start()
        try:
            for listener in self.listeners:
                self._call(listener.open())
        except BaseException:
            self.stop()
            raise
        self._heartbeat.start()
        log.info("imapd %s listening on %s", self.settings.name,
                 ", ".join(listener.addr for listener in self.listeners))

    def stop(self) -> None:
        """Close the listeners and every connection, stop the heartbeat."""
        if self._thread.is_alive():
            for listener in self.listeners:
                try:
                    self._call(listener.close())
                except (OSError, TimeoutError):
                    log.warning("closing %s took too long", listener.addr)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
        self._heartbeat.stop()
        self.calls.close()
        self.reads.release()
        log.info("imapd %s stopped", self.settings.name)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_TIMEOUT)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              default=lambda: os.environ.get(CONFIG_ENV), show_default=f"${CONFIG_ENV}",
              help="The cluster file.")
@click.option("--tls-cert", envvar="RAFTCLOUD_IMAPD_TLS_CERT", default=None,
              type=click.Path(dir_okay=False), help="PEM certificate for STARTTLS and the "
              "TLS port.")
@click.option("--tls-key", envvar="RAFTCLOUD_IMAPD_TLS_KEY", default=None,
              type=click.Path(dir_okay=False), help="PEM private key for --tls-cert.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(config_path: str | None, tls_cert: str | None, tls_key: str | None,
         log_level: str) -> None:
    """Run the cluster's IMAP server."""
    setup_logging("imapd", log_level)
    # pymap logs every line of every session at DEBUG (passwords included): never on.
    logging.getLogger("pymap").setLevel(logging.INFO)
    run_service("raftcloud-imapd", config_path,
                lambda cluster, client: ImapServer(cluster, client,
                                                   tls=tls_context(tls_cert, tls_key)))


if __name__ == "__main__":
    main()

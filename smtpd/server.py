"""``raftcloud-smtpd``: the SMTP process -- inbound, submission and outbound delivery.

Runs an aiosmtpd :class:`~aiosmtpd.controller.Controller` (its own event loop
in its own thread) per listening port: inbound mail for our domains
(:mod:`smtpd.handler`, which authenticates mail from strangers:
:mod:`smtpd.authcheck`) and submission by our users over STARTTLS with AUTH
(:mod:`smtpd.submission`).  A worker thread delivers the outbound queue
(:mod:`smtpd.outbound`), DKIM-signed (:mod:`smtpd.dkimsign`).  The process
registers itself in the node registry, heartbeats, and stops cleanly on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import click
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from raftkv.cluster import CONFIG_ENV, split_addr
from raftkv.logs import setup_logging
from shards import Client
from shards.model.apppasswords import KEY_PURPOSE as APP_PASSWORD_KEY
from shards.model.dkimkeys import KEY_PURPOSE as DKIM_KEY
from shards.model.ratelimit import Limits
from shards.model.registry import Heartbeat
from shards.peers import ConnectionGate, tls_context
from shards.readonly import fallback_for
from shards.service import run_service

from .authcheck import AuthSettings
from .authdns import make_resolver
from .dkimsign import Signer
from .handler import InboundConfig, InboundHandler
from .limits import BoundedSession
from .outbound import OutboundConfig, OutboundWorker
from .settings import SmtpdSettings
from .submission import Authenticator, AuthFailureCap, SubmissionHandler

if TYPE_CHECKING:
    from raftkv.cluster import ClusterConfig

log = logging.getLogger("smtpd.server")  # also under "python -m"

STORE_THREADS = 8  # concurrent store calls; each SMTP session needs one only briefly
AUTH_THREADS = 8   # concurrent SPF/DKIM/DMARC checks; each may wait on DNS for a while


class SmtpServer:
    """Every listener and background thread of one smtpd process.

    :param client: the store client; owned by the caller, not closed by :meth:`stop`.
    :param hostname: our name in the SMTP greeting and in Received headers.
    :raises ConfigError: the cluster file has no ``[smtpd]`` section, or a bad one
        (:mod:`smtpd.settings`).
    """

    def __init__(self, cluster: ClusterConfig, client: Client, *,
                 hostname: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.settings = s = SmtpdSettings.from_cluster(cluster)
        self.hostname = hostname or s.hostname or socket.getfqdn()
        self.inbound_config = InboundConfig.from_cluster(cluster, s, self.hostname)
        self.limits = s.limits
        self.auth_limits = Limits.from_table(cluster.table("auth"))  # shared with the web login
        self._app_password_key = cluster.derive_key(APP_PASSWORD_KEY)  # as the portal's
        self._executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="smtpd-store")
        self._auth_executor = ThreadPoolExecutor(AUTH_THREADS, thread_name_prefix="smtpd-auth")
        auth = AuthSettings(make_resolver(s.resolver, lifetime=s.dns_timeout),
                            dns_timeout=s.dns_timeout, spf_timeout=s.spf_timeout) \
            if s.check_inbound_auth else None
        # The handlers' store: read-only while a group has lost its majority (shards.readonly).
        self.reads = fallback_for(client)
        host, port = split_addr(s.inbound)
        self.inbound = _Controller(
            InboundHandler(self.inbound_config, self.reads, executor=self._executor,
                           auth=auth, auth_executor=self._auth_executor),
            hostname=host, port=port, server_hostname=self.hostname, ident="raftcloud-smtpd",
            data_size_limit=self.inbound_config.max_message_size,
            gate=ConnectionGate(self.limits),  # caps and deadlines: smtpd.limits
            # 8BITMIME and SMTPUTF8 cost nothing here: we store bytes as received.
            enable_SMTPUTF8=True,
        )
        self.submission = self._submission_controller(client, tls)
        self.outbound = OutboundWorker(OutboundConfig(
            hostname=self.hostname, domains=self.inbound_config.domains, resolver=s.resolver,
            remote_port=s.remote_port, poll_interval=s.queue_poll, lease=s.queue_lease,
            retry_base=s.retry_base,
            max_attempts=s.max_attempts, greeting_timeout=s.greeting_timeout,
            allow_private=s.allow_private_exchangers),
            client, name=s.name,
            signer=Signer(client, cluster.derive_key(DKIM_KEY), self.inbound_config.domains,
                          s.dkim_selector))
        self._heartbeat = Heartbeat(client, kind="smtpd", name=s.name, addr=s.inbound,
                                    info={"inbound": s.inbound, "submission": s.submission,
                                          "pid": os.getpid(),
                                          "host": socket.gethostname()})

    def _submission_controller(self, client: Client,
                               tls: ssl.SSLContext | None) -> Controller | None:
        host, port = split_addr(self.settings.submission)
        plaintext = self.settings.plaintext_auth_on_loopback and _is_loopback(host)
        if tls is None and not plaintext:
            log.warning("no TLS certificate: the submission port %s stays closed",
                        self.settings.submission)
            return None
        return _Controller(
            SubmissionHandler(self.inbound_config, self.reads, executor=self._executor),
            hostname=host, port=port, server_hostname=self.hostname,
            ident="raftcloud-smtpd", data_size_limit=self.inbound_config.max_message_size,
            enable_SMTPUTF8=True, tls_context=tls, require_starttls=not plaintext,
            gate=ConnectionGate(self.limits),
            auth_required=True, auth_require_tls=not plaintext,
            auth_failures_allowed=self.auth_limits.failures_per_connection,
            authenticator=Authenticator(client, self.auth_limits,
                                        app_key=self._app_password_key))

    def start(self) -> None:
        """Start listening (raises OSError if the port is taken) and heartbeating."""
        self.inbound.start()
        if self.submission is not None:
            self.submission.start()
        self.outbound.start()
        self._heartbeat.start()
        log.info("smtpd %s listening on %s for %s", self.settings.name, self.settings.inbound,
                 ", ".join(self.inbound_config.domains))

    def stop(self) -> None:
        """Close the listeners, abort open sessions, stop the heartbeat."""
        self.inbound.stop(no_assert=True)
        if self.submission is not None:
            self.submission.stop(no_assert=True)
        self.outbound.stop()
        self._heartbeat.stop()
        self.reads.release()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._auth_executor.shutdown(wait=False, cancel_futures=True)
        log.info("smtpd %s stopped", self.settings.name)


MAX_LINE = 2 * 1024 * 1024  # bytes in one line; RFC 5321 4.5.3.1 asks for no limit at all


class _PendingAuth(NamedTuple):
    mechanism: str
    auth_data: Any


class _LenientSMTP(BoundedSession, AuthFailureCap, SMTP):
    """aiosmtpd's SMTP, with two changes (and the caps and deadlines of
    :class:`smtpd.limits.BoundedSession`).

    Lines may be longer than 1000 bytes: real mail has longer ones (RFC 5321
    4.5.3.1: "implementation techniques that impose no limits ... should be used").

    The authenticator runs in a thread.  aiosmtpd calls it synchronously on its
    event loop, and ours reads the store and verifies an argon2 hash (tens of
    milliseconds), which would stall every other session of this process -- a
    few clients guessing passwords would hold up all mail.  aiosmtpd's PLAIN and
    LOGIN exchanges stay as they are; only the check moves off the loop.
    """

    line_length_limit = MAX_LINE

    def _authenticate(self, mechanism: str, auth_data: Any) -> Any:
        return _PendingAuth(mechanism, auth_data)  # settled by _settle, off the loop

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._settle(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._settle(await super().auth_LOGIN(server, args))

    async def _settle(self, result: Any) -> AuthResult:
        if isinstance(result, _PendingAuth):
            return await asyncio.to_thread(SMTP._authenticate, self, *result)
        return result


class _Controller(Controller):
    """Our SMTP class, and quiet about AUTH without TLS: we allow that only on
    loopback and only when configured, and said so at start."""

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _LenientSMTP(self.handler, **self.SMTP_kwargs)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              default=lambda: os.environ.get(CONFIG_ENV), show_default=f"${CONFIG_ENV}",
              help="The cluster file.")
@click.option("--hostname", default=None, help="Our name in greetings and Received headers "
              "(default: this machine's FQDN).")
@click.option("--tls-cert", envvar="RAFTCLOUD_SMTPD_TLS_CERT", default=None,
              type=click.Path(dir_okay=False), help="PEM certificate for STARTTLS on submission.")
@click.option("--tls-key", envvar="RAFTCLOUD_SMTPD_TLS_KEY", default=None,
              type=click.Path(dir_okay=False), help="PEM private key for --tls-cert.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(config_path: str | None, hostname: str | None, tls_cert: str | None,
         tls_key: str | None, log_level: str) -> None:
    """Run the cluster's SMTP server: inbound, submission and outbound delivery."""
    setup_logging("smtpd", log_level)
    if logging.getLogger().level > logging.DEBUG:
        # aiosmtpd logs every command, addresses included, at INFO: keep that for debugging.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    run_service("raftcloud-smtpd", config_path,
                lambda cluster, client: SmtpServer(cluster, client, hostname=hostname,
                                                   tls=tls_context(tls_cert, tls_key)))


if __name__ == "__main__":
    main()

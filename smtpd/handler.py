"""The inbound SMTP handler: accept mail for local accounts, refuse everything else.

An aiosmtpd handler object: one ``handle_<VERB>`` coroutine per protocol event,
each returning the reply line [aiosmtpd ``handlers.py``].  Recipients are
checked at RCPT time, so a sending MTA learns about an unknown user from its
own 550 (and bounces) instead of us having to generate a bounce later.

Store calls block, so they run in a thread pool; the event loop only ever
waits on them.  Every store failure becomes a reply in :func:`_store_reply`,
the one place that maps our error hierarchy onto SMTP codes.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from raftkv.errors import ConfigError, RaftKVError, TooLarge, UnavailableError
from shards.model import accounts, mailbox

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from raftkv.cluster import ClusterConfig
    from shards import Client

log = logging.getLogger(__name__)

T = TypeVar("T")

RELAY_DENIED = "550 5.7.1 Relaying denied"
NO_SUCH_USER = "550 5.1.1 No such user"
BAD_ADDRESS = "553 5.1.3 Bad recipient address syntax"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_BIG = "552 5.3.4 Message too big for system"
TRY_LATER = "451 4.3.0 Try again later"


@dataclass(frozen=True)
class InboundConfig:
    """What the inbound handler accepts."""

    domains: tuple[str, ...]              # mail domains we are the final destination for
    hostname: str = "localhost"           # our name in the greeting and Received headers
    max_message_size: int = 25 * 1024 * 1024  # bytes of DATA; above it, 552
    max_recipients: int = 100             # RFC 5321 §4.5.3.1.8: accept at least 100

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig, hostname: str) -> InboundConfig:
        config = cls(domains=tuple(d.lower().rstrip(".") for d in cluster.domains),
                     hostname=hostname)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.domains:
            raise ConfigError("smtpd needs at least one mail domain (cluster.domains)")
        if any(d != d.lower() for d in self.domains):
            raise ConfigError("mail domains must be given in lowercase")
        if self.max_message_size < 1 or self.max_recipients < 1:
            raise ConfigError("smtpd size and recipient limits must be positive")


class Rejected(Exception):
    """A command is refused; ``reply`` is the SMTP reply line to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def local_user(address: str, domains: tuple[str, ...]) -> str:
    """The account name that a recipient address delivers to.

    Pure syntax and domain checks; whether the account exists is asked of the
    store separately.  Names are lowercase, so the local part is matched
    case-insensitively.

    :raises Rejected: with 550 5.7.1 for a domain that is not ours (relaying),
        550 5.1.1 for a local part that cannot be an account name.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        # RFC 5321 §4.5.1: "postmaster" without a domain must be accepted.
        if address.lower() != "postmaster" or not domains:
            raise Rejected(BAD_ADDRESS)
        local, domain = address, domains[0]
    if not local or not domain:
        raise Rejected(BAD_ADDRESS)
    if domain.lower().rstrip(".") not in domains:
        raise Rejected(RELAY_DENIED)
    user = local.lower()
    if not accounts.valid_username(user):
        raise Rejected(NO_SUCH_USER)
    return user


def received_header(session: Session, config: InboundConfig, recipient: str) -> bytes:
    """The trace headers we prepend as the final delivery MTA (RFC 5321 §4.4)."""
    peer_ip = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    helo = _printable(session.host_name or "unknown")
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {config.hostname} (raftcloud-smtpd) with {protocol} id {secrets.token_hex(8)}\r\n"
        f"\tfor <{_printable(recipient)}>; {email.utils.formatdate(localtime=True)}\r\n"
    ).encode("utf-8", "replace")


def _printable(text: str, limit: int = 255) -> str:
    # Client-supplied names go into a header: no control characters, no endless lines.
    return "".join(ch for ch in text if ch.isprintable())[:limit]


def _store_reply(exc: BaseException) -> str:
    """The SMTP reply for a failed store call (the one mapping of errors to SMTP)."""
    if isinstance(exc, TooLarge):
        return TOO_BIG
    if isinstance(exc, UnavailableError):
        log.warning("store unavailable, answering 451: %s", exc)
    elif isinstance(exc, RaftKVError):
        log.error("store error, answering 451: %r", exc)
    else:
        log.error("unexpected error, answering 451", exc_info=exc)
    # Temporary in every case: the sender keeps the message and retries, which
    # is the safe outcome for anything that is our fault rather than theirs.
    return TRY_LATER


class InboundHandler:
    """aiosmtpd handler for port 2525: local delivery only, no relaying.

    :param executor: runs the blocking store calls; None means the loop's default.
    """

    def __init__(self, config: InboundConfig, client: Client, *,
                 executor: Executor | None = None) -> None:
        self.config = config
        self._client = client
        self._executor = executor

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except Exception as exc:  # noqa: BLE001 - mapped to a reply, never to a dropped session
            raise Rejected(_store_reply(exc)) from exc

    async def handle_exception(self, error: Exception) -> str:
        """A bug of ours: log it, and tell the client only to try again later."""
        log.error("internal error in an SMTP session", exc_info=error)
        return "451 4.3.0 Internal error, try again later"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope,
            address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            user = local_user(address, self.config.domains)
            if not await self._run(accounts.user_exists, self._client, user):
                raise Rejected(NO_SUCH_USER)
        except Rejected as exc:
            log.info("RCPT %r from %s refused: %s", address, session.peer, exc.reply)
            return exc.reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if len(content) > self.config.max_message_size:
            return TOO_BIG  # aiosmtpd enforces its own limit too; this guards a misconfiguration
        # Several addresses may name one account (Bob@ and bob@): deliver once per account.
        recipients = {}
        for address in envelope.rcpt_tos:
            recipients.setdefault(local_user(address, self.config.domains), address)
        return_path = f"Return-Path: <{_printable(envelope.mail_from or '')}>\r\n".encode()
        ids = []
        try:
            for user, address in recipients.items():
                raw = return_path + received_header(session, self.config, address) + content
                ids.append(await self._run(mailbox.deliver, self._client, user, raw))
        except Rejected as exc:
            # Copies already stored stay; the sender's retry is deduplicated by Message-ID.
            log.info("DATA from %s for %d recipient(s) refused after %d: %s",
                     session.peer, len(recipients), len(ids), exc.reply)
            return exc.reply
        log.info("delivered %d bytes from <%s> to %s as %s", len(content),
                 envelope.mail_from, ", ".join(recipients), ", ".join(ids))
        return "250 2.0.0 OK: delivered"

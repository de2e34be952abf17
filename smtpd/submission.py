"""The submission handler (port 2587): mail from our own users, to anyone.

A mail client (Thunderbird, smtplib) connects, upgrades with STARTTLS, logs
in with AUTH PLAIN or LOGIN against the portal's accounts, and sends.  The
envelope sender must be one of the user's own addresses; local recipients must
exist; remote recipients go to the outbound queue.  The message gets a
Message-ID and a Date when the client left them out (RFC 6409 §8), and a
Received header; then :func:`shards.model.outbound.submit` stores every copy.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

from shards.model import accounts, apppasswords, outbound, ratelimit, sendlimit

from .handler import InboundHandler, local_user, received_header, size_option
from .replies import (
    AUTH_UNAVAILABLE,
    BAD_ADDRESS,
    NO_SUCH_USER,
    TOO_BIG,
    TOO_MANY_RECIPIENTS,
    Rejected,
    smtp_reply,
)

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

NOT_YOURS = "553 5.7.1 Sender address not owned by the authenticated user"
AUTH_FIRST = "530 5.7.0 Authentication required"
# Says that a limit holds, nothing about the password: it was not checked.
AUTH_LIMITED = "454 4.7.0 Too many failed authentication attempts, try again later"
AUTH_CLOSING = "421 4.7.0 Too many failed authentication attempts, closing connection"
# The account password was right, but with two-factor sign-in on it must not be
# enough: a mail client cannot type a code, so it needs an app password.
AUTH_NEEDS_APP_PASSWORD = ("535 5.7.8 Two-factor sign-in is on: use an app password "
                           "from the Security page")
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+|[^@\s<>]+@[^@\s<>.]+")


class Authenticator:
    """aiosmtpd's authenticator: PLAIN and LOGIN against portal accounts and app passwords.

    Every check goes through :func:`shards.model.apppasswords.check_credential`,
    which takes the slots of the limiter the web login uses
    (:func:`shards.model.ratelimit.check_password`), so guesses count against
    the same account and address however they are split between the protocols,
    and a locked account is locked here too.  An app password is always
    accepted; the account password only while the user has two-factor sign-in
    off (else it would skip the second factor).  A check costs a few store round
    trips and at most one argon2 verification (tens of milliseconds), so the
    server runs it in a thread, off the event loop (``smtpd.server._LenientSMTP``).

    :param app_key: the HMAC key of app passwords
        (``cluster.derive_key(apppasswords.KEY_PURPOSE)``); without it no app
        password is accepted (and still no bare password with two-factor on).
    """

    def __init__(self, client: Any, limits: ratelimit.Limits | None = None, *,
                 app_key: bytes | None = None) -> None:
        self._client = client
        self.limits = limits or ratelimit.Limits()
        # A random key when none is given: no stored app password can match it.
        self._app_key = app_key or secrets.token_bytes(32)

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace").strip().lower()
        user = user.partition("@")[0]  # "alice" or "alice@raftcloud.test"
        password = auth_data.password.decode("utf-8", "replace")
        peer = session.peer
        address = str(peer[0] if isinstance(peer, tuple) and peer else peer)
        try:
            checked = apppasswords.check_credential(self._client, user, password, address,
                                                    self.limits, self._app_key)
        except Exception:  # noqa: BLE001 - RFC 4954's 454 for any failure of the check (smtpd.replies)
            log.warning("AUTH for %r: store unavailable", user, exc_info=True)
            # handled=False: aiosmtpd sends the message only for an unhandled failure.
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if checked.limited:
            log.info("AUTH %s for %r from %s refused: limited for %.0f s", mechanism, user,
                     address, checked.retry_after)
            return AuthResult(success=False, handled=False, message=AUTH_LIMITED)
        if checked.needs_app_password:
            log.info("AUTH %s for %r from %s refused: account password with two-factor on",
                     mechanism, user, address)
            return AuthResult(success=False, handled=False, message=AUTH_NEEDS_APP_PASSWORD)
        if not checked.right:
            log.info("AUTH %s failed for %r from %s", mechanism, user, address)
            return AuthResult(success=False, handled=False)
        if checked.app_password is not None:
            log.info("AUTH %s for %r from %s with app password %r", mechanism, user, address,
                     checked.app_password)
        return AuthResult(success=True, auth_data=user)


# The mixin extends SMTP's methods through super(): mypy checks it against SMTP.
if TYPE_CHECKING:
    _SMTPBase = SMTP
else:
    _SMTPBase = object


class AuthFailureCap(_SMTPBase):
    """Mixin for aiosmtpd's ``SMTP`` class (before it in the bases): after
    ``auth_failures_allowed`` failed AUTH commands, one connection gets ``421`` and is closed.

    The store-wide limits bound guesses per account and address over time;
    this bounds what one connection may try before it must reconnect (and pass
    the connection limits again), as Postfix's ``smtpd_hard_error_limit`` does.
    """

    def __init__(self, *args: Any, auth_failures_allowed: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._auth_failures_allowed = auth_failures_allowed
        self._auth_failures = 0

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command name
        await super().smtp_AUTH(arg)
        session = self.session
        if session is None or session.authenticated:
            return
        self._auth_failures += 1
        if self._auth_failures >= self._auth_failures_allowed:
            log.info("closing the connection of %s after %d failed AUTH commands",
                     session.peer, self._auth_failures)
            await self.push(AUTH_CLOSING)
            # As aiosmtpd's own QUIT ends a session (both are set while a command runs).
            if self._handler_coroutine is not None:
                self._handler_coroutine.cancel()
            if self.transport is not None:
                self.transport.close()


class SubmissionHandler(InboundHandler):
    """aiosmtpd handler for the submission port; shares the inbound store plumbing."""

    @staticmethod
    def _user(session: Session) -> str | None:
        return session.auth_data if session.authenticated else None

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope,
            address: str, mail_options: list[str]) -> str:
        user = self._user(session)
        if user is None:
            return AUTH_FIRST
        try:
            if local_user(address, self.config.domains) != user:
                return NOT_YOURS
        except Rejected:
            return NOT_YOURS
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope,
            address: str, rcpt_options: list[str]) -> str:
        if self._user(session) is None:
            return AUTH_FIRST
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        if not _ADDRESS.fullmatch(address):
            return BAD_ADDRESS
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if domain in self.config.domains:
            try:
                name = local_user(address, self.config.domains)
                if not await self._run(accounts.user_exists, self._client, name):
                    return NO_SUCH_USER
                await self._check_room(name, size_option(envelope.mail_options))  # quota: 552
            except Exception as exc:  # noqa: BLE001 - every failure is a reply (smtpd.replies)
                return smtp_reply(exc)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = self._user(session)
        if user is None:
            return AUTH_FIRST
        content = envelope.original_content or b""
        if len(content) > self.config.max_message_size:
            return TOO_BIG
        raw = self._completed(content)
        raw = received_header(session, self.config, envelope.rcpt_tos[0]) + raw
        try:
            # The hourly caps of shards.model.sendlimit: 451 4.7.1, or 550 5.7.1 if hopeless.
            await self._run(sendlimit.charge, self._client, user, len(envelope.rcpt_tos),
                            self.config.send_limits)
            result = await self._run(functools.partial(
                outbound.submit, domains=self.config.domains, quota=self.config.mailbox_quota),
                self._client, user, envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        except Exception as exc:  # noqa: BLE001 - every failure is a reply (smtpd.replies)
            return smtp_reply(exc)
        log.info("submitted by %s: %d local, queued %s", user, len(result.local), result.queued)
        return "250 2.0.0 OK: queued" if result.queued else "250 2.0.0 OK: delivered"

    def _completed(self, content: bytes) -> bytes:
        """Add the Message-ID and Date a client left out (RFC 6409 §8.2, §8.3)."""
        head, sep, _ = content.partition(b"\r\n\r\n")
        if not sep:
            head, sep, _ = content.partition(b"\n\n")
        names = {line.split(b":", 1)[0].strip().lower()
                 for line in head.splitlines() if b":" in line and not line[:1].isspace()}
        extra = b""
        if b"message-id" not in names:
            extra += f"Message-ID: {email.utils.make_msgid(domain=self.config.hostname)}\r\n".encode()
        if b"date" not in names:
            extra += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
        return extra + content

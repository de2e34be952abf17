"""LOGIN and AUTHENTICATE: the portal's accounts and app passwords, through the shared limiter.

pymap hands its login object the client's SASL credentials (pysasl's, from
``LOGIN`` or ``AUTHENTICATE PLAIN``/``LOGIN``); they are checked the way smtpd
checks SMTP AUTH (``smtpd/submission.py``): by
:func:`shards.model.apppasswords.check_credential`, which takes the slots of
the password-attempt limiter every door shares (so guesses over IMAP, SMTP and
the web count together, and only failures count), accepts an app password
always and the account password only while two-factor sign-in is off, and
refuses disabled accounts.  The check reads the store and may verify an argon2
hash (tens of milliseconds), so it runs in a worker thread, never on the event
loop.  It is read through the log or not at all
(:func:`shards.readonly.current_only`): a password checked against a stale copy
could be one changed since, so while the user's group has lost its majority
logging in is refused with ``NO [UNAVAILABLE]`` (sessions already open go on
reading, read-only).

The password travels inside pysasl's credentials object and reaches the check
through pysasl's own ``verify(identity)`` call; it is never logged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from pymap.context import socket_info
from pymap.exceptions import AuthorizationFailure, InvalidAuth, NotAllowedError, ResponseError
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.session import SessionInterface
from pymap.interfaces.token import TokenCredentials, TokensInterface
from pymap.parsing.response import ResponseCode, ResponseNo
from pymap.user import UserMetadata
from pysasl.creds.server import ServerCredentials

from raftkv.errors import RaftKVError, ReadOnly
from shards.model import apppasswords, ratelimit
from shards.readonly import current_only, observing

from .metrics import LOGIN_FAILURES
from .store import StoreCalls

log = logging.getLogger(__name__)

LIMITED = "Too many failed login attempts; try again later."
NEEDS_APP_PASSWORD = "Two-factor sign-in is on: use an app password from the Security page."
UNAVAILABLE = "Logging in is not possible right now; try again in a few minutes."
WRONG = "Wrong user name or password."

SessionFactory = Callable[[str], AbstractAsyncContextManager[SessionInterface]]


class LoginRefused(ResponseError):
    """A refusal with its own response code (RFC 5530) and sentence."""

    def __init__(self, code: bytes, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(tag, self.text.encode(), ResponseCode.of(self.code))


def user_name(authcid: str) -> str:
    """``alice`` for ``alice``, ``Alice`` or ``alice@raftcloud.test`` (as smtpd's AUTH)."""
    return authcid.strip().lower().partition("@")[0]


class _Check:
    """A pysasl identity whose secret comparison is our credential check (in a thread)."""

    def __init__(self, calls: StoreCalls, user: str, address: str, limits: ratelimit.Limits,
                 app_key: bytes) -> None:
        self._calls, self.user, self.address = calls, user, address
        self._limits, self._app_key = limits, app_key
        self.checked: apppasswords.Checked | None = None

    @property
    def authcid(self) -> str:
        return self.user

    def compare_authcid(self, authcid: str) -> bool:
        return True  # the name was normalised already; the secret decides

    def compare_secret(self, secret: str) -> bool:
        with observing(), current_only():
            self.checked = apppasswords.check_credential(
                self._calls.store, self.user, secret, self.address, self._limits,
                self._app_key)
        return self.checked.right

    def get_clear_secret(self) -> str | None:
        return None


class Login(LoginInterface):
    """pymap's login object for our accounts.

    :param calls: the store, and the threads that call it.
    :param app_key: the HMAC key of app passwords (``cluster.derive_key(apppasswords.KEY_PURPOSE)``).
    :param sessions: makes the IMAP session of a user who logged in.
    """

    def __init__(self, calls: StoreCalls, limits: ratelimit.Limits, app_key: bytes | None,
                 sessions: SessionFactory) -> None:
        self._calls = calls
        self._limits = limits
        self._app_key = app_key or secrets.token_bytes(32)  # none given: no app password fits
        self._sessions = sessions

    @property
    def tokens(self) -> TokensInterface:
        raise NotImplementedError("raftcloud-imapd has no login tokens")

    async def authenticate(self, credentials: ServerCredentials) -> Identity:
        address = _peer_address()
        if isinstance(credentials, TokenCredentials):
            raise InvalidAuth(WRONG)
        check = _Check(self._calls, user_name(credentials.authcid), address, self._limits,
                       self._app_key)
        try:
            right = await self._calls.run(credentials.verify, check)
        except ReadOnly:
            LOGIN_FAILURES.labels("read_only").inc()
            log.info("login for %r from %s refused: its group is read-only", check.user, address)
            raise LoginRefused(b"UNAVAILABLE", UNAVAILABLE) from None
        except RaftKVError:
            LOGIN_FAILURES.labels("unavailable").inc()
            log.warning("login for %r from %s: store unavailable", check.user, address,
                        exc_info=True)
            raise LoginRefused(b"UNAVAILABLE", UNAVAILABLE) from None
        checked = check.checked
        if right and checked is not None and checked.right:
            if checked.app_password is not None:
                log.info("login for %r from %s with app password %r", check.user, address,
                         checked.app_password)
            else:
                log.info("login for %r from %s", check.user, address)
            return Identity(check.user, self._sessions)
        if checked is not None and checked.limited:
            LOGIN_FAILURES.labels("limited").inc()
            log.info("login for %r from %s refused: limited for %.0f s", check.user, address,
                     checked.retry_after)
            raise LoginRefused(b"UNAVAILABLE", LIMITED)
        if checked is not None and checked.needs_app_password:
            LOGIN_FAILURES.labels("app_password_needed").inc()
            log.info("login for %r from %s refused: account password with two-factor on",
                     check.user, address)
            raise LoginRefused(b"AUTHENTICATIONFAILED", NEEDS_APP_PASSWORD)
        LOGIN_FAILURES.labels("wrong").inc()
        log.info("login failed for %r from %s", check.user, address)
        raise InvalidAuth(WRONG)

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> Identity:
        if not isinstance(authenticated, Identity) or user_name(authzid) != authenticated.name:
            raise AuthorizationFailure()  # one user may not act as another
        return authenticated


class Identity(IdentityInterface):
    """A user who logged in: opens their session; account changes belong to the portal."""

    def __init__(self, name: str, sessions: SessionFactory) -> None:
        self._name = name
        self._sessions = sessions

    @property
    def name(self) -> str:
        return self._name

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    def new_session(self) -> AbstractAsyncContextManager[SessionInterface]:
        return self._sessions(self._name)

    async def new_token(self, *, expiration: datetime | None = None) -> str | None:
        return None

    async def get(self) -> UserMetadata:
        raise NotAllowedError("Accounts are managed on the web pages.")

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotAllowedError("Accounts are managed on the web pages.")

    async def delete(self) -> None:
        raise NotAllowedError("Accounts are managed on the web pages.")


def _peer_address() -> str:
    try:
        info: Any = socket_info.get()
        return str(info.peername_ip or info.peername_str or "?")
    except LookupError:
        return "?"

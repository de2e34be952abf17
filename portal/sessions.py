"""Browser sessions kept in the store, and the CSRF tokens derived from them.

Every client gets a random ``sid`` cookie on its first response; that costs no
store write, so the balancer's probes and anonymous visitors leave nothing
behind.  Logging in writes the session cell and *rotates* the sid, so a sid
planted by an attacker before login (session fixation) is never the one that
becomes authenticated.  Because the session lives in the store, any frontend
can serve any client, and a frontend crash logs nobody out.

Layout (the user's index shares the user's shard through the ``{user}`` tag)::

    session/<sha256(sid)>   "s"        msgpack {user, admin, created, expires}
    {<user>}/sessions       "s:<hash>" msgpack expires   (for "log out my other sessions")

Rows are named by a hash of the sid, not the sid itself, so reading the store
(the admin console's raw browser, a backup) does not hand out live logins.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from raftkv.errors import UnavailableError

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from shards import Client

COOKIE = "sid"
SESSION_COL = "s"
# secrets.token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet;
# anything else in the cookie is garbage and gets replaced.
_SID_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_sid() -> str:
    """A fresh, unguessable session id (256 bits)."""
    return secrets.token_urlsafe(32)


def csrf_token(secret: bytes, sid: str) -> str:
    """The CSRF token for forms served to the holder of ``sid``.

    An attacker's page can make the browser send the cookie but cannot read
    it, so it cannot compute this; a new sid (login, logout) invalidates
    tokens of old pages.
    """
    return hmac.new(secret, b"csrf\0" + sid.encode("ascii"), hashlib.sha256).hexdigest()


def check_csrf(secret: bytes, sid: str, token: str | None) -> bool:
    """True if ``token`` is the CSRF token of ``sid`` (compared in constant time).

    Never raises: the sid and token come straight from the request, and
    anything that is not ASCII (which :func:`hmac.compare_digest` refuses
    with a TypeError) simply is not the token.
    """
    if not sid or not token or not _SID_RE.fullmatch(sid):
        return False
    return hmac.compare_digest(csrf_token(secret, sid).encode("ascii"),
                               str(token).encode("utf-8", "surrogatepass"))


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii")).hexdigest()


def session_row(sid: str) -> str:
    return _row_of_key(_key(sid))


def _row_of_key(key: str) -> str:
    return f"session/{key}"


def index_row(user: str) -> str:
    return f"{{{user}}}/sessions"


@dataclass
class Session:
    """One request's view of its session; ``user`` is None when not logged in."""

    sid: str
    user: str | None = None
    admin: bool = False
    send_cookie: bool = False  # the response must (re)set the cookie

    @property
    def logged_in(self) -> bool:
        return self.user is not None


class SessionStore:
    """Loads, creates and ends sessions; one per app, shared by all its threads."""

    def __init__(self, client: Callable[[], Client], *, ttl: float, secure: bool) -> None:
        self._client = client  # a getter: the store client is made lazily, after fork
        self.ttl = ttl
        self.secure = secure

    def unchecked(self, cookie: str | None) -> Session:
        """An anonymous session keeping the cookie's sid, without a store read (error pages)."""
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return Session(new_sid(), send_cookie=True)
        return Session(cookie)

    def load(self, cookie: str | None) -> Session:
        """The session named by the request's cookie, or a fresh anonymous one."""
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return self.unchecked(None)
        cell = self._client().get(session_row(cookie), SESSION_COL)
        if cell is None:
            return Session(cookie)
        data = msgpack.unpackb(cell.value, raw=False)
        if data.get("expires", 0) < time.time():
            try:
                self._forget(cookie, data.get("user"))
            except UnavailableError:
                pass  # expiry holds whether or not the clean-up happens now
            return Session(cookie)
        return Session(cookie, user=data["user"], admin=bool(data.get("admin")))

    def login(self, old: Session, user: str, *, admin: bool) -> Session:
        """Write a new session for ``user`` under a new sid; the old sid is dropped."""
        if old.logged_in:
            self._forget(old.sid, old.user)
        session = Session(new_sid(), user=user, admin=admin, send_cookie=True)
        now = time.time()
        expires = now + self.ttl
        record = {"user": user, "admin": admin, "created": now, "expires": expires}
        client = self._client()
        self._prune(user, now)
        # Index first: a session missing from the index could outlive a
        # password change; an index entry without a session is harmless.
        client.put(index_row(user), f"s:{_key(session.sid)}", msgpack.packb(expires))
        client.put(session_row(session.sid), SESSION_COL, msgpack.packb(record))
        return session

    def logout(self, session: Session) -> Session:
        """End ``session`` in the store and hand the browser a new anonymous sid."""
        if session.logged_in:
            self._forget(session.sid, session.user)
        return Session(new_sid(), send_cookie=True)

    def revoke_all(self, user: str) -> None:
        """End every session of ``user`` (after a password change)."""
        client = self._client()
        for column in client.get_row(index_row(user), prefix="s:"):
            client.delete(_row_of_key(column[2:]), SESSION_COL)
            client.delete(index_row(user), column)

    def _prune(self, user: str, now: float) -> None:
        # Browsers that never log out leave expired entries behind; without
        # this the index would grow by one per login forever.
        client = self._client()
        for column, cell in client.get_row(index_row(user), prefix="s:").items():
            if msgpack.unpackb(cell.value) < now:
                client.delete(_row_of_key(column[2:]), SESSION_COL)
                client.delete(index_row(user), column)

    def set_cookie(self, response: Response, session: Session, *, https: bool = False,
                   domain: str | None = None) -> None:
        """Send the sid cookie if this response must carry it.

        Secure when the cluster's scheme is https or this request came over
        https; ``domain`` shares it among frontends on several hosts.
        """
        if session.send_cookie:
            # The cookie lives as long as a login may; the store, not the
            # browser, decides when a login really ends.
            response.set_cookie(COOKIE, session.sid, max_age=math.ceil(self.ttl), httponly=True,
                                samesite="Lax", secure=self.secure or https, domain=domain,
                                path="/")

    def _forget(self, sid: str, user: str | None) -> None:
        client = self._client()
        client.delete(session_row(sid), SESSION_COL)
        if user:
            client.delete(index_row(user), f"s:{_key(sid)}")

"""Browser sessions kept in the store, and the CSRF tokens derived from them.

Every client gets a random ``sid`` cookie on its first response; that costs no
store write, so the balancer's probes and anonymous visitors leave nothing
behind.  Logging in writes the session cell and *rotates* the sid, so a sid
planted by an attacker before login (session fixation) is never the one that
becomes authenticated.  Because the session lives in the store, any frontend
can serve any client, and a frontend crash logs nobody out.

A login ends ``ttl`` seconds after it began, or earlier once it has been
unused for ``idle`` seconds.  "Last seen" is its own column, written by a
:class:`SeenRecorder` thread at most once per ``seen_every`` (a minute), so
a page costs the one read that loads the session and no write.  The cells
expire in the store (a write's ``ttl``) a minute after the session would end
-- each "last seen" write renews the record's -- so the store forgets
abandoned sessions without a sweeper; :meth:`SessionStore.load` still decides
the end itself, to the second.

A worker keeps the session's two cells in its cell cache (:mod:`.pagestore`)
and sends their versions with the page's first read: an unchanged session
costs no bytes, and one ended anywhere is absent in that very answer.

Layout (the user's index shares the user's shard through the ``{user}`` tag)::

    session/<sha256(sid)>   "s"        msgpack {user, admin, created, expires, addr, agent, iv}
                            "seen"     msgpack time of the last request (absent: never since login)
    {<user>}/sessions       "s:<hash>" msgpack expires   (for "log out my other sessions")
                            "about:<hash>" msgpack {c: created, a: addr, g: agent}
                            "seen:<hash>" msgpack time of the last recorded request

The index says all the sessions page shows, so that page reads one row, not
one per session (an entry from before issue 16 has no ``about:``: its row is
read); ``s:`` keeps its format, so frontends of the release before read the
index as they did.  ``iv`` is the version of the session's ``s:`` cell, on
which the last-seen copy in the index is conditioned (it never brings back an
ended session's entry).

Rows are named by a hash of the sid, not the sid itself, so reading the store
(the admin console's raw browser, a backup) does not hand out live logins.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from raftkv.background import BackgroundLoop
from raftkv.errors import ConditionFailed, RaftKVError, UnavailableError

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import Cell, KeyValueStore

    from .pagestore import Key, PageStore

log = logging.getLogger(__name__)

COOKIE = "sid"
SESSION_COL = "s"
SEEN_COL = "seen"
DEFAULT_IDLE = 2 * 24 * 3600  # seconds without a request after which a login ends
SEEN_EVERY = 60.0             # record "last seen" at most this often per session
# Seconds the store keeps a session's cells after it ends: the frontends' and the
# store's clocks differ a little, and load() decides the end exactly anyway.
STORE_SLACK = 60.0
_AGENT_CHARS = 120            # of the User-Agent kept to describe a session
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


INDEX_PREFIX = "s:"
INDEX_ABOUT_PREFIX = "about:"
INDEX_SEEN_PREFIX = "seen:"


def session_key(sid: str) -> str:
    """The name a session goes by in the store and on the sessions page (not the sid)."""
    return _key(sid)


def agent_summary(agent: str | None) -> str:
    """What a sessions page shows of a User-Agent: printable, and short."""
    text = "".join(c for c in (agent or "") if c.isprintable())
    return text[:_AGENT_CHARS] or "unknown client"


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


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's sessions, as the sessions page lists it."""

    key: str        # session_key(sid): names it in forms without revealing the sid
    created: float
    seen: float     # last request (the login itself until the first recorded one)
    addr: str
    agent: str
    current: bool   # the session of the browser asking


class SessionStore:
    """Loads, creates and ends sessions; one per app, shared by all its threads."""

    def __init__(self, client: Callable[[], PageStore], *, ttl: float, secure: bool,
                 idle: float = DEFAULT_IDLE) -> None:
        self._client = client  # a getter: the store client is made lazily, after fork
        self.ttl = ttl
        self.idle = idle
        self.secure = secure
        # An active session must be recorded well before it could look idle.
        self.seen_every = min(SEEN_EVERY, idle / 10)
        self.recorder = SeenRecorder(client)

    def _lifetime(self, expires: float, seen: float) -> float:
        """The store ttl of a session last seen at ``seen``, from now: until it would
        end (idle or at ``expires``, whichever comes first) and the slack."""
        now = time.time()
        return max(min(expires, seen + self.idle) - now, 0.0) + STORE_SLACK

    def unchecked(self, cookie: str | None) -> Session:
        """An anonymous session keeping the cookie's sid, without a store read (error pages)."""
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return Session(new_sid(), send_cookie=True)
        return Session(cookie)

    def keys(self, cookie: str | None) -> list[Key]:
        """The cells :meth:`load` needs for ``cookie`` (none for a cookie not of ours)."""
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return []
        row = session_row(cookie)
        return [(row, SESSION_COL), (row, SEEN_COL)]

    def cached_user(self, cookie: str | None) -> str | None:
        """Whose session this worker last saw ``cookie`` to be -- a guess, no read: it
        only says which cells to confirm along with the session's own."""
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return None
        cell = self._client().cache.peek((session_row(cookie), SESSION_COL))
        if cell is None:
            return None
        try:
            user = msgpack.unpackb(cell.value, raw=False).get("user")
        except (ValueError, AttributeError, msgpack.UnpackException):
            return None
        return user if isinstance(user, str) else None

    def load(self, cookie: str | None) -> Session:
        """The session named by the request's cookie, or a fresh anonymous one.

        One store read (the session's two cells, confirmed by version when this
        worker has them: :mod:`.pagestore`), often sent with the page's own.  A
        login past its expiry or idle for longer than ``idle`` is ended here.
        """
        if cookie is None or not _SID_RE.fullmatch(cookie):
            return self.unchecked(None)
        row = session_row(cookie)
        client = self._client()
        client.confirm(self.keys(cookie))
        cell = client.found[(row, SESSION_COL)]
        if cell is None:
            return Session(cookie)
        data = msgpack.unpackb(cell.value, raw=False)
        seen_cell = client.found[(row, SEEN_COL)]
        seen = _seen_time(seen_cell, data)
        now = time.time()
        if data.get("expires", 0) < now or now - seen > self.idle:
            try:
                self._forget(cookie, data.get("user"))
            except UnavailableError:
                pass  # expiry holds whether or not the clean-up happens now
            return Session(cookie)
        if now - seen >= self.seen_every:
            self.recorder.note(row, cell.version, seen_cell.version if seen_cell else 0,
                               cell.value, self._lifetime(data.get("expires", 0), now),
                               user=data["user"], index_version=int(data.get("iv", 0)))
        return Session(cookie, user=data["user"], admin=bool(data.get("admin")))

    def login(self, old: Session, user: str, *, admin: bool, addr: str | None = None,
              agent: str | None = None) -> Session:
        """Write a new session for ``user`` under a new sid; the old sid is dropped.

        ``addr`` and ``agent`` (the client address and User-Agent) are kept only
        to let the user recognise the session on the sessions page.
        """
        if old.logged_in:
            self._forget(old.sid, old.user)
        session = Session(new_sid(), user=user, admin=admin, send_cookie=True)
        now = time.time()
        expires = now + self.ttl
        addr, agent = (addr or "")[:64], agent_summary(agent)
        client = self._client()
        self._prune(user, now)
        # Index first: a session missing from the index could outlive a
        # password change; an index entry without a session is harmless.
        key = _key(session.sid)
        index_version = client.mutate_row(
            index_row(user), [],
            [("put", INDEX_PREFIX + key, msgpack.packb(expires)),
             ("put", INDEX_ABOUT_PREFIX + key, msgpack.packb({"c": now, "a": addr, "g": agent}))],
            ttl=self.ttl + STORE_SLACK)[INDEX_PREFIX + key]
        record = {"user": user, "admin": admin, "created": now, "expires": expires,
                  "addr": addr, "agent": agent, "iv": index_version}
        client.put(session_row(session.sid), SESSION_COL, msgpack.packb(record),
                   ttl=self._lifetime(expires, now))
        return session

    def logout(self, session: Session) -> Session:
        """End ``session`` in the store and hand the browser a new anonymous sid."""
        if session.logged_in:
            self._forget(session.sid, session.user)
        return Session(new_sid(), send_cookie=True)

    def revoke_all(self, user: str) -> None:
        """End every session of ``user`` (after a password change)."""
        self.revoke_others(user, keep=None)

    def revoke_others(self, user: str, keep: Session | None) -> int:
        """End every session of ``user`` except ``keep``; returns how many ended."""
        client = self._client()
        kept = _key(keep.sid) if keep is not None else None
        ended = 0
        for column in client.get_row(index_row(user), prefix="s:"):
            if column[2:] != kept:
                self._end_key(user, column[2:])
                ended += 1
        return ended

    def end(self, user: str, key: str) -> bool:
        """End the session ``key`` (a :func:`session_key`) if it is one of ``user``'s."""
        client = self._client()
        if client.get(index_row(user), f"s:{key}") is None:
            return False  # not this user's: the key came from a form, and forms lie
        self._end_key(user, key)
        return True

    def of_user(self, user: str, current: Session) -> list[SessionInfo]:
        """``user``'s live sessions, most recently seen first (expired ones are cleaned up)."""
        return self.described(user, current, self._client().get_row(index_row(user)))

    def described(self, user: str, current: Session, index: dict[str, Cell]
                  ) -> list[SessionInfo]:
        """:meth:`of_user` from the index row read already (the account page reads it
        together with its other cells); sessions indexed before issue 16 say less in
        the index, and only theirs are read from their own rows."""
        client = self._client()
        now, mine = time.time(), _key(current.sid)
        records: dict[str, tuple[dict[str, Any], Cell | None]] = {}
        legacy = []
        for column, cell in index.items():
            if not column.startswith(INDEX_PREFIX):
                continue
            key = column[len(INDEX_PREFIX):]
            about = index.get(INDEX_ABOUT_PREFIX + key)
            entry = _unpack(about.value) if about is not None else None
            if isinstance(entry, dict):
                records[key] = ({"user": user, "expires": _unpack(cell.value) or 0,
                                 "created": entry.get("c", 0), "addr": entry.get("a", ""),
                                 "agent": entry.get("g", "")},
                                index.get(INDEX_SEEN_PREFIX + key))
            else:
                legacy.append(key)
        if legacy:
            keys = [(_row_of_key(key), col) for key in legacy for col in (SESSION_COL, SEEN_COL)]
            client.confirm(keys)
            for key in legacy:
                record = client.found[(_row_of_key(key), SESSION_COL)]
                records[key] = (msgpack.unpackb(record.value, raw=False) if record else {},
                                client.found[(_row_of_key(key), SEEN_COL)])
        found = []
        for key, (data, seen_cell) in records.items():
            seen = _seen_time(seen_cell, data)
            if (data.get("user") != user or data.get("expires", 0) < now
                    or now - seen > self.idle):
                self._end_key(user, key)
                continue
            if key == mine:
                seen = now  # this very request
            found.append(SessionInfo(key=key, created=float(data.get("created", 0)), seen=seen,
                                     addr=str(data.get("addr", "")),
                                     agent=str(data.get("agent", "")), current=key == mine))
        return sorted(found, key=lambda info: (not info.current, -info.seen))

    def _prune(self, user: str, now: float) -> None:
        # Browsers that never log out leave expired entries behind; without
        # this the index would grow by one per login forever.
        client = self._client()
        for column, cell in client.get_row(index_row(user), prefix=INDEX_PREFIX).items():
            expires = _unpack(cell.value)
            if not isinstance(expires, (int, float)) or expires < now:
                self._end_key(user, column[len(INDEX_PREFIX):])

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

    def close(self) -> None:
        """Write the last-seen times still pending and stop the recorder (worker exit, tests)."""
        self.recorder.close()

    def _forget(self, sid: str, user: str | None) -> None:
        self._end_key(user, _key(sid))

    def _end_key(self, user: str | None, key: str) -> None:
        client = self._client()
        # Both columns in one step: a "seen" left behind would keep the row alive.
        client.mutate_row(_row_of_key(key), [], [("delete", SESSION_COL), ("delete", SEEN_COL)])
        if user:
            client.mutate_row(index_row(user), [], [("delete", INDEX_PREFIX + key),
                                                    ("delete", INDEX_ABOUT_PREFIX + key),
                                                    ("delete", INDEX_SEEN_PREFIX + key)])


def _unpack(value: bytes) -> Any:
    try:
        return msgpack.unpackb(value, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _seen_time(cell: Cell | None, record: dict) -> float:
    if cell is not None:
        try:
            return float(msgpack.unpackb(cell.value))
        except (ValueError, TypeError, msgpack.UnpackException):
            pass
    return float(record.get("created", 0))


class _Note(NamedTuple):
    """A use of a session waiting to be recorded."""

    session_version: int  # of the record, as the request read it
    seen_version: int     # of "last seen" (0: absent)
    when: float           # the time of the use
    record: bytes         # the session's record, written again with the new lifetime
    lifetime: float       # seconds both cells stay in the store from ``when``
    user: str             # whose index gets a copy of "last seen"
    index_version: int    # of the session's index cell (0: indexed before issue 16)


class SeenRecorder(BackgroundLoop):
    """Writes sessions' "last seen" times from a background thread of this process.

    Why a thread and not a write after the response (werkzeug's
    ``ClosingIterator`` callback): that write would still run on the worker
    thread that served the page, holding it (and a keep-alive connection's
    next request) for a store round trip; a thread writes outside every
    request, and many notes of one session in one second collapse into one
    write.  The write is a ``mutate_row`` conditioned on the versions the
    request read, so it never brings back an ended session, and of several
    frontends noting the same session at once only the first lands: "last
    seen" changes at most once per ``seen_every``.  It writes the session's
    record again too, so both cells' store lifetime (``ttl``) runs from this
    use.  Losing a pending note (a worker killed) only makes a session look a
    minute older.
    """

    FLUSH_EVERY = 1.0  # seconds between flushes
    MAX_PENDING = 10_000  # notes held at most; beyond it new ones wait for the next request

    def __init__(self, client: Callable[[], KeyValueStore]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pending: dict[str, _Note] = {}  # row -> its latest note
        self._pid = os.getpid()  # the process whose notes _pending holds
        self.writes = 0  # last-seen writes that landed (tests, diagnostics)
        super().__init__("session-seen", self.FLUSH_EVERY, first_delay=self.FLUSH_EVERY)

    def note(self, row: str, session_version: int, seen_version: int, record: bytes,
             lifetime: float, *, user: str = "", index_version: int = 0) -> None:
        """Remember that the session in ``row`` was used now (no I/O): its cells'
        versions as the request read them, its record, and its store ttl from now."""
        with self._lock:
            if self.stopping:
                return
            if os.getpid() != self._pid:  # a forked worker: the parent's notes are not its own
                self._pid, self._pending = os.getpid(), {}
            if row in self._pending or len(self._pending) < self.MAX_PENDING:
                self._pending[row] = _Note(session_version, seen_version, time.time(), record,
                                           lifetime, user, index_version)
        self.start()  # the thread, once per process (a forked worker starts its own)

    def flush(self) -> int:
        """Write every pending note now; returns how many writes landed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        client = self._client()
        landed = 0
        for row, note in pending.items():
            try:
                client.mutate_row(row, [("version", SESSION_COL, note.session_version),
                                        ("version", SEEN_COL, note.seen_version)],
                                  [("put", SEEN_COL, msgpack.packb(note.when)),
                                   ("put", SESSION_COL, note.record)],
                                  ttl=note.lifetime)
                landed += 1
                if note.index_version:
                    # The sessions page reads the index only: a copy there, on the
                    # condition that the session's index entry is the one it made.
                    key = row[len(_row_of_key("")):]
                    client.mutate_row(index_row(note.user),
                                      [("version", INDEX_PREFIX + key, note.index_version)],
                                      [("put", INDEX_SEEN_PREFIX + key, msgpack.packb(note.when))],
                                      ttl=note.lifetime)
            except ConditionFailed:
                pass  # ended meanwhile, or another frontend recorded it first
            except RaftKVError as exc:
                log.debug("last-seen of %s not recorded: %r", row, exc)
        with self._lock:
            self.writes += landed
        return landed

    def step(self) -> None:
        self.flush()

    def finish(self) -> None:
        self.flush()  # the notes taken since the last step

    def close(self) -> None:
        """Stop the thread, which writes the notes still pending as it ends."""
        self.stop()

"""WsgiDAV's lock storage on the store: a lock taken through web1 holds on web2.

WsgiDAV's ``LockManager`` decides who may lock and write (RFC 4918's rules) and asks
its storage for locks by token and by path; :class:`StoreLockStorage` is that storage,
on :mod:`shards.model.davlocks` (one row of locks per user, every change one
conditioned mutation, expired locks gone on read, timeouts capped at an hour, at most
1,000 locks per user).

Whose locks?  The storage interface names paths only (``get_lock_list(path)``), and
every user's drive is at the same ``/dav/`` URLs, so the storage learns the user
from the request: the app runs each WebDAV request inside :func:`user_scope` (or
wraps the WsgiDAV app in :class:`UserScope`, after authentication), and a storage
call outside a scope fails rather than guess.  The paths are WsgiDAV's lock roots:
the URL path as the client sees it, share prefix included.

Folders shared with the user (:mod:`.shared`) appear at paths of theirs but are the
owner's: the request's :class:`Mounts` say which prefix of the user's paths is which
folder of which owner, and locks there are kept in the *owner's* row under the owner's
own path (and handed back to WsgiDAV under the user's), so that the owner and the
recipient see one lock, and a lock of either blocks the other's writes.

Plugged in with WsgiDAV's config::

    "lock_storage": StoreLockStorage(client),
    "middleware_stack": [..., HTTPAuthenticator, UserScope, ..., RequestResolver],
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_LOCKED,
    HTTP_PRECONDITION_FAILED,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
    PRECONDITION_CODE_LockTokenMismatch,
)
from wsgidav.mw.base_mw import BaseMiddleware

from raftkv.errors import ConditionFailed
from shards.model import davlocks

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

# A user who holds at most this many locks has them read once per request.
FEW_LOCKS = 32


@dataclass(frozen=True)
class Mount:
    """A folder of another user's drive at a prefix of this user's paths (lock roots)."""

    owner: str   # whose lock row holds the locks below ``here``
    here: str    # the prefix in the request's paths (percent-encoded, no trailing slash)
    there: str   # the same folder in the owner's own paths ("" for the owner's root)

    def inner(self, path: str) -> str:
        """``path`` (at or below ``here``) as the owner's path."""
        return "/" + (self.there + path[len(self.here):]).strip("/")

    def outer(self, root: str) -> str:
        """A lock root of the owner's row as the request's path: one above the shared
        folder (a depth-infinity lock covering it) is seen as on the shared folder."""
        if not self.there:
            return self.here + ("" if root == "/" else root)
        if root == self.there or root.startswith(self.there + "/"):
            return self.here + root[len(self.there):]
        return self.here


class Mounts(Protocol):
    """What a request's lock storage asks about folders shared with its user."""

    def mount(self, path: str) -> Mount | None:
        """The mount ``path`` lies in (or is the root of), or None for the user's own."""

    def request_mounts(self) -> list[Mount]:
        """Where a token this request names may be kept: the mount of its own path."""


@dataclass
class _Scope:
    """One request's user, and the locks of each row it read, as read once by this
    request (None: too many to keep).  A request's own lock changes drop the copies;
    another frontend's change during the request is seen by the next request, and never
    by the conflict check of a create, which reads the store (davlocks.create)."""

    user: str
    mounts: Mounts | None = None
    rows: dict[str, list[davlocks.Lock] | None] = dataclasses.field(default_factory=dict)


# The user whose locks this request reads and writes; set by user_scope for one request.
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("dav_lock_scope",
                                                                       default=None)
# Where WsgiDAV's HTTPAuthenticator leaves the name it checked.
AUTH_USER = "wsgidav.auth.user_name"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@contextmanager
def user_scope(user: str) -> Iterator[None]:
    """Within this block, lock storage calls of this thread work on ``user``'s locks."""
    with _entered(_Scope(user)):
        yield


def current_user() -> str:
    """The user of the enclosing :func:`user_scope`; a 500 outside one (a wiring fault)."""
    return _current().user


def _current() -> _Scope:
    scope = _scope.get()
    if scope is None or not scope.user:
        raise DAVError(HTTP_INTERNAL_ERROR, "lock storage used outside a user scope")
    return scope


def _changed() -> None:
    """This request changed locks: its copies of them are out of date."""
    _current().rows.clear()


class UserScope(BaseMiddleware):
    """WSGI middleware for WsgiDAV's ``middleware_stack``, placed after the
    authenticator: runs the rest of the request, its response body included (WsgiDAV
    handles a request while its body is iterated), in the scope of the user the
    authenticator checked.  A request without one gets no scope (and no lock)."""

    def __init__(self, wsgidav_app: object, next_app: WsgiApp, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.next_app: WsgiApp = next_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        user = environ.get(AUTH_USER)
        if not user:
            return self.next_app(environ, start_response)
        return scoped(str(user), self.next_app, environ, start_response)


def scoped(user: str, app: WsgiApp, environ: dict[str, Any],
           start_response: StartResponse, mounts: Mounts | None = None) -> Iterator[bytes]:
    """Call ``app`` and iterate its answer with :func:`user_scope` around each step;
    ``mounts`` places the folders shared with ``user`` (see the module)."""
    scope = _Scope(user, mounts)
    with _entered(scope):
        body = app(environ, start_response)
    iterator = iter(body)
    try:
        while True:
            with _entered(scope):
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            with _entered(scope):
                close()


@contextmanager
def _entered(scope: _Scope) -> Iterator[None]:
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


class StoreLockStorage:
    """WsgiDAV's LockStorage interface (``wsgidav.lock_man.lock_storage``) on the store.

    Lock dictionaries are WsgiDAV's: root, type, scope, depth, owner (XML bytes),
    principal, timeout, expire, token.
    """

    def __init__(self, client: KeyValueStore) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "StoreLockStorage"

    def open(self) -> None:
        """Nothing to open: the store client is the app's."""

    def close(self) -> None:
        """Nothing to close: the app closes its store client."""

    def cleanup(self) -> None:
        """Nothing to do: each change purges a few expired locks (davlocks.PURGE_BATCH)."""

    def clear(self) -> None:
        """Remove every lock of the current user."""
        with _mapped():
            davlocks.clear(self._client, current_user())
        _changed()

    def _place(self, path: str) -> tuple[str, str, Mount | None]:
        """The row (its user) and the path in it that keep the locks of ``path``."""
        scope = _current()
        mount = scope.mounts.mount(path) if scope.mounts is not None else None
        if mount is None:
            return scope.user, path, None
        return mount.owner, mount.inner(path), mount

    def _find(self, token: str) -> tuple[str, davlocks.Lock | None, Mount | None]:
        """The row holding the live lock ``token``: the user's own, else the owner's of
        the shared folder the request's path is in."""
        scope = _current()
        with _mapped():
            lock = davlocks.get(self._client, scope.user, token)
            if lock is not None or scope.mounts is None:
                return scope.user, lock, None
            for mount in scope.mounts.request_mounts():
                lock = davlocks.get(self._client, mount.owner, token)
                if lock is not None:
                    return mount.owner, lock, mount
        return scope.user, None, None

    def get(self, token: str) -> dict[str, Any] | None:
        """The live lock with ``token``, or None (expired locks are gone)."""
        _, lock, mount = self._find(token)
        return None if lock is None else as_dict(lock, mount)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        """Store a new lock on ``path``; fills in root, timeout (capped), expire and token.

        The conflict check is made again in the mutation that stores the lock: two
        frontends locking one path at once end with one lock and a 423 for the other.
        """
        row, inner, mount = self._place(path)
        with _mapped():
            made = davlocks.create(
                self._client, row, inner, scope=lock.get("scope", ""),
                depth=lock.get("depth", ""), owner=lock.get("owner") or b"",
                principal=str(lock.get("principal", "")), timeout=_seconds(lock.get("timeout")))
        _changed()
        lock.update(as_dict(made, mount))
        return lock

    def refresh(self, token: str, *, timeout: float | None) -> dict[str, Any]:
        """A new timeout (capped) for a live lock; 412 if it expired or was released."""
        row, _, mount = self._find(token)
        with _mapped():
            made = davlocks.refresh(self._client, row, token, _seconds(timeout))
        _changed()
        return as_dict(made, mount)

    def delete(self, token: str) -> bool:
        """Remove the lock; True if it was live."""
        row, _, _ = self._find(token)
        with _mapped():
            deleted = davlocks.delete(self._client, row, token)
        _changed()
        return deleted

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool,
                      token_only: bool) -> list[Any]:
        """The live locks on ``path`` and/or below it (tokens only if ``token_only``).

        WsgiDAV asks this for every parent of a path it writes and for every member a
        PROPFIND lists; a row with few locks is read once per request.  At a shared
        folder's own path, the owner's depth-infinity locks above it count too (the
        recipient's parents are not the owner's, so WsgiDAV would not ask for them).
        """
        row, inner, mount = self._place(path)
        locks = self._select(row, inner, include_root, include_children)
        if mount is not None and include_root and mount.there and inner == mount.there:
            above = inner.rstrip("/").split("/")[:-1]
            for depth in range(len(above), 0, -1):
                parent = "/".join(above[:depth]) or "/"
                locks += [x for x in self._select(row, parent, True, False)
                          if x.depth == "infinity"]
        return [x.token for x in locks] if token_only else [as_dict(x, mount) for x in locks]

    def _select(self, row: str, path: str, include_root: bool,
                include_children: bool) -> list[davlocks.Lock]:
        scope = _current()
        with _mapped():
            if row not in scope.rows:
                scope.rows[row] = davlocks.every_lock(self._client, row, limit=FEW_LOCKS)
            known = scope.rows[row]
            if known is not None:
                return davlocks.select(known, path, include_root=include_root,
                                       include_children=include_children)
            return davlocks.locks_at(self._client, row, path, include_root=include_root,
                                     include_children=include_children)


def as_dict(lock: davlocks.Lock, mount: Mount | None = None) -> dict[str, Any]:
    """A lock as WsgiDAV's lock manager reads it (its root in the request's paths)."""
    root = lock.root if mount is None else mount.outer(lock.root)
    return {"root": root, "type": lock.type, "scope": lock.scope, "depth": lock.depth,
            "owner": lock.owner, "principal": lock.principal, "timeout": lock.timeout,
            "expire": lock.expire, "token": lock.token}


def _seconds(timeout: object) -> float | None:
    try:
        return None if timeout is None else float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@contextmanager
def _mapped() -> Iterator[None]:
    """The model's refusals as WebDAV answers (docs/architecture.md, "Errors")."""
    try:
        yield
    except davlocks.LockConflict as e:
        condition = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        for root in e.roots:
            condition.add_href(root)
        raise DAVError(HTTP_LOCKED, err_condition=condition) from e
    except davlocks.NoSuchLock as e:
        raise DAVError(HTTP_PRECONDITION_FAILED, str(e),
                       err_condition=PRECONDITION_CODE_LockTokenMismatch) from e
    except davlocks.TooManyLocks as e:
        raise DAVError(HTTP_INSUFFICIENT_STORAGE, str(e)) from e
    except davlocks.BadLock as e:
        raise DAVError(HTTP_BAD_REQUEST, str(e)) from e
    except ConditionFailed as e:
        raise DAVError(HTTP_SERVICE_UNAVAILABLE, "The locks are busy: try again.") from e

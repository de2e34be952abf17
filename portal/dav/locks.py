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

Plugged in with WsgiDAV's config::

    "lock_storage": StoreLockStorage(client),
    "middleware_stack": [..., HTTPAuthenticator, UserScope, ..., RequestResolver],
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


@dataclass
class _Scope:
    """One request's user, and their locks as read once by this request (None: not yet,
    or too many to keep).  A request's own lock changes drop the copy; another frontend's
    change during the request is seen by the next request, and never by the conflict
    check of a create, which reads the store (shards.model.davlocks.create)."""

    user: str
    locks: list[davlocks.Lock] | None = None
    loaded: bool = False


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
    """This request changed the user's locks: its copy of them is out of date."""
    scope = _current()
    scope.locks, scope.loaded = None, False


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
           start_response: StartResponse) -> Iterator[bytes]:
    """Call ``app`` and iterate its answer with :func:`user_scope` around each step."""
    scope = _Scope(user)
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

    def get(self, token: str) -> dict[str, Any] | None:
        """The live lock with ``token``, or None (expired locks are gone)."""
        with _mapped():
            lock = davlocks.get(self._client, current_user(), token)
        return None if lock is None else as_dict(lock)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        """Store a new lock on ``path``; fills in root, timeout (capped), expire and token.

        The conflict check is made again in the mutation that stores the lock: two
        frontends locking one path at once end with one lock and a 423 for the other.
        """
        with _mapped():
            made = davlocks.create(
                self._client, current_user(), path, scope=lock.get("scope", ""),
                depth=lock.get("depth", ""), owner=lock.get("owner") or b"",
                principal=str(lock.get("principal", "")), timeout=_seconds(lock.get("timeout")))
        _changed()
        lock.update(as_dict(made))
        return lock

    def refresh(self, token: str, *, timeout: float | None) -> dict[str, Any]:
        """A new timeout (capped) for a live lock; 412 if it expired or was released."""
        with _mapped():
            made = davlocks.refresh(self._client, current_user(), token, _seconds(timeout))
        _changed()
        return as_dict(made)

    def delete(self, token: str) -> bool:
        """Remove the lock; True if it was live."""
        with _mapped():
            deleted = davlocks.delete(self._client, current_user(), token)
        _changed()
        return deleted

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool,
                      token_only: bool) -> list[Any]:
        """The live locks on ``path`` and/or below it (tokens only if ``token_only``).

        WsgiDAV asks this for every parent of a path it writes and for every member a
        PROPFIND lists; a user with few locks has them read once per request.
        """
        scope = _current()
        with _mapped():
            if not scope.loaded:
                scope.locks = davlocks.every_lock(self._client, scope.user, limit=FEW_LOCKS)
                scope.loaded = True
            if scope.locks is not None:
                locks = davlocks.select(scope.locks, path, include_root=include_root,
                                        include_children=include_children)
            else:
                locks = davlocks.locks_at(self._client, scope.user, path,
                                          include_root=include_root,
                                          include_children=include_children)
        return [lock.token for lock in locks] if token_only else [as_dict(x) for x in locks]


def as_dict(lock: davlocks.Lock) -> dict[str, Any]:
    """A lock as WsgiDAV's lock manager reads it."""
    return {"root": lock.root, "type": lock.type, "scope": lock.scope, "depth": lock.depth,
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

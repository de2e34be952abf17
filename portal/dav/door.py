"""The WebDAV door at ``/dav/``: sign-in, bounds and refusals in front of WsgiDAV.

Everything a request must pass before WsgiDAV parses anything of it is here:
a path without traversal or control characters, HTTP Basic credentials
(:mod:`.credentials`), a body no larger than its method allows (XML bodies 1 MiB,
read before parsing; PUT bounded by the file-size limit and what the quota
leaves, refused from its Content-Length when it cannot fit), no PROPFIND of
unbounded depth, and no write while the user's group is read-only
(:mod:`shards.readonly`).  Then WsgiDAV (:mod:`.resources` on the drive model)
answers, inside the request's read-state so reads may fall back to stale ones, with
its locks (:mod:`.locks`) and dead properties (:mod:`.props`) kept in the store, so
every frontend and worker sees the same ones.
"""

from __future__ import annotations

import contextvars
import io
import logging
import re
import time
import unicodedata
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from wsgidav.dav_error import DAVError, get_http_status_string
from wsgidav.error_printer import ErrorPrinter
from wsgidav.request_resolver import RequestResolver
from wsgidav.util import read_timeout_value_header
from wsgidav.wsgidav_app import WsgiDAVApp

from raftkv.errors import RaftKVError
from shards.model import drive, quota
from shards.readonly import READ_ONLY_MESSAGE, observing

from .. import metrics
from ..errors import RETRY_AFTER, http_message
from ..filenames import BadFileName, check_filename
from .credentials import Authenticator
from .locks import StoreLockStorage, scoped
from .paths import MOUNT, USER_KEY
from .props import StorePropertyManager
from .resources import DriveProvider
from .shared import SHARED, RequestMounts, owner_at

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from raftkv.interface import KeyValueStore
    from shards.readonly import ReadOnlyFallback

    from ..app import Portal

log = logging.getLogger("portal.dav")

REALM = "raftcloud"
MAX_XML_BODY = 1024 * 1024  # bytes of a PROPFIND, PROPPATCH or LOCK body
BLOCK = 64 * 1024           # bytes WsgiDAV reads and sends at a time
MAX_LOCK_SECONDS = 3600     # the longest a lock is granted for (WsgiDAV's own cap is a month)
WRITES = frozenset({"PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"})
METHODS = frozenset({"OPTIONS", "GET", "HEAD", "PROPFIND"}) | WRITES | {"POST"}
# A path as the client wrote it may not hide a separator or a dot-segment in escapes.
_RAW_TRICKS = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)
FINITE_DEPTH = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                b'<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>')


def _answer(start_response: StartResponse, status: str, text: str | bytes,
            headers: Iterable[tuple[str, str]] = (), ctype: str = "text/plain; charset=utf-8"
            ) -> list[bytes]:
    body = text.encode() if isinstance(text, str) else text
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            *headers])
    return [body]


class Refusal(Exception):
    """A request turned away before WsgiDAV sees it: status, sentence, headers."""

    def __init__(self, status: str, text: str | bytes, headers: Iterable[tuple[str, str]] = (),
                 ctype: str = "text/plain; charset=utf-8") -> None:
        super().__init__(status)
        self.status, self.text, self.headers, self.ctype = status, text, list(headers), ctype


def checked_path(environ: WSGIEnvironment) -> str:
    """The path below the mount; :class:`Refusal` (400) for any form of traversal, an
    escaped separator or a control character (in it or in a Destination)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path = environ.get("PATH_INFO", "")
    try:  # WSGI hands over UTF-8 bytes as latin-1 characters
        path = path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise Refusal("400 Bad Request", "The path is not valid UTF-8.") from None
    destination = unquote(environ.get("HTTP_DESTINATION", ""), errors="strict")
    for text in (path, destination):
        if any(unicodedata.category(ch) == "Cc" for ch in text):
            raise Refusal("400 Bad Request", "Names cannot contain control characters.")
        if any(part in (".", "..") for part in text.split("/")[1:]):
            raise Refusal("400 Bad Request", "Paths cannot contain '.' or '..' segments.")
        if "\\" in text:
            raise Refusal("400 Bad Request", "Paths cannot contain backslashes.")
    if destination and not urlsplit(destination).path.startswith(MOUNT + "/"):
        raise Refusal("400 Bad Request", f"A Destination must be below {MOUNT}/.")
    if "#" in raw:  # a fragment is the client's own; sent, it is a broken request
        raise Refusal("400 Bad Request", "A request URI cannot carry a fragment ('#').")
    if _RAW_TRICKS.search(raw.partition("?")[0]) or _RAW_TRICKS.search(
            environ.get("HTTP_DESTINATION", "")):
        raise Refusal("400 Bad Request", "Escaped separators or dots are not allowed in paths.")
    return path[len(MOUNT):] or "/"


class _WorkerStore:
    """The store client of the process at hand (:meth:`Portal.worker_client`) for the lock
    storage and property manager, which WsgiDAV keeps from start-up: gunicorn may fork
    the workers after the door is made, and a client must not cross a fork."""

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._portal.worker_client(), name)


class DavDoor:
    """The WSGI app behind ``/dav/``; one per portal (per worker process)."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.max_file = portal.config.max_upload
        self.authenticator = Authenticator(portal.auth_limits, portal.app_password_key)
        self.provider = DriveProvider(self)
        store = cast("KeyValueStore", _WorkerStore(portal))
        self.app = WsgiDAVApp({
            "provider_mapping": {"/": self.provider},
            "mount_path": MOUNT,
            # No authenticator or directory browser of WsgiDAV's: sign-in is ours (above).
            "middleware_stack": [ErrorPrinter, RequestResolver],
            "http_authenticator": {"domain_controller": None},
            "simple_dc": {"user_mapping": {"*": True}},
            # In the store, per user: the locks by URL (the request's user is the scope
            # _serve sets), the properties by drive item id (the provider resolves).
            "lock_storage": StoreLockStorage(store),
            "property_manager": StorePropertyManager(store, self.provider.item_at),
            "block_size": BLOCK,
            "verbose": 1,
            "logging": {"enable": False},
            "dir_browser": {"enable": False},
        })

    # -- what the provider needs -----------------------------------------------------

    def client(self) -> ReadOnlyFallback:
        return self.portal.worker_client()

    def quota(self, user: str) -> int:
        return quota.limit(self.client(), user, self.portal.config.quota)

    def checked_name(self, name: str) -> str:
        """A name the web page would accept too (portal.filenames); else a 400."""
        from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError
        try:
            return check_filename(name)
        except BadFileName as exc:
            raise DAVError(HTTP_BAD_REQUEST, f"That name cannot be used: {exc}.") from None

    # -- the request -----------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        label = method if method in METHODS else "other"
        counted_in = _CountedInput(environ.get("wsgi.input"))
        environ["wsgi.input"] = counted_in
        status: list[str] = ["500"]

        def recording(status_line: str, headers: list[tuple[str, str]],
                      exc_info: Any = None) -> Any:
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        began, sent = time.perf_counter(), 0
        self.portal.load.enter()  # in flight until the last byte (the balancer's choice)
        # The request's read-state and user are context variables set inside _serve,
        # which yields to the server between chunks: each step runs in a context of its
        # own, so nothing of them is left in the server thread's context meanwhile, nor
        # after an answer the server did not read to its end.
        steps = self._serve(environ, recording, method)
        context = contextvars.copy_context()
        try:
            while (chunk := context.run(next, steps, None)) is not None:
                sent += len(chunk)
                yield chunk
        finally:
            context.run(steps.close)
            self.portal.load.leave()
            metrics.observe_dav(label, int(status[0]), counted_in.count, sent,
                                time.perf_counter() - began)

    def _serve(self, environ: WSGIEnvironment, start_response: StartResponse,
               method: str) -> Generator[bytes, None, None]:
        # The whole request, sign-in included, reads stale and has its writes refused at
        # once while the user's group has lost its majority (shards.readonly).
        with observing():
            try:
                checked_path(environ)
                user = self._sign_in(environ)
                self._check_request(environ, method, user)
            except Refusal as refusal:
                yield from _answer(start_response, refusal.status, refusal.text,
                                   refusal.headers, refusal.ctype)
                return
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + MOUNT
            environ["PATH_INFO"] = environ["PATH_INFO"][len(MOUNT):] or "/"
            environ[USER_KEY] = environ["wsgidav.auth.user_name"] = user
            environ["wsgidav.auth.realm"] = REALM
            # The lock storage works on this user's locks only (portal.dav.locks), and on
            # the owners' of the folders shared with them, at those folders' paths.
            yield from scoped(user, self.app, environ, start_response,
                              RequestMounts(self.client(), environ))

    def _sign_in(self, environ: WSGIEnvironment) -> str:
        address = environ.get("REMOTE_ADDR") or "?"
        ask = [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]
        try:
            outcome = self.authenticator.check(self.client(), environ.get("HTTP_AUTHORIZATION"),
                                               address)
        except RaftKVError as exc:
            raise Refusal("503 Service Unavailable", http_message(exc),
                          [("Retry-After", str(RETRY_AFTER))]) from None
        if outcome.retry_after > 0:
            wait = max(1, int(outcome.retry_after + 0.999))
            raise Refusal("429 Too Many Requests",
                          f"Too many failed sign-ins; try again in {wait} seconds.",
                          [("Retry-After", str(wait))])
        if outcome.needs_app_password:
            raise Refusal("401 Unauthorized", "Two-factor sign-in is on for this account: "
                          "use an app password (Account, Security) for WebDAV.", ask)
        if outcome.user is None:
            raise Refusal("401 Unauthorized", "Sign in with your user name and an app "
                          "password (or your password, without two-factor sign-in).", ask)
        return outcome.user

    def _check_request(self, environ: WSGIEnvironment, method: str, user: str) -> None:
        if method not in METHODS:
            raise Refusal("405 Method Not Allowed", "That method is not supported here.",
                          [("Allow", ", ".join(sorted(METHODS)))])
        path = checked_path(environ)
        if method in WRITES and path.strip("/") == SHARED and method != "UNLOCK":
            # WsgiDAV would say 405 to a PUT or MKCOL there; the provider refuses the rest.
            raise Refusal("403 Forbidden", f"{SHARED} lists the folders others share with "
                          "you; it changes when they share or stop sharing, not here.")
        owner = self._owner(environ, user, path) if method in WRITES else user
        if method in WRITES and any(self.client().lost(drive.drive_row(who))
                                    for who in {user, owner}):
            raise Refusal("503 Service Unavailable", READ_ONLY_MESSAGE,
                          [("Retry-After", str(RETRY_AFTER))])
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").strip() not in (
                "0", "1"):
            raise Refusal("403 Forbidden", FINITE_DEPTH, ctype='application/xml; charset="utf-8"')
        if method == "LOCK":
            environ["HTTP_TIMEOUT"] = lock_timeout(environ.get("HTTP_TIMEOUT", ""))
        if method == "PUT":
            self._check_put(environ, owner)
        elif method != "GET":
            _read_small_body(environ)

    def _owner(self, environ: WSGIEnvironment, user: str, path: str) -> str:
        """Whose drive a write to ``path`` changes (a folder shared with ``user``: its owner's)."""
        environ[USER_KEY] = user
        try:
            return owner_at(self.client(), user, path, environ)
        except DAVError as exc:
            raise Refusal(get_http_status_string(exc), str(exc.context_info or exc),
                          exc.add_headers or ()) from None

    def _check_put(self, environ: WSGIEnvironment, user: str) -> None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise Refusal("400 Bad Request", "The Content-Length is not a number.") from None
        if length > self.max_file:
            raise Refusal("413 Content Too Large",
                          f"A file can be at most {self.max_file:,} bytes here.")
        if length > 0:
            try:
                free = self.quota(user) - drive.usage(self.client(), user)
            except RaftKVError as exc:
                raise Refusal("503 Service Unavailable", http_message(exc),
                              [("Retry-After", str(RETRY_AFTER))]) from None
            if length > free:
                raise Refusal("507 Insufficient Storage",
                              f"This file ({length:,} bytes) does not fit: {max(0, free):,} "
                              "bytes of your quota are left.")


def lock_timeout(asked: str) -> str:
    """The Timeout a LOCK gets: what it asked for, at most :data:`MAX_LOCK_SECONDS`
    ("Infinite", a year, or nothing: the most).  A client holding a lock refreshes it;
    one that went away must not keep a file locked for a month."""
    seconds = read_timeout_value_header(asked) if asked else None
    if seconds is None or seconds <= 0:
        seconds = MAX_LOCK_SECONDS
    return f"Second-{min(seconds, MAX_LOCK_SECONDS)}"


def _read_small_body(environ: WSGIEnvironment) -> None:
    """Read a body of an XML method (or none) whole, refusing more than
    :data:`MAX_XML_BODY`; WsgiDAV then reads it from memory, with a known length."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        raise Refusal("400 Bad Request", "The Content-Length is not a number.") from None
    if length > MAX_XML_BODY:
        raise Refusal("413 Content Too Large",
                      f"A request body can be at most {MAX_XML_BODY:,} bytes here.")
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length < 0 and not chunked:
        return
    body = environ["wsgi.input"].read(MAX_XML_BODY + 1 if length < 0 else length)
    if len(body) > MAX_XML_BODY:
        raise Refusal("413 Content Too Large",
                      f"A request body can be at most {MAX_XML_BODY:,} bytes here.")
    environ["wsgi.input"] = _CountedInput(io.BytesIO(body))
    environ["CONTENT_LENGTH"] = str(len(body))


class _CountedInput:
    """The request body, counted as it is read (metrics: bytes in)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._stream is None:
            return b""
        data: bytes = self._stream.read(size) if size is not None else self._stream.read()
        self.count += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data: bytes = self._stream.readline(size) if self._stream is not None else b""
        self.count += len(data)
        return data

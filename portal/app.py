"""The portal WSGI app: routing, sessions and CSRF, rendering, and the one place errors map to HTTP.

Built like werkzeug's shortly example: a class with a ``url_map`` and an
``on_<endpoint>`` method per route.  The methods live in per-feature mixins
(:mod:`.auth`, :mod:`.drive`, :mod:`.mail`, :mod:`.admin`); this module owns
what every request shares.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import (
    Conflict,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
)
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request as BaseRequest
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from raftkv.errors import ConditionFailed, KeyNotFound, RaftKVError, TooLarge, UnavailableError

from .admin import AdminViews
from .auth import AuthViews
from .config import PortalConfig
from .drive import DriveViews
from .heartbeat import Background
from .mail import MailViews
from .sessions import COOKIE, Session, SessionStore, check_csrf, csrf_token

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from shards import Client

log = logging.getLogger("portal")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
RETRY_AFTER = 2  # seconds; about one Raft election plus a client retry
HEALTH_ROW, HEALTH_COL = "portal/health", "probe"
# No scripts at all, nothing remote: a mail or file name that slipped through
# escaping still could not run code or load a tracking pixel.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# Endpoints that must not touch sessions: the balancer probes /healthz once a
# second and should neither read the store for a session nor get cookies.
_SESSIONLESS = frozenset({"healthz"})


class Request(BaseRequest):
    """A werkzeug request that carries its session."""

    session: Session


def store_error_to_http(exc: RaftKVError) -> HTTPException:
    """Map a store error to the HTTP error shown to the user; the only such mapping."""
    if isinstance(exc, UnavailableError):
        return ServiceUnavailable(
            "The storage cluster is not answering right now (perhaps electing a new "
            "leader). Please try again in a moment.", retry_after=RETRY_AFTER)
    if isinstance(exc, KeyNotFound):
        return NotFound()
    if isinstance(exc, ConditionFailed):
        return Conflict("Someone changed this at the same moment. Please reload and try again.")
    if isinstance(exc, TooLarge):
        return RequestEntityTooLarge("That is larger than the store accepts.")
    # WrongShard escaping the shards client means it could not catch up with a
    # reconfiguration; like the rest it is worth a retry, not a traceback.
    log.error("store error: %r", exc)
    return ServiceUnavailable("The storage cluster answered with an error. Please try again.",
                              retry_after=RETRY_AFTER)


def format_time(timestamp: float) -> str:
    """A Unix time as shown on pages: UTC, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


class LoadCounter:
    """Requests in flight in this process, reported by /healthz for the balancer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def enter(self) -> None:
        with self._lock:
            self.value += 1

    def leave(self) -> None:
        with self._lock:
            self.value -= 1


class Portal(AuthViews, DriveViews, MailViews, AdminViews):
    """The portal app; one instance per worker process, shared by its threads."""

    def __init__(self, config: PortalConfig, client_factory: Callable[[], Client]) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: Client | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self.sessions = SessionStore(self.client, ttl=config.session_ttl,
                                     secure=config.cookie_secure)
        self.load = LoadCounter()
        self.background = Background(self, interval=config.heartbeat_interval)
        self.jinja = Environment(loader=PackageLoader("portal", "templates"),
                                 autoescape=select_autoescape(default=True))
        self.jinja.filters["datetime"] = format_time
        self._wsgi = SharedDataMiddleware(self.wsgi_app, {"/static": STATIC_DIR})
        self.url_map = Map([
            Rule("/", endpoint="index"),
            Rule("/signup", endpoint="signup", methods=["GET", "POST"]),
            Rule("/login", endpoint="login", methods=["GET", "POST"]),
            Rule("/logout", endpoint="logout", methods=["POST"]),
            Rule("/password", endpoint="password", methods=["GET", "POST"]),
            Rule("/drive", endpoint="drive"),
            Rule("/drive/upload", endpoint="drive_upload", methods=["POST"]),
            Rule("/drive/<file_id>", endpoint="drive_download"),
            Rule("/drive/<file_id>/delete", endpoint="drive_delete", methods=["POST"]),
            Rule("/mail", endpoint="mail"),
            Rule("/mail/<msg_id>", endpoint="mail_message"),
            Rule("/mail/<msg_id>/delete", endpoint="mail_delete", methods=["POST"]),
            Rule("/admin", endpoint="admin"),
            Rule("/healthz", endpoint="healthz"),
        ], strict_slashes=True)

    def client(self) -> Client:
        """This process's store client, made on first use.

        gunicorn forks workers after loading the app (or before, with
        preload); a client's sockets and threads must not cross a fork, so a
        new process makes its own.
        """
        pid = os.getpid()
        if self._client is None or self._client_pid != pid:
            with self._client_lock:
                if self._client is None or self._client_pid != pid:
                    self._client, self._client_pid = self._client_factory(), pid
        return self._client

    def start(self) -> None:
        """Start background work (registry heartbeat, first-admin bootstrap) in this process."""
        if self.config.background:
            self.background.ensure_running()

    def close(self) -> None:
        """Stop background work and close the store client (tests, worker exit)."""
        self.background.stop()
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = None

    # -- rendering ---------------------------------------------------------------

    def render(self, request: Request, template: str, *, status: int = 200,
               **context: Any) -> Response:
        """Render ``template`` with what every page needs (user, nav, CSRF token)."""
        session = getattr(request, "session", None)
        html = self.jinja.get_template(template).render(
            user=session.user if session else None,
            is_admin=session.admin if session else False,
            csrf=csrf_token(self.config.secret, session.sid) if session else "",
            cluster=self.config.cluster.name, frontend=self.config.frontend,
            path=request.path, **context)
        return Response(html, status=status, mimetype="text/html")

    def error_page(self, request: Request, exc: HTTPException) -> Response:
        """A friendly HTML page for ``exc``, keeping its headers (Allow, Retry-After)."""
        response = self.render(request, "error.html", status=exc.code or 500,
                               code=exc.code, title=exc.name, message=exc.description)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    # -- dispatch ----------------------------------------------------------------

    def dispatch_request(self, request: Request) -> Response:
        """Route, load the session, check CSRF, call the view, map every failure to a page."""
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
            if endpoint in _SESSIONLESS:
                return getattr(self, f"on_{endpoint}")(request, **values)
            cookie = request.cookies.get(COOKIE)
            # CSRF first: it needs only the cookie, so a forged POST costs no store read.
            if request.method == "POST" and not check_csrf(
                    self.config.secret, cookie or "", request.form.get("csrf")):
                # Keep the sid: a forged POST must not log the victim out.
                request.session = self.sessions.unchecked(cookie)
                raise Forbidden("This form has expired or did not come from this site. "
                                "Go back, reload the page and try again.")
            request.session = self.sessions.load(cookie)
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except HTTPException as exc:
            if exc.response is not None or (exc.code or 500) < 400:
                return exc.get_response(request.environ)  # redirects raised by routing
            response = self.error_page(request, exc)
        except RaftKVError as exc:
            response = self.error_page(request, store_error_to_http(exc))
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = self.error_page(request, InternalServerError())
        if hasattr(request, "session"):
            self.sessions.set_cookie(response, request.session)
        return response

    def wsgi_app(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self.config.max_upload
        # Ordinary form fields are small; files spool to disk instead.  werkzeug
        # also applies this limit to its 64 KiB read buffer, so it must be larger.
        request.max_form_memory_size = 1024 * 1024
        self.start()  # a no-op unless this is the first request after a fork
        self.load.enter()
        try:
            with request:  # closes the spooled upload files when the view is done
                response = self.dispatch_request(request)
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Referrer-Policy"] = "same-origin"
            app_iter = response(environ, start_response)
        except BaseException:
            self.load.leave()
            raise
        # Count a streamed download as in flight until its last byte is sent.
        return ClosingIterator(app_iter, [self.load.leave])

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        return self._wsgi(environ, start_response)

    # -- pages of no particular feature -------------------------------------------

    def on_index(self, request: Request) -> Response:
        return self.render(request, "index.html")

    def on_healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "frontend": self.config.frontend,
                                "load": self.load.value}
        status, headers = 200, {}
        try:
            self.client().get(HEALTH_ROW, HEALTH_COL)
        except RaftKVError as exc:
            body["status"], body["error"] = "unavailable", type(exc).__name__
            status, headers = 503, {"Retry-After": str(RETRY_AFTER)}
        return Response(json.dumps(body), status=status, headers=headers,
                        mimetype="application/json")

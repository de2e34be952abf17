"""The portal WSGI app: routing, sessions and CSRF, rendering, and every failure as a page.

Built like werkzeug's shortly example: a class with a ``url_map`` and an
``on_<endpoint>`` method per route.  The methods live in per-feature mixins
(:mod:`.auth`, :mod:`.drive`, :mod:`.drive_edit`, :mod:`.mail`, :mod:`.admin`);
this module owns what every request shares.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
)
from werkzeug.formparser import FormDataParser
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.routing import Map, MapAdapter, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request as BaseRequest
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator

from raftkv.errors import RaftKVError
from shards.readonly import ReadOnlyFallback, fallback_for, observing, read_state

from . import metrics
from .account import AccountViews
from .admin import AdminViews
from .admin_users import AdminUserViews
from .auth import AuthViews
from .cache import LISTING_ITEMS, ROWS_CHARS, ListingCache
from .compose import ComposeViews
from .config import PortalConfig
from .dav import MOUNT as DAV_MOUNT
from .dav import DavDoor
from .drafts import DraftViews
from .drive import DriveViews, FileIdConverter, FolderIdConverter, folder_url
from .drive_edit import DriveEditViews
from .drive_select import DriveSelectViews
from .drive_sharedwith import DriveSharedWithViews, UserConverter
from .drive_shares import DriveShareViews
from .drive_trash import DriveTrashViews
from .errors import RETRY_AFTER, http_error
from .export import ExportViews
from .failover import WORKER_CSP, WORKER_PATH, page_policy, worker_script
from .heartbeat import Background
from .load import LoadCounter
from .mail import MailViews
from .mailactions import MailActionViews
from .mailfolders import MailFolderViews
from .mailsearch import MailSearchViews
from .messageview import MessageViewCache
from .pages import (
    COUNT_PARAM,
    NOTICE_PARAM,
    PAGE_SCRIPT,
    PAGE_SCRIPT_HASH,
    PAGE_SCRIPT_SRC,
    mail_date,
    notice_for,
    time_tag,
)
from .pagestore import CellCache, PageStore
from .previews import PreviewViews, has_thumbnail, inline_type, thumb_url
from .readmarks import ReadMarks
from .sessions import COOKIE, Session, SessionStore, check_csrf, csrf_token, index_row
from .share_pages import SharePageViews, TokenConverter
from .sizes import human_size

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from shards import Client

log = logging.getLogger("portal")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
HEALTH_ROW, HEALTH_COL = "portal/health", "probe"
# No script but our page script (by its hash: portal.pages), nothing remote: a mail or
# file name that slipped through escaping still could not run code or load a tracking pixel.
# worker-src: the page script registers the failover worker (portal.failover); only a
# script the CSP allows can register one.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       f"frame-ancestors 'none'; base-uri 'none'; worker-src 'self'; {PAGE_SCRIPT_SRC}")
FORM_EXPIRED = ("This form has expired or did not come from this site. "
                "Go back, reload the page and try again.")
# Endpoints that must not touch sessions: the balancer probes /healthz once a
# second and should neither read the store for a session nor get cookies.
# Share links' pages (portal.share_pages) are anonymous: no session read, no cookie set.
_SESSIONLESS = frozenset({"healthz", "failover_worker", "share_open", "share_folder",
                          "share_file", "share_zip", "share_folder_zip", "share_unlock"})
# Headers every answer carries, pages and static files alike.
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                    ("Referrer-Policy", "same-origin"))
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # every visible ASCII character
_REPLACED = frozenset(name.lower() for name, _ in SECURITY_HEADERS)
# The forms a visitor may post before logging in.  Every other POST needs a
# login, and one from a session that is not logged in is refused before a
# byte of its body is read; these get a body limit that fits their few fields.
_ANONYMOUS_POSTS = frozenset({"signup", "login", "login_code", "logout"})
ANONYMOUS_FORM_LIMIT = 64 * 1024
# Endpoints whose body limit depends on the user (the drive's quota, a
# message's size): set before the CSRF check reads the body.
_BODY_LIMITS = {"drive_upload": "upload_limit", "mail_compose": "compose_limit",
                "mail_draft_save": "compose_limit", "drive_with_upload": "shared_upload_limit"}
# The running request's view of the store (portal.pagestore), made on its first use
# (a page that needs no store makes no client): a list of none or one.
_page_store: contextvars.ContextVar[list[PageStore] | None] = contextvars.ContextVar(
    "portal_page_store", default=None)


class Request(BaseRequest):
    """A werkzeug request that carries its session."""

    session: Session
    quota_free: int | None = None  # bytes of quota left, when an upload's body was capped by it

    def make_form_data_parser(self) -> FormDataParser:
        # Not silent: a malformed multipart body is a 400, not an empty form.
        return self.form_data_parser_class(
            stream_factory=self._get_file_stream, max_form_memory_size=self.max_form_memory_size,
            max_content_length=self.max_content_length, max_form_parts=self.max_form_parts,
            cls=self.parameter_storage_class, silent=False)

    def form_field(self, name: str) -> str | None:
        """A field of the (lazily parsed) form; a broken or too large body becomes its HTTP error."""
        try:
            return self.form.get(name)
        except RequestEntityTooLarge:
            if self.quota_free is not None:
                raise RequestEntityTooLarge(
                    f"That upload is larger than what is left of your quota "
                    f"({self.quota_free:,} bytes).") from None
            raise
        except ValueError:
            raise BadRequest("The form data is malformed.") from None
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - each server has its own errors for this
            # The server could not read the body: a broken chunk, a client gone.
            log.warning("unreadable request body: %r", exc)
            raise BadRequest("The request body could not be read.") from None


class Portal(AuthViews, AccountViews, DriveViews, DriveEditViews, DriveSelectViews, PreviewViews,
             MailViews, MailFolderViews, MailActionViews, DraftViews, MailSearchViews, ComposeViews,
             AdminViews, AdminUserViews, ExportViews, DriveShareViews, SharePageViews,
             DriveTrashViews, DriveSharedWithViews):
    """The portal app; one instance per worker process, shared by its threads."""

    def __init__(self, config: PortalConfig, client_factory: Callable[[], Client]) -> None:
        self.config = config
        self._policies: dict[str, str] = {}
        self.csp = self.failover_policy(CSP)
        self._client_factory = client_factory
        self._client: ReadOnlyFallback | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self.sessions = SessionStore(self.client, ttl=config.session_ttl,
                                     idle=config.session_idle, secure=config.cookie_secure)
        self.load = LoadCounter(config.load_dir)
        self.listings = ListingCache(config.listing_cache, LISTING_ITEMS)
        self.rendered_rows = ListingCache(config.listing_cache, ROWS_CHARS)  # portal.drive's rows
        self.cells = CellCache(config.cell_cache)
        self.message_views = MessageViewCache()
        self.read_marks = ReadMarks(self.client)
        self.background = Background(self, interval=config.heartbeat_interval)
        # Templates are part of the release: each is compiled once per worker, and a
        # page does not look at the template files again (auto_reload would stat them,
        # each a system call that hands the GIL to the worker's other threads).
        self.jinja = Environment(loader=PackageLoader("portal", "templates"),
                                 autoescape=select_autoescape(default=True), auto_reload=False)
        self.jinja.filters["datetime"] = time_tag
        self.jinja.filters["maildate"] = mail_date
        self.jinja.filters["size"] = human_size
        self.jinja.globals["folder_url"] = folder_url
        self.jinja.globals.update(has_thumbnail=has_thumbnail, thumb_url=thumb_url,
                                  inline_type=inline_type)  # the drive's previews
        self._wsgi: WSGIApplication = SharedDataMiddleware(self.wsgi_app,
                                                           {"/static": STATIC_DIR})
        self.dav = DavDoor(self)  # WebDAV at /dav/ (portal.dav): no sessions, no CSRF
        get, post, get_post = ["GET"], ["POST"], ["GET", "POST"]
        self.url_map = Map([
            Rule("/", endpoint="index", methods=get),
            Rule("/signup", endpoint="signup", methods=get_post),
            Rule("/login", endpoint="login", methods=get_post),
            Rule("/logout", endpoint="logout", methods=post),
            Rule("/password", endpoint="password", methods=get_post),
            Rule("/login/code", endpoint="login_code", methods=post),
            Rule("/account", endpoint="account", methods=get),
            Rule("/account/sessions/end", endpoint="account_end_session", methods=post),
            Rule("/account/sessions/end-others", endpoint="account_end_others", methods=post),
            Rule("/account/2fa/begin", endpoint="account_2fa_begin", methods=post),
            Rule("/account/2fa/confirm", endpoint="account_2fa_confirm", methods=post),
            Rule("/account/2fa/disable", endpoint="account_2fa_disable", methods=post),
            Rule("/account/app-passwords/new", endpoint="account_app_password_new",
                 methods=post),
            Rule("/account/app-passwords/revoke", endpoint="account_app_password_revoke",
                 methods=post),
            Rule("/account/delete", endpoint="account_delete", methods=get_post),
            Rule("/account/export/mail.mbox", endpoint="account_export_mail", methods=get),
            Rule("/drive", endpoint="drive", methods=get),
            Rule("/drive/upload", endpoint="drive_upload", methods=post),
            Rule("/drive/mkdir", endpoint="drive_mkdir", methods=post),
            Rule("/drive/select", endpoint="drive_select", methods=get_post),
            Rule("/drive/held", endpoint="drive_held", methods=get_post),
            Rule("/drive/shares", endpoint="drive_shares", methods=get),
            Rule("/drive/shares/new", endpoint="drive_share_new", methods=get_post),
            Rule("/drive/shares/revoke", endpoint="drive_share_revoke", methods=post),
            Rule("/drive/search", endpoint="drive_search", methods=get),
            Rule("/drive/with", endpoint="drive_with", methods=get),
            Rule("/drive/with/<user:owner>/<folder:shared_id>", endpoint="drive_with_open",
                 methods=get),
            Rule("/drive/with/<user:owner>/<folder:shared_id>/d/<folder:folder_id>",
                 endpoint="drive_with_folder", methods=get),
            Rule("/drive/with/<user:owner>/<folder:shared_id>/d/<folder:folder_id>/zip",
                 endpoint="drive_with_zip", methods=get),
            Rule("/drive/with/<user:owner>/<folder:shared_id>/f/<file:file_id>",
                 endpoint="drive_with_file", methods=get),
            *(Rule(f"/drive/with/<user:owner>/<folder:shared_id>/{action}",
                   endpoint=f"drive_with_{action}", methods=post)
              for action in ("upload", "mkdir", "rename", "move", "delete", "leave")),
            Rule("/drive/d/<folder:folder_id>/sharing", endpoint="drive_sharing", methods=get),
            Rule("/drive/d/<folder:folder_id>/sharing/add", endpoint="drive_sharing_add",
                 methods=post),
            Rule("/drive/d/<folder:folder_id>/sharing/revoke", endpoint="drive_sharing_revoke",
                 methods=post),
            Rule("/s/<token:token>", endpoint="share_open", methods=get),
            Rule("/s/<token:token>/zip", endpoint="share_zip", methods=get),
            Rule("/s/<token:token>/unlock", endpoint="share_unlock", methods=post),
            Rule("/s/<token:token>/d/<folder:folder_id>", endpoint="share_folder", methods=get),
            Rule("/s/<token:token>/d/<folder:folder_id>/zip", endpoint="share_folder_zip",
                 methods=get),
            Rule("/s/<token:token>/f/<file:file_id>", endpoint="share_file", methods=get),
            Rule("/drive/trash", endpoint="drive_trash", methods=get),
            Rule("/drive/trash/restore", endpoint="drive_trash_restore", methods=post),
            Rule("/drive/trash/delete", endpoint="drive_trash_delete", methods=get_post),
            Rule("/drive/trash/empty", endpoint="drive_trash_empty", methods=get_post),
            Rule("/drive/<file:file_id>/versions", endpoint="drive_versions", methods=get),
            Rule("/drive/<file:file_id>/versions/<file:content_id>",
                 endpoint="drive_version_download", methods=get),
            Rule("/drive/<file:file_id>/versions/<file:content_id>/restore",
                 endpoint="drive_version_restore", methods=post),
            Rule("/drive/d/<folder:folder_id>", endpoint="drive_folder", methods=get),
            Rule("/drive/d/<folder:folder_id>/zip", endpoint="drive_zip", methods=get),
            Rule("/drive/d/<folder:folder_id>/rename", endpoint="drive_folder_rename",
                 methods=post),
            Rule("/drive/d/<folder:folder_id>/move", endpoint="drive_folder_move",
                 methods=get_post),
            Rule("/drive/d/<folder:folder_id>/delete", endpoint="drive_folder_delete",
                 methods=get_post),
            Rule("/drive/<file:file_id>", endpoint="drive_download", methods=get),
            Rule("/drive/<file:file_id>/view", endpoint="drive_view", methods=get),
            Rule("/drive/<file:file_id>/inline", endpoint="drive_inline", methods=get),
            Rule("/drive/<file:file_id>/thumb", endpoint="drive_thumb", methods=get),
            Rule("/drive/<file:file_id>/rename", endpoint="drive_file_rename", methods=post),
            Rule("/drive/<file:file_id>/move", endpoint="drive_file_move", methods=get_post),
            Rule("/drive/<file:file_id>/delete", endpoint="drive_file_delete",
                 methods=get_post),
            Rule("/mail", endpoint="mail", methods=get),
            Rule("/mail/compose", endpoint="mail_compose", methods=get_post),
            Rule("/mail/drafts/save", endpoint="mail_draft_save", methods=post),
            Rule("/mail/search", endpoint="mail_search", methods=get),
            Rule("/mail/folders/new", endpoint="mail_folder_new", methods=post),
            Rule("/mail/trash/empty", endpoint="mail_empty_trash", methods=get_post),
            Rule("/mail/f/<int(max=999999):fid>", endpoint="mail_folder", methods=get),
            Rule("/mail/f/<int(max=999999):fid>/act", endpoint="mail_folder_act", methods=post),
            Rule("/mail/f/<int(max=999999):fid>/star", endpoint="mail_folder_star",
                 methods=post),
            Rule("/mail/f/<int(max=999999):fid>/rename", endpoint="mail_folder_rename",
                 methods=post),
            Rule("/mail/f/<int(max=999999):fid>/delete", endpoint="mail_folder_delete",
                 methods=get_post),
            Rule("/mail/<msg_id>", endpoint="mail_message", methods=get),
            Rule("/mail/<msg_id>/html", endpoint="mail_html", methods=get),
            Rule("/mail/<msg_id>/reply", endpoint="mail_reply", methods=get),
            Rule("/mail/<msg_id>/forward", endpoint="mail_forward", methods=get),
            Rule("/mail/<msg_id>/part/<int:index>", endpoint="mail_part", methods=get),
            Rule("/mail/<msg_id>/delete", endpoint="mail_delete", methods=get_post),
            Rule("/mail/<msg_id>/star", endpoint="mail_message_star", methods=post),
            Rule("/mail/<msg_id>/move", endpoint="mail_message_move", methods=post),
            Rule("/admin", endpoint="admin", methods=get),
            Rule("/admin/data", endpoint="admin_data", methods=get),
            Rule("/admin/nodes/<name>/<any(disable, restart):action>", endpoint="admin_node",
                 methods=post),
            Rule("/admin/users", endpoint="admin_users", methods=get),
            Rule("/admin/users/<name>", endpoint="admin_user", methods=get),
            Rule("/admin/users/<name>/<any(disable, enable, reset, quota):action>",
                 endpoint="admin_user_action", methods=post),
            Rule("/admin/queue", endpoint="admin_queue", methods=get),
            Rule("/admin/charts", endpoint="admin_charts", methods=get),
            Rule("/admin/charts.json", endpoint="admin_charts_json", methods=get),
            Rule("/healthz", endpoint="healthz", methods=get),
            Rule(WORKER_PATH, endpoint="failover_worker", methods=get),
        ], strict_slashes=True, converters={"file": FileIdConverter,
                                            "folder": FolderIdConverter,
                                            "token": TokenConverter, "user": UserConverter})

    def client(self) -> PageStore:
        """The store as the running request sees it (:mod:`.pagestore`): the cells it
        confirmed, this worker's cache of cells; outside a request, a fresh view."""
        held = _page_store.get()
        if held is None:
            return PageStore(self.worker_client(), self.cells)
        if not held or held[0].store is not self.worker_client():
            held[:] = [PageStore(self.worker_client(), self.cells)]
        return held[0]

    def worker_client(self) -> ReadOnlyFallback:
        """This process's store client, made on first use.

        gunicorn forks workers after loading the app (or before, with
        preload); a client's sockets and threads must not cross a fork, so a
        new process makes its own.  It serves a request's reads stale, and
        refuses its writes, while a group has lost its majority
        (:mod:`shards.readonly`); the page then shows the read-only notice.
        """
        pid = os.getpid()
        if self._client is None or self._client_pid != pid:
            with self._client_lock:
                if self._client is None or self._client_pid != pid:
                    self._client = fallback_for(self._client_factory())
                    self._client_pid = pid
        return self._client

    def start(self) -> None:
        """Start background work (registry heartbeat, first-admin bootstrap) in this process."""
        if self.config.background:
            self.background.ensure_running()

    def close(self) -> None:
        """Stop background work and close the store client (tests, worker exit)."""
        self.background.stop()
        self.sessions.close()  # writes the last-seen times still pending
        self.read_marks.close()  # writes the read marks still pending
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = None

    # -- rendering ---------------------------------------------------------------

    def render(self, request: Request, template: str, *, status: int = 200,
               **context: Any) -> Response:
        """Render ``template`` with what every page needs (user, nav, CSRF token)."""
        session = getattr(request, "session", None)
        user = session.user if session else None
        # The action's notice: the view's own, or the key a redirect carried (portal.pages).
        notice = context.pop("notice", None) or notice_for(request.args.get(NOTICE_PARAM),
                                                            request.args.get(COUNT_PARAM))
        html = self.jinja.get_template(template).render(
            read_only=self.read_only(session),
            user=user, address=f"{user}@{self.config.site.domains[0]}" if user else None,
            notice=notice,
            page_script=PAGE_SCRIPT, page_script_hash=PAGE_SCRIPT_HASH,
            is_admin=session.admin if session else False,
            csrf=csrf_token(self.config.csrf_key, session.sid) if session else "",
            cluster=self.config.cluster.name, frontend=self.config.frontend,
            path=request.path, **context)
        return Response(html, status=status, mimetype="text/html")

    def failover_policy(self, policy: str) -> str:
        """A page CSP whose forms may go on through the balancer to another frontend
        (portal.failover); for the views that set their own CSP too."""
        made = self._policies.get(policy)
        if made is None:
            made = self._policies[policy] = page_policy(policy, self.config)
        return made

    def read_only(self, session: Session | None) -> bool:
        """Whether the page must carry the read-only notice: it shows something read
        stale, or the user's own group refuses writes (shards.readonly)."""
        state = read_state()
        if state is not None and state.read_only:
            return True
        client = self._client
        return (session is not None and session.user is not None and client is not None
                and client.lost(index_row(session.user)))  # {user} rows share one group

    def error_page(self, request: Request, exc: HTTPException) -> Response:
        """A friendly HTML page for ``exc``, keeping its headers (Allow, Retry-After)."""
        if (exc.code in (404, 405) and request.method in ("GET", "HEAD")
                and not hasattr(request, "session") and request.cookies.get(COOKIE)):
            # A page routing refused still shows who is signed in: one read of the
            # session, as any page makes.  Without a cookie there is nothing to read, and
            # a refused POST is answered unread (docs/security.md, "CSRF, redirects, bodies").
            try:
                request.session = self.sessions.load(request.cookies.get(COOKIE))
            except Exception:  # noqa: BLE001 - an error page must not fail in turn
                pass  # it shows the signed-out header
        response = self.render(request, "error.html", status=exc.code or 500,
                               code=exc.code, title=exc.name, message=exc.description)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    # -- dispatch ----------------------------------------------------------------

    def dispatch_request(self, request: Request) -> Response:
        """Route, load the session, check CSRF, call the view, map every failure to a page.

        The request's reads may fall back to stale ones (:mod:`shards.readonly`);
        :meth:`render` then shows the read-only notice.
        """
        with observing():
            token = _page_store.set([])
            try:
                return self._dispatch(request)
            finally:
                _page_store.reset(token)

    def _dispatch(self, request: Request) -> Response:
        try:
            adapter = self.url_map.bind_to_environ(request.environ)
            endpoint, values = adapter.match()
            request.environ[metrics.ROUTE_KEY] = endpoint  # the route's name, for its metrics
            if endpoint in _SESSIONLESS:
                return getattr(self, f"on_{endpoint}")(request, **values)
            cookie = request.cookies.get(COOKIE)
            if request.method == "POST":
                refusal = self.admit_post(request, adapter, endpoint, cookie)
                if refusal is not None:
                    return refusal
            if not hasattr(request, "session"):
                self.confirm_page_cells(endpoint, values, cookie)
                request.session = self.sessions.load(cookie)
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except HTTPException as exc:
            if exc.response is not None or (exc.code or 500) < 400:
                return exc.get_response(request.environ)  # redirects raised by routing
            response = self.error_page(request, exc)
        except RaftKVError as exc:  # the store's and the data model's: portal.errors's table
            response = self.error_page(request, http_error(exc))
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = self.error_page(request, InternalServerError())
        if hasattr(request, "session"):
            self.sessions.set_cookie(response, request.session, https=request.scheme == "https",
                                     domain=self.config.cookie_domain)
        return response

    def confirm_page_cells(self, endpoint: str, values: Mapping[str, Any],
                           cookie: str | None) -> None:
        """The request's first round trip: one ``get_cells`` confirming the session's cells
        and, when this worker knows whose session it is, the cached cells the page needs
        (each view's ``cells_<endpoint>``).  Read for a user the session may no longer
        be, those cells are only used once the session is confirmed to be theirs."""
        keys = self.sessions.keys(cookie)
        user = self.sessions.cached_user(cookie)
        named = getattr(self, f"cells_{endpoint}", None)
        if user is not None and named is not None:
            keys += named(user, **values)
        if keys:
            self.client().confirm(keys)

    def admit_post(self, request: Request, adapter: MapAdapter, endpoint: str,
                   cookie: str | None) -> Response | None:
        """Decide on a POST before its body is read; the refusal, or None once CSRF holds.

        A stranger's POST costs at most a small, bounded read: without a
        well-formed session cookie there can be no valid CSRF token; a form
        that needs a login is refused unread unless the session is logged in;
        the forms of anonymous visitors are small.  Only then is the body
        parsed for the CSRF token, within the endpoint's limit.
        """
        if self.sessions.unchecked(cookie).send_cookie:  # no cookie, or not one of ours
            request.session = self.sessions.unchecked(None)
            raise Forbidden(FORM_EXPIRED)
        if endpoint in _ANONYMOUS_POSTS:
            request.max_content_length = min(ANONYMOUS_FORM_LIMIT, self.config.max_upload)
        else:
            self.confirm_page_cells(endpoint, {}, cookie)
            request.session = self.sessions.load(cookie)
            if not request.session.logged_in:
                # The body is never read; come back to the page (if it has one) after login.
                target = "/login"
                if adapter.test(request.path, "GET"):
                    target += "?next=" + quote(request.full_path.rstrip("?"))
                return redirect(target, 303)
            if endpoint in _BODY_LIMITS:
                getattr(self, _BODY_LIMITS[endpoint])(request)
        if not check_csrf(self.config.csrf_key, cookie or "", request.form_field("csrf")):
            # Keep the sid: a forged POST must not log the victim out.
            request.session = self.sessions.unchecked(cookie)
            raise Forbidden(FORM_EXPIRED)
        return None

    def wsgi_app(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self.config.max_upload
        # Ordinary form fields are small; files spool to disk instead.  werkzeug
        # also applies this limit to its 64 KiB read buffer, so it must be larger.
        request.max_form_memory_size = 1024 * 1024
        self.start()  # a no-op unless this is the first request after a fork
        self.load.enter()
        began = time.perf_counter()
        try:
            with request:  # closes the spooled upload files when the view is done
                response = self.dispatch_request(request)
            metrics.observe(environ.get(metrics.ROUTE_KEY, metrics.UNMATCHED),
                            response.status_code, time.perf_counter() - began)
            app_iter = response(environ, start_response)
        except BaseException:
            self.load.leave()
            raise
        # Count a streamed download as in flight until its last byte is sent.
        return ClosingIterator(app_iter, [self.load.leave])

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        if not query.isascii():
            # Raw bytes a client did not percent-encode: werkzeug decodes the query
            # string strictly as ASCII/UTF-8 and would fail.  Encoded, they read as
            # any browser's %XX would (invalid UTF-8 becomes U+FFFD).
            environ["QUERY_STRING"] = quote(query.encode("latin-1", "replace"),
                                            safe=_QUERY_SAFE)
        def with_security_headers(status: str, headers: list[tuple[str, str]],
                                  exc_info: Any = None) -> Any:
            # Here, outside the static files' middleware, so its answers get them too.
            names = {name.lower() for name, _ in headers}
            # A view's own framing rule stays: the mail's HTML frame is SAMEORIGIN.
            kept = names & {"x-frame-options"}
            headers = [(n, v) for n, v in headers
                       if n.lower() not in _REPLACED or n.lower() in kept] + [
                h for h in SECURITY_HEADERS if h[0].lower() not in kept]
            if "content-security-policy" not in names:  # the mail view sets its own
                headers.append(("Content-Security-Policy", self.csp))
            return start_response(status, headers, exc_info)

        path = environ.get("PATH_INFO", "")
        if path == DAV_MOUNT or path.startswith(DAV_MOUNT + "/"):
            self.start()
            return self.dav(environ, with_security_headers)
        app_iter = self._wsgi(environ, with_security_headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            # Our views drop the body of a HEAD answer themselves; the static
            # files' middleware does not, and a server need not either.
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
            return []
        return app_iter

    # -- pages of no particular feature -------------------------------------------

    def on_index(self, request: Request) -> Response:
        return self.render(request, "index.html")

    def on_failover_worker(self, request: Request) -> Response:
        # no-cache: the browser asks again (a 304 at best) when it checks for an update.
        return Response(worker_script(self.config.site.public_url), mimetype="text/javascript",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": WORKER_CSP})

    def on_healthz(self, request: Request) -> Response:
        # The load of every worker of this frontend, not just the one answering.
        workers = self.load.workers()
        body: dict[str, Any] = {"status": "ok", "frontend": self.config.frontend,
                                "load": sum(workers.values()), "workers": len(workers)}
        status, headers = 200, {}
        try:
            self.client().get(HEALTH_ROW, HEALTH_COL)
        except RaftKVError as exc:
            body["status"], body["error"] = "unavailable", type(exc).__name__
            status, headers = 503, {"Retry-After": str(RETRY_AFTER)}
        return Response(json.dumps(body), status=status, headers=headers,
                        mimetype="application/json")

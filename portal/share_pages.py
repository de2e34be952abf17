"""The pages a share link opens, for anyone holding it: no login, no session, no app cookie.

``/s/<token>`` shows the shared file (with a download) or folder; below a shared
folder, ``/s/<token>/d/<id>`` shows a subfolder, ``/s/<token>/f/<id>`` downloads
a file and ``.../zip`` a folder as a .zip streamed as it is built (bounded in
files and bytes).  An id is served only if walking up its parents reaches the
shared folder (:func:`shards.model.drive.shares.resolve`); anything else of the
owner's is a 404, like a link that does not exist.

Guessing: a link that opens nothing, or an id outside the share, counts a miss
for the client's address (:func:`shards.model.ratelimit.count_link_miss`); past
the ``[auth] link`` rule's free misses the address gets 429 without a lookup.
A link's password goes through the shared limiter
(:func:`~shards.model.ratelimit.check_link_password`); a right one earns a
cookie signed with a key of its own, scoped to the link's path and good for
:data:`UNLOCK_TTL`.  These endpoints never load or set a session
(``portal.app._SESSIONLESS``), and their pages have no navigation of the app.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from werkzeug.exceptions import (
    Forbidden,
    Gone,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
    TooManyRequests,
)
from werkzeug.routing import BaseConverter
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from raftkv.errors import RaftKVError
from shards.model import drive, ratelimit
from shards.model.drive import FILE, FOLDER, shares

from .drive import _closing, download_type, zip_files
from .errors import http_error
from .filenames import content_disposition

if TYPE_CHECKING:
    from .app import Portal, Request

UNLOCK_TTL = 3600           # seconds a right password opens its link in that browser
PAGE = 200                  # entries of a shared folder per page
ZIP_FILES = 5_000           # files in one shared folder's .zip
ZIP_BYTES = 4 << 30         # bytes of files in one shared folder's .zip
COOKIE = "share_unlock"
FORM_LIMIT = 16 * 1024      # bytes of the password form's body
# No script at all, nothing remote; forms only back to us.
SHARE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'")
# A user's file, served for download only: should a browser render it anyway, it is
# sandboxed (an opaque origin without script), and never sniffed (nosniff: portal.app).
DOWNLOAD_CSP = "sandbox; default-src 'none'"
FORM_EXPIRED = "This form has expired. Go back, reload the page and try again."
View = Callable[..., Response]


class TokenConverter(BaseConverter):
    """A link's token in a URL; any short URL-safe text (a miss is counted, not a 404 of routing)."""

    regex = "[A-Za-z0-9_-]{1,64}"


class Locked(Exception):
    """The link has a password and this browser has not given it yet."""

    def __init__(self, share: shares.Share) -> None:
        self.share = share


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def unlock_cookie(key: bytes, share: shares.Share, now: float) -> str:
    """``<until>.<mac>``: the link's hash and its password's hash are in the MAC, so
    the cookie opens only that link, and nothing once it is revoked and remade."""
    until = int(now) + UNLOCK_TTL
    return f"{until}.{_sign(key, f'{share.hash}:{share.password}:{until}')}"


def unlocked(key: bytes, share: shares.Share, cookie: str | None, now: float) -> bool:
    until, _, mac = (cookie or "").partition(".")
    if not until.isdigit() or int(until) < now or int(until) > now + UNLOCK_TTL:
        return False
    return hmac.compare_digest(mac, _sign(key, f"{share.hash}:{share.password}:{until}"))


def share_view(view: View) -> View:
    """Answer every failure of a share page with a page of its own: the app's error page
    would show the visitor's session (someone opening their own link)."""

    @functools.wraps(view)
    def guarded(self: Portal, request: Request, token: str, **values: Any) -> Response:
        try:
            response = view(self, request, token, **values)
        except Locked as locked:
            # 200, as the login form: a page asking for a password is not an error.
            response = self.share_render("share_password.html", token=token,
                                         form=self.unlock_form(locked.share.hash),
                                         next=request.path, error=None)
        except HTTPException as exc:
            response = self.share_error(exc)
        except RaftKVError as exc:
            response = self.share_error(http_error(exc))
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
        return response

    return guarded


class SharePageViews:
    """Mixin of :class:`portal.app.Portal`: the anonymous pages of share links."""

    @property
    def share_key(self: Portal) -> bytes:
        return self.config.cluster.derive_key("share-links")

    def share_render(self: Portal, template: str, *, status: int = 200,
                     **context: Any) -> Response:
        html = self.jinja.get_template(template).render(
            cluster=self.config.cluster.name, frontend=self.config.frontend, **context)
        return Response(html, status=status, mimetype="text/html", headers={
            "Content-Security-Policy": SHARE_CSP, "Cache-Control": "no-store"})

    def share_error(self: Portal, exc: HTTPException) -> Response:
        response = self.share_render("share_error.html", status=exc.code or 500, code=exc.code,
                                     title=exc.name, message=exc.description)
        for name, value in exc.get_headers():
            if name.lower() == "retry-after":
                response.headers[name] = value
        return response

    def unlock_form(self: Portal, link_hash: str) -> str:
        """The password form's token: made for this link only, with a key of its own (a
        stranger's page cannot post it for a visitor without having opened the link)."""
        return _sign(self.share_key, f"unlock:{link_hash}")

    def miss(self: Portal, request: Request, exc: HTTPException) -> HTTPException:
        """Count a link or id that opened nothing for the client's address; the answer."""
        wait = ratelimit.count_link_miss(self.client(), request.remote_addr or "?",
                                         self.auth_limits)
        return TooManyRequests(retry_after=max(1, int(wait) + 1)) if wait else exc

    def open_share(self: Portal, request: Request, token: str, *,
                   locked_ok: bool = False) -> shares.Share:
        """The link's share, once the address may try and the browser holds its password.

        :raises TooManyRequests: too many misses from this address.
        :raises NotFound: no such link (a miss).  :raises Gone: it expired.
        :raises Locked: it has a password this browser has not given.
        """
        wait = ratelimit.link_miss_wait(self.client(), request.remote_addr or "?")
        if wait > 0:
            raise TooManyRequests("Too many links that open nothing came from your address. "
                                  "Please wait a while.", retry_after=max(1, int(wait) + 1))
        share = shares.lookup(self.client(), token)
        if share is None:
            raise self.miss(request, NotFound("This link does not open anything. It may have "
                                              "been revoked, or mistyped."))
        now = time.time()
        if share.expired(now):
            raise Gone("This link has expired.")
        if (share.has_password and not locked_ok
                and not unlocked(self.share_key, share, request.cookies.get(COOKIE), now)):
            raise Locked(share)
        return share

    def shared(self: Portal, request: Request, share: shares.Share, kind: str,
               item_id: str) -> tuple[drive.Item, list[drive.Item]]:
        try:
            return shares.resolve(self.client(), share, kind, item_id)
        except drive.NoSuchItem as exc:
            raise self.miss(request, NotFound(str(exc))) from None

    @share_view
    def on_share_open(self: Portal, request: Request, token: str) -> Response:
        share = self.open_share(request, token)
        return self.share_folder_page(request, token, share, share.item_id, share.kind)

    @share_view
    def on_share_folder(self: Portal, request: Request, token: str, folder_id: str) -> Response:
        share = self.open_share(request, token)
        return self.share_folder_page(request, token, share, folder_id, FOLDER)

    def share_folder_page(self: Portal, request: Request, token: str, share: shares.Share,
                          item_id: str, kind: str) -> Response:
        item, path = self.shared(request, share, kind, item_id)
        if kind == FILE:
            return self.share_render("share.html", token=token, item=item, path=[],
                                     entries=[], more=False, after="")
        after = request.args.get("after", "")
        try:
            after = drive.check_name(after) if after else ""
        except drive.BadName:
            after = ""
        _, entries, more = drive.entries_page(self.client(), share.owner, item.id, after=after,
                                              limit=PAGE)
        return self.share_render("share.html", token=token, item=item, path=path,
                                 entries=entries, more=more,
                                 after=entries[-1].name if more and entries else "")

    @share_view
    def on_share_file(self: Portal, request: Request, token: str, file_id: str) -> Response:
        share = self.open_share(request, token)
        item, _ = self.shared(request, share, FILE, file_id)
        if request.method == "HEAD":  # the index knows the size: the bytes stay unopened
            size, chunks = item.size, None
        else:
            item, size, chunks = drive.open_file(self.client(), share.owner, file_id)
        # Always "attachment", sandboxed and nosniff: a user's HTML never runs on our origin.
        response = Response(mimetype=download_type(item), direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(item.name),
            "Content-Security-Policy": DOWNLOAD_CSP, "Cache-Control": "private, no-cache"})
        response.content_length = size
        if chunks is not None:
            response.response = _closing(chunks)
        return response

    @share_view
    def on_share_zip(self: Portal, request: Request, token: str) -> Response:
        share = self.open_share(request, token)
        return self.share_zip_of(request, share, share.item_id)

    @share_view
    def on_share_folder_zip(self: Portal, request: Request, token: str,
                            folder_id: str) -> Response:
        return self.share_zip_of(request, self.open_share(request, token), folder_id)

    def share_zip_of(self: Portal, request: Request, share: shares.Share,
                     folder_id: str) -> Response:
        """A shared folder as a .zip: its files listed first, so one over the bounds is a
        clear 413 before a byte is sent, then streamed as :func:`portal.drive.zip_files`."""
        folder, _ = self.shared(request, share, FOLDER, folder_id)
        files: list[tuple[str, drive.Item]] = []
        total = 0
        for path, item in drive.walk_files(self.client(), share.owner, folder.id):
            files.append((path, item))
            total += item.size
            if len(files) > ZIP_FILES or total > ZIP_BYTES:
                raise RequestEntityTooLarge(
                    f"This folder is too large for one .zip (over {ZIP_FILES:,} files or "
                    f"{ZIP_BYTES >> 30} GB); download its subfolders or files instead.")
        name = f"{folder.name or 'shared'}.zip"
        response = Response(mimetype="application/zip", direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(name),
            "Content-Security-Policy": DOWNLOAD_CSP, "Cache-Control": "private, no-cache"})
        if request.method != "HEAD":
            response.response = zip_files(self.client(), share.owner, files)
        return response

    @share_view
    def on_share_unlock(self: Portal, request: Request, token: str) -> Response:
        """The password form: its own token (no session to hold one), then the limiter."""
        request.max_content_length = FORM_LIMIT  # a few small fields, from anyone
        sent = request.form_field("form") or ""
        if not hmac.compare_digest(sent.encode("utf-8", "replace"),
                                   self.unlock_form(shares.link_hash(token)).encode()):
            raise Forbidden(FORM_EXPIRED)
        share = self.open_share(request, token, locked_ok=True)
        target = request.form.get("next", "")
        if not target.startswith(f"/s/{token}") or any(c in target for c in "\\\r\n\t?#"):
            target = f"/s/{token}"
        password = request.form.get("password", "")[:256]
        verdict = ratelimit.check_link_password(
            self.client(), share.hash, request.remote_addr or "?", self.auth_limits,
            lambda: share.check_password(password))
        if not verdict.right:
            error = ("Too many wrong passwords. Please wait and try again." if verdict.limited
                     else "That password is not right.")
            response = self.share_render("share_password.html", status=429 if verdict.limited
                                         else 403, token=token, form=self.unlock_form(share.hash),
                                         next=target, error=error)
            if verdict.limited:
                response.headers["Retry-After"] = str(max(1, int(verdict.retry_after) + 1))
            return response
        response = redirect(quote(target, safe="/-_"), 303)
        response.set_cookie(COOKIE, unlock_cookie(self.share_key, share, time.time()),
                            max_age=UNLOCK_TTL, path=f"/s/{token}", httponly=True,
                            secure=request.scheme == "https" or self.config.cookie_secure,
                            samesite="Lax")
        return response

"""The owner's side of share links (make one, list them, revoke one) and the drive's search.

The links themselves and what they open are :mod:`shards.model.drive.shares`;
the anonymous pages a link opens are :mod:`.share_pages`; the search is
:mod:`shards.model.drive.search`.  A link's token is shown once, on the page
that made it: the store keeps only its hash, so nobody can show it again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from werkzeug.exceptions import BadRequest
from werkzeug.utils import redirect

from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT, search, shares

from .auth import current_user, login_required
from .pages import with_notice

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request

# The expiries offered on the form, in days; "" is "never".
EXPIRIES = {"": 0, "1": 1, "7": 7, "30": 30, "365": 365}
MIN_PASSWORD = 6      # a link's password, when it has one
MAX_PASSWORD = 256
_KINDS = {"f": FILE, "d": FOLDER}


def item_ref(value: str | None) -> tuple[str, str]:
    """``(kind, id)`` from a form's ``f:<id>`` / ``d:<id>`` (``d:root`` for the whole drive)."""
    code, _, item_id = (value or "").partition(":")
    kind = _KINDS.get(code)
    if kind is None or not (drive.is_id(item_id) or (kind == FOLDER and item_id == ROOT)):
        raise BadRequest("Choose a file or folder to share.")
    return kind, item_id


def item_url(item: drive.Item) -> str:
    """Where the owner sees an item: a folder's page, or a file's folder."""
    if item.is_folder:
        return "/drive" if item.id == ROOT else f"/drive/d/{item.id}"
    return "/drive" if item.parent == ROOT else f"/drive/d/{item.parent}"


def share_url(portal: Portal, request: Request, token: str) -> str:
    """The link as others open it: through the balancer's public address when known."""
    base = portal.config.site.public_url or request.host_url
    return f"{base.rstrip('/')}/s/{token}"


class DriveShareViews:
    """Mixin of :class:`portal.app.Portal`: the Shares page, making links, search."""

    @login_required
    def on_drive_shares(self: Portal, request: Request) -> Response:
        user = current_user(request)
        owned = shares.owned(self.client(), user)
        items = shares.shared_items(self.client(), user, owned)
        return self.render(request, "drive_shares.html", shares=owned, items=items,
                           now=time.time(), item_url=item_url, limit=shares.MAX_SHARES)

    @login_required
    def on_drive_share_new(self: Portal, request: Request) -> Response:
        """GET: the form for a link to one item; POST: make it and show it, once."""
        user = current_user(request)
        source = request.form if request.method == "POST" else request.args
        kind, item_id = item_ref(source.get("item"))
        found = (drive.get_file(self.client(), user, item_id) if kind == FILE
                 else drive.get_folder(self.client(), user, item_id))
        if found is None:
            raise drive.NoSuchItem("There is no such item in your drive.")
        if request.method != "POST":
            return self.render(request, "drive_share_new.html", item=found, back=item_url(found))
        expiry = request.form.get("expires", "")
        password = request.form.get("password", "")
        error = None
        if expiry not in EXPIRIES:
            error = "Choose one of the expiries offered."
        elif password and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            error = (f"A link's password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters "
                     "(or leave it empty for none).")
        if error is not None:
            return self.render(request, "drive_share_new.html", status=400, item=found,
                               back=item_url(found), error=error)
        now = time.time()
        expires = now + EXPIRIES[expiry] * 86400.0 if EXPIRIES[expiry] else 0.0
        token, share = shares.create_share(self.client(), user, kind, item_id, expires=expires,
                                           password=password, now=now)
        return self.render(request, "drive_share_made.html", status=201, item=found, share=share,
                           url=share_url(self, request, token), back=item_url(found))

    @login_required
    def on_drive_share_revoke(self: Portal, request: Request) -> Response:
        user = current_user(request)
        if not shares.revoke(self.client(), user, request.form.get("link", "")):
            raise drive.NoSuchItem("You have no such share link (it may be revoked already).")
        return redirect(with_notice("/drive/shares", "share-revoked"), 303)

    @login_required
    def on_drive_search(self: Portal, request: Request) -> Response:
        user = current_user(request)
        query = request.args.get("q", "").strip()[:search.MAX_QUERY]
        began = time.perf_counter()
        found = search.search(self.client(), user, query) if query else None
        return self.render(request, "drive_search.html", query=query, found=found,
                           took=time.perf_counter() - began, results=search.RESULTS,
                           scanned=search.SCAN_LIMIT, item_url=item_url)

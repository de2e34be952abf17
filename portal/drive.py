"""The drive's pages: folder listings, upload (streamed in), download (streamed out), zip.

The data model is :mod:`shards.model.drive` (one row of names per user, a row
per file's bytes); renames, moves and deletes are in :mod:`.drive_edit`.
Every URL names an id *within the logged-in user's rows*, so another user's
id is simply not found.  Uploads are spooled to disk by werkzeug and streamed
into the store in chunks; downloads stream chunk by chunk out of it.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from markupsafe import Markup
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import BaseConverter
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from shards.model import drive
from shards.model.drive import ROOT

from .auth import current_user, login_required
from .cache import ROWS
from .errors import http_message, http_status
from .filenames import BadFileName, check_filename, content_disposition
from .folders import FolderView, page_keys, read_folder
from .pages import PAGE_SCRIPT_HASH, _subresource_hash, with_notice
from .sessions import csrf_token

if TYPE_CHECKING:
    from werkzeug.datastructures import FileStorage

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request
    from .pagestore import Key

# The drive page runs the page script and one more of ours (uploads with progress, drag
# and drop, select all), each allowed by its hash as pages.js is (docs/architecture.md,
# "Pages"), and sends uploads back to us; nothing else is allowed (but the page script's
# registering the failover worker: portal.failover).
DRIVE_SCRIPT = "/static/drive.js"
DRIVE_SCRIPT_HASH = _subresource_hash("drive.js")
DRIVE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; worker-src 'self'; "
             f"script-src '{PAGE_SCRIPT_HASH}' '{DRIVE_SCRIPT_HASH}'; "
             "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
FORM_OVERHEAD = 64 * 1024  # multipart headers and small fields around an upload's bytes
# type/subtype tokens only (RFC 9110 §8.3.1); anything fancier is served as bytes.
_CTYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
_SORTS = {"name": lambda i: (i.name.casefold(), i.name),
          "size": lambda i: (i.size, i.name.casefold()),
          "date": lambda i: (i.modified, i.name.casefold())}


def undo_ids(value: str) -> list[str]:
    """Ids from a notice's ``undo`` parameter (portal.drive_trash); [] for anything else."""
    ids = value.split(",") if value else []
    return ids if len(ids) <= 500 and all(drive.is_id(i) for i in ids) else []


def counted(url: str, key: str, count: int) -> str:
    """``url`` with the notice for ``count`` things: "Moved." for one, "Moved 3 items." else."""
    return with_notice(url, key) if count == 1 else with_notice(url, f"{key}-n", count)


def wants_json(request: Request) -> bool:
    """static/drive.js asks for JSON answers; a plain form gets pages."""
    return "application/json" in request.headers.get("Accept", "")


def json_answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


def held_json(held: drive.Held) -> dict[str, Any]:
    return {"held": held.item.id, "name": held.item.name,
            "replace": bool(held.other_id) and not held.other_is_folder}


class FileIdConverter(BaseConverter):
    """A file id in a URL: 24 hex digits, so nothing else reaches a lookup."""

    regex = "[0-9a-f]{24}"


class FolderIdConverter(BaseConverter):
    """A folder id in a URL: like a file id, or ``root``."""

    regex = "root|[0-9a-f]{24}"


def folder_url(folder_id: str) -> str:
    return "/drive" if folder_id == ROOT else f"/drive/d/{folder_id}"


def safe_ctype(mimetype: str | None) -> str:
    """The browser-declared type if it is a plain ``type/subtype``, else octet-stream."""
    if mimetype and _CTYPE_RE.fullmatch(mimetype):
        return mimetype.lower()
    return "application/octet-stream"


def download_type(item: drive.Item) -> str:
    """The type to serve a file as: as uploaded, else guessed from its name."""
    if item.ctype != "application/octet-stream":
        return item.ctype
    guessed, encoding = mimetypes.guess_type(item.name, strict=False)
    return guessed if guessed and not encoding else "application/octet-stream"


def sorted_items(items: Iterable[drive.Item], sort: str, order: str) -> list[drive.Item]:
    """Folders first, then files, each group by ``sort`` ("name", "size", "date")."""
    key = _SORTS.get(sort, _SORTS["name"])
    ordered = sorted(items, key=key, reverse=order == "desc")
    return [i for i in ordered if i.is_folder] + [i for i in ordered if not i.is_folder]


def _cursor(request: Request, name: str) -> str:
    """A paging link's name (a GET parameter): only something that could be a name."""
    value = request.args.get(name, "")
    try:
        return drive.check_name(value) if value else ""
    except drive.BadName:
        raise BadRequest("That page of the folder cannot be shown.") from None


def _size_of(upload: FileStorage) -> int:
    stream = upload.stream
    stream.seek(0, 2)  # werkzeug spooled it to memory or a temp file: seekable
    size = stream.tell()
    stream.seek(0)
    return size


class DriveViews:
    """Mixin of :class:`portal.app.Portal`: the drive pages."""

    def upload_limit(self: Portal, request: Request) -> None:
        """Before an upload's body is read: cap it at what the user's quota still allows.

        Called by the dispatcher before the CSRF check parses the form, so a
        body announced too large is refused without reading it, and a chunked
        one is cut off as soon as it passes the limit.
        """
        if request.session.user is None:
            return
        limit, used = self.quota_and_usage(request.session.user)
        free = max(0, limit - used)
        request.quota_free = free
        request.max_content_length = min(self.config.max_upload, free + FORM_OVERHEAD)

    def cells_drive(self: Portal, user: str) -> list[Key]:
        """The cells the drive's root page confirms with the session (portal.pagestore)."""
        return self.cells_drive_folder(user, ROOT)

    def cells_drive_folder(self: Portal, user: str, folder_id: str) -> list[Key]:
        return page_keys(self.client(), user, folder_id)

    def folder_page(self: Portal, request: Request, folder_id: str, *, status: int = 200,
                    error: str | None = None) -> Response:
        """One page of a folder, with an error above it when an action failed.

        Sorted by name (either way) it is read a page at a time; by size or date,
        whole (portal.folders).
        """
        user = current_user(request)
        sort = request.args.get("sort", "name")
        sort = sort if sort in _SORTS else "name"
        order = "desc" if request.args.get("order") == "desc" else "asc"
        after, before = _cursor(request, "after"), _cursor(request, "before")
        view = read_folder(self.client(), self.listings, user, folder_id, sort=sort,
                           descending=order == "desc", after=after, before=before)
        if view.restart:  # "previous" from the second page: that is the first
            return redirect(f"{folder_url(folder_id)}?sort={sort}&order={order}", 303)
        items = view.items if sort == "name" else sorted_items(view.items, sort, order)
        crumbs = view.crumbs
        response = self.render(
            request, "drive.html", status=status, error=error, folder=crumbs[-1], crumbs=crumbs,
            items=items, rows=self.rows(request, user, folder_id, view, items, sort, order),
            sort=sort, order=order, after=view.after, before=view.before,
            used=view.used, quota=self.user_quota(user),
            undo=undo_ids(request.args.get("undo", "")),
            free=max(0, self.user_quota(user) - view.used),
            drive_script=DRIVE_SCRIPT, drive_script_hash=DRIVE_SCRIPT_HASH)
        response.headers["Content-Security-Policy"] = self.failover_policy(DRIVE_CSP)
        return response

    def rows(self: Portal, request: Request, user: str, folder_id: str, view: FolderView,
             items: list[drive.Item], sort: str, order: str) -> Markup:
        """The folder's rows as HTML: rendering them is most of a listing's time, so
        they are kept under the folder header's version (a portal.cache of their own) with all else
        they show -- the page, the session's CSRF token, the read-only state -- and
        used again only for the same page of the unchanged folder in the same session."""
        csrf = csrf_token(self.config.csrf_key, request.session.sid)
        read_only = self.read_only(request.session)
        shown = (sort, order, view.after, view.before, csrf, read_only)
        if view.version is not None:
            kept = self.rendered_rows.get(ROWS, user, folder_id, view.version)
            if kept is not None and kept[0] == shown:
                return cast(Markup, kept[1])
        html = Markup(self.jinja.get_template("_drive_rows.html").render(
            items=items, csrf=csrf, read_only=read_only))
        if view.version is not None:
            self.rendered_rows.put(ROWS, user, folder_id, view.version, (shown, html),
                                   cost=len(html))
        return html

    def drive_refusal(self: Portal, request: Request, folder_id: str,
                      exc: drive.DriveError, note: str = "") -> Response:
        """Show why a change was refused, on the folder it was asked from, with the
        status of :mod:`portal.errors`; with that folder gone too, the refusal's own page."""
        if isinstance(exc, drive.NoSuchItem) and folder_id != ROOT:
            try:
                drive.folder_path(self.client(), current_user(request), folder_id)
            except drive.NoSuchItem:
                raise exc from None
        return self.folder_page(request, folder_id, status=http_status(exc),
                                error=f"{http_message(exc)}{note}")

    @login_required
    def on_drive(self: Portal, request: Request) -> Response:
        return self.folder_page(request, ROOT)

    @login_required
    def on_drive_folder(self: Portal, request: Request, folder_id: str) -> Response:
        return self.folder_page(request, folder_id)

    @login_required
    def on_drive_mkdir(self: Portal, request: Request) -> Response:
        user = current_user(request)
        parent = self.form_folder(request)
        try:
            name = check_filename(request.form.get("name", ""))
            drive.create_folder(self.client(), user, parent, name)
        except BadFileName as exc:
            return self.drive_refusal(request, parent, drive.BadName(
                f"That folder name cannot be used: {exc}."))
        except drive.DriveError as exc:
            return self.drive_refusal(request, parent, exc)
        return redirect(with_notice(folder_url(parent), "folder-created"), 303)

    def form_folder(self: Portal, request: Request) -> str:
        """The folder a form acts in (a hidden field); only the shape is checked here."""
        folder_id = request.form.get("folder", ROOT)
        if folder_id != ROOT and not drive.is_id(folder_id):
            raise NotFound("There is no such folder in your drive.")
        return folder_id

    @login_required
    def on_drive_upload(self: Portal, request: Request) -> Response:
        user = current_user(request)
        folder_id = self.form_folder(request)
        uploads = [u for u in request.files.getlist("file") if u.filename]
        if not uploads:
            raise BadRequest("Choose a file to upload.")
        try:
            names = [check_filename(u.filename or "") for u in uploads]
        except BadFileName as exc:
            return self.drive_refusal(request, folder_id, drive.BadName(
                f"That file name cannot be used: {exc}."))
        stored: list[str] = []
        held: list[drive.Held] = []
        for upload, name in zip(uploads, names, strict=True):
            try:
                placed = self.store_or_hold(user, folder_id, name, upload)
            except drive.DriveError as exc:
                if wants_json(request):
                    return json_answer({"error": http_message(exc)}, http_status(exc))
                done = f" ({', '.join(stored)} uploaded.)" if stored else ""
                return self.drive_refusal(request, folder_id, exc, done)
            if isinstance(placed, drive.Held):
                held.append(placed)
            else:
                stored.append(name)
        if wants_json(request):  # static/drive.js: one file per request
            return json_answer({"uploaded": stored, "clashes": [held_json(h) for h in held]},
                               409 if held else 200)
        if held:  # the plain form: ask about the names taken, the others are in
            return self.clash_page(request, folder_id, [h.item.id for h in held],
                                   uploaded=len(stored), status=409)
        return redirect(counted(folder_url(folder_id), "uploaded", len(stored)), 303)

    def store_or_hold(self: Portal, user: str, folder_id: str, name: str,
                      upload: FileStorage) -> drive.Item | drive.Held:
        """Store an upload under its name; with the name taken, hold it for the user's
        answer (shards.model.drive.held) -- never over the other file."""
        client, size, ctype = self.client(), _size_of(upload), safe_ctype(upload.mimetype)
        try:
            return drive.store_file(client, user, folder_id, name, upload.stream, size=size,
                                    ctype=ctype, quota=self.user_quota(user))
        except drive.NameTaken:
            drive.drop_stale(client, user)  # answers nobody gave: their bytes go
            upload.stream.seek(0)  # refused before linking: read it again for the hold
            return drive.hold_file(client, user, folder_id, name, upload.stream, size=size,
                                   ctype=ctype, quota=self.user_quota(user))

    @login_required
    def on_drive_download(self: Portal, request: Request, file_id: str) -> Response:
        user = current_user(request)
        # Reachable by a path: a file below a folder in the Trash is not served.
        item = drive.live_file(self.client(), user, file_id)
        if request.method == "HEAD":  # the index knows the size: no need to open the bytes
            size, chunks = item.size, None
        else:
            item, size, chunks = drive.open_file(self.client(), user, file_id)
        # Always "attachment": a user's HTML file must never render on our origin.
        response = Response(mimetype=download_type(item), direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(item.name),
            "Cache-Control": "private, no-cache"})
        response.content_length = size
        if chunks is not None:
            response.response = _closing(chunks)
        return response

    @login_required
    def on_drive_zip(self: Portal, request: Request, folder_id: str) -> Response:
        """A folder and everything below it as one .zip, built while it is sent.

        Its length is unknown until the end, so it goes out chunked.
        """
        user = current_user(request)
        crumbs = drive.folder_path(self.client(), user, folder_id)
        name = f"{crumbs[-1].name or 'drive'}.zip"
        response = Response(mimetype="application/zip", direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(name),
            "Cache-Control": "private, no-cache"})
        if request.method != "HEAD":
            response.response = zip_stream(self.client(), user, folder_id)
        return response


class _Sink:
    """A write-only, unseekable file for zipfile: what was written since the last take()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # zipfile closes only files it opened; a file protocol needs it all the same

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(client: KeyValueStore, user: str, folder_id: str) -> Iterator[bytes]:
    """The files below a folder as a stored (uncompressed) ZIP64 archive, chunk by chunk."""
    return zip_files(client, user, drive.walk_files(client, user, folder_id))


def zip_files(client: KeyValueStore, user: str,
              files: Iterable[tuple[str, drive.Item]]) -> Iterator[bytes]:
    """``(path in the archive, file)`` of ``user`` as a stored ZIP64 archive, chunk by chunk."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, item in files:
            try:
                _, _, chunks = drive.open_file(client, user, item.id)
            except drive.NoSuchItem:
                continue  # deleted while we walked
            stamp = time.gmtime(max(item.modified, 315532800))[:6]  # ZIP dates start in 1980
            info = zipfile.ZipInfo(path, date_time=stamp)
            with archive.open(info, "w", force_zip64=True) as member:
                for chunk in _closing(chunks):
                    member.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():  # the central directory
        yield data


def _closing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield ``chunks``; close the store's iterator if the client goes away early."""
    try:
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

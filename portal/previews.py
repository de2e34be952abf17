"""The drive's previews: thumbnails in the listing, and a file viewed in the browser.

Three URLs per file, all within the logged-in user's own rows:

``/drive/<id>/thumb``
    The image's thumbnail (:mod:`shards.model.drive.thumbs`), made on the first request
    by a child process (:mod:`.thumbjobs`); a file with none gets a generic icon of ours.
``/drive/<id>/inline``
    The bytes, for the viewer page to embed, behind the download's protections and more:
    a type from a fixed list (:data:`INLINE_TYPES`; every kind of text as
    ``text/plain; charset=utf-8``; never HTML, never SVG), ``nosniff``,
    ``Content-Security-Policy: sandbox`` without ``allow-scripts`` (so even opened in a
    tab of its own the document runs nothing and has an origin of its own), framed only
    by our pages, and byte ranges so that video seeks.
``/drive/<id>/view``
    Our page around it: ``<img>``, ``<video>``, ``<audio>``, a sandboxed ``<iframe>`` for
    text, an ``<object>`` for PDF.  A file of any other type gets its name and a download
    button.

PDF is the one exception to the frame's ``sandbox`` attribute: Chromium shows no PDF in a
sandboxed frame at all (any ``sandbox`` value, tested), so the PDF is an ``<object>``, and
its document is sandboxed by the bytes' own CSP.  Chromium's PDF viewer runs a PDF's own
JavaScript in its PDF engine (PDFium), in the viewer's own process, not on our origin: it
can show an alert box, and it reaches nothing of our pages (docs/security.md, "Drive
previews").
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterator
from typing import TYPE_CHECKING

from werkzeug.exceptions import NotFound, RequestedRangeNotSatisfiable
from werkzeug.wrappers import Response

from raftkv.errors import RaftKVError
from shards.model import drive

from . import thumbjobs, thumbnailer
from .auth import current_user, login_required
from .drive import download_type, folder_url
from .filenames import content_disposition
from .pages import PAGE_SCRIPT_SRC

if TYPE_CHECKING:
    from .app import Portal, Request

log = logging.getLogger("portal.previews")

# The types served inline, each as itself; the kind says how the viewer page embeds it.
INLINE_TYPES = {
    "image/jpeg": "image", "image/png": "image", "image/gif": "image", "image/webp": "image",
    "image/avif": "image", "image/bmp": "image",
    "application/pdf": "pdf",
    "audio/mpeg": "audio", "audio/ogg": "audio", "audio/wav": "audio", "audio/x-wav": "audio",
    "audio/webm": "audio", "audio/flac": "audio", "audio/mp4": "audio", "audio/aac": "audio",
    "video/mp4": "video", "video/webm": "video", "video/ogg": "video",
}
TEXT = "text/plain; charset=utf-8"
# Served as plain text: the text/* types but these, and text that calls itself something else.
_NEVER_TEXT = frozenset({"text/vtt"})  # nothing yet; a type here is offered for download only
_TEXT_LIKE = frozenset({"application/json", "application/xml", "application/javascript",
                        "application/x-sh", "application/x-python", "application/toml",
                        "application/yaml", "application/x-yaml", "application/sql",
                        "application/x-tex", "application/ld+json"})
THUMB_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
THUMB_BOX = 48  # CSS pixels the listing shows a thumbnail in (width and height are set)
# The inline bytes' policy: no script, an opaque origin (sandbox without allow-same-origin),
# nothing loaded but themselves (a media or image document loads its own URL), framed by
# our pages only.
INLINE_CSP = ("sandbox; default-src 'none'; img-src 'self'; media-src 'self'; "
              "style-src 'unsafe-inline'; frame-ancestors 'self'")
THUMB_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
VIEW_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; "
            "frame-src 'self'; object-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            f"base-uri 'none'; worker-src 'self'; {PAGE_SCRIPT_SRC}")
# Our own generic picture, for a file without a thumbnail: not a user's bytes.
ICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48" width="48" height="48">'
        b'<rect x="5" y="9" width="38" height="30" rx="3" fill="#eef1f6" stroke="#8a94a6" '
        b'stroke-width="2"/><circle cx="17" cy="19" r="4" fill="#8a94a6"/><path d="M9 35l10-11 '
        b'7 7 5-5 8 9z" fill="#8a94a6"/></svg>')


def inline_type(item: drive.Item) -> tuple[str, str] | None:
    """``(kind, Content-Type)`` the file is shown as, or None: download only.

    The type comes from the upload (else the name) and is only ever one of the list,
    so a user's HTML or SVG can never be served as what it is.
    """
    ctype = download_type(item)
    if ctype in INLINE_TYPES:
        return INLINE_TYPES[ctype], ctype
    if (ctype.startswith("text/") and ctype not in _NEVER_TEXT) or ctype in _TEXT_LIKE:
        return "text", TEXT
    if ctype == "application/octet-stream":
        guessed, _ = mimetypes.guess_type(item.name, strict=False)
        if guessed is None and item.name.lower().endswith((".md", ".log", ".ini", ".cfg")):
            return "text", TEXT
    return None


def has_thumbnail(item: drive.Item) -> bool:
    """Whether the listing shows a thumbnail for ``item`` (else nothing)."""
    return (not item.is_folder and download_type(item) in THUMB_TYPES
            and item.size <= thumbnailer.MAX_INPUT)


def thumb_url(item: drive.Item) -> str:
    """The thumbnail's address, changing with the content (a cached old one is not used)."""
    return f"/drive/{item.id}/thumb?v={item.size}-{int(item.modified * 1000)}"


def _etag(item: drive.Item) -> str:
    return f'"{item.id}-{item.size}-{int(item.modified * 1000)}"'


def _icon(cache: str) -> Response:
    return Response(ICON, mimetype="image/svg+xml", headers={
        "Cache-Control": cache, "Content-Security-Policy": THUMB_CSP})


def _ranged(chunks: Iterator[bytes], length: int) -> Iterator[bytes]:
    """The first ``length`` bytes of what ``chunks`` yields (the store's chunks from the
    range's start on); the store's iterator is closed when done or when the client
    goes away."""
    try:
        for chunk in chunks:
            if len(chunk) >= length:
                yield chunk[:length]
                return
            yield chunk
            length -= len(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def byte_range(request: Request, item: drive.Item) -> tuple[int, int] | None:
    """The one range of bytes asked for, ``(start, stop)``; None for the whole file.

    Several ranges, or an ``If-Range`` for other content, get the whole file (RFC 9110
    §14.2 allows ignoring a range).

    :raises RequestedRangeNotSatisfiable: a range entirely past the end.
    """
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != _etag(item):
        return None
    asked = request.range
    if asked is None or asked.units != "bytes" or len(asked.ranges) != 1:
        return None
    found = asked.range_for_length(item.size)
    if found is None:
        raise RequestedRangeNotSatisfiable(length=item.size)
    return found


def _own_file(self: Portal, request: Request, file_id: str) -> drive.Item:
    """The user's file, if reachable by a path (not below a folder in the Trash), as the
    download serves it."""
    return drive.live_file(self.client(), current_user(request), file_id)


def make_thumb(self: Portal, user: str, item: drive.Item, seen: int) -> drive.Thumb:
    """Make the file's thumbnail and store it, unless another frontend was first.

    The file is read again right before its bytes, and the record labelled with
    that reading (shards.model.drive.thumbs says why).
    """
    client = self.client()
    item, _, chunks = drive.open_file(client, user, item.id)
    answer = thumbjobs.made_from(chunks)
    thumb = thumbjobs.thumb_of(item, answer)
    if answer.get("retry"):
        return thumb  # the thumbnailer's own failure: not remembered against the file
    try:
        return drive.save_thumb(client, user, item.id, thumb, seen)
    except RaftKVError:
        return thumb  # read-only, or unreachable: show it, make it again next time


class PreviewViews:
    """Mixin of :class:`portal.app.Portal`: thumbnails, inline bytes, the viewer page."""

    @login_required
    def on_drive_view(self: Portal, request: Request, file_id: str) -> Response:
        item = _own_file(self, request, file_id)
        thumb = drive.file_and_thumb(self.client(), current_user(request), file_id)[1]
        shown = inline_type(item)
        # An image's size, known from its thumbnail when there is one: the page keeps its room.
        shape = ((thumb.source_width, thumb.source_height)
                 if thumb and thumb.ok and thumb.fits(item) and thumb.source_width else None)
        response = self.render(request, "drive_view.html", item=item,
                               kind=shown[0] if shown else None, shape=shape,
                               back=folder_url(item.parent))
        response.headers["Content-Security-Policy"] = self.failover_policy(VIEW_CSP)
        return response

    @login_required
    def on_drive_inline(self: Portal, request: Request, file_id: str) -> Response:
        item = _own_file(self, request, file_id)
        shown = inline_type(item)
        if shown is None:
            raise NotFound("This file cannot be shown in the browser; download it instead.")
        span = byte_range(request, item)
        start, stop = span or (0, item.size)
        response = Response(status=206 if span else 200, direct_passthrough=True, headers={
            "Content-Type": shown[1],
            "Content-Disposition": content_disposition(item.name, "inline"),
            "Content-Security-Policy": INLINE_CSP,
            # Framed by the viewer page (app.py keeps a view's own X-Frame-Options).
            "X-Frame-Options": "SAMEORIGIN",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Cache-Control": "private, no-cache", "Accept-Ranges": "bytes",
            "ETag": _etag(item)})
        response.content_length = stop - start
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{item.size}"
        if request.method != "HEAD" and stop > start:
            found = self.client().get_stream(
                drive.content_row(current_user(request), item.content_id), drive.DATA_COL,
                offset=start)
            if found is None:
                raise drive.NoSuchItem("The file's contents are missing; it may have just "
                                       "been deleted.")
            response.response = _ranged(found[1], stop - start)
        return response

    @login_required
    def on_drive_thumb(self: Portal, request: Request, file_id: str) -> Response:
        user = current_user(request)
        client = self.client()
        item, thumb, seen = drive.file_and_thumb(client, user, file_id)
        if item is None:
            raise drive.NoSuchItem("There is no such file in your drive.")
        if not has_thumbnail(item):
            return _icon("private, max-age=3600")
        if thumb is None or not thumb.fits(item):
            try:
                thumb = make_thumb(self, user, item, seen)
            except thumbjobs.Busy:
                return _icon("no-store")  # not remembered: the next listing asks again
            except OSError:
                log.exception("the thumbnailer could not be started")
                return _icon("no-store")
        if not thumb.ok:  # a failure not stored (the thumbnailer's own) is asked again
            return _icon("private, max-age=3600" if thumb.version else "no-store")
        return Response(thumb.data, mimetype=thumb.ctype, headers={
            "Cache-Control": "private, max-age=86400",  # its URL changes with the content
            "Content-Security-Policy": THUMB_CSP})

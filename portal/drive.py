"""The drive: list, upload (streamed into the store), download (streamed out), delete.

Layout; the ``{user}`` hash tag keeps all of a user's rows on one shard::

    {<user>}/drive          "f:<file_id>"  msgpack {name, size, ctype, created, parent}
    {<user>}/file:<file_id> "data"         the bytes (the store turns big values into blobs)

A file's id is random and never reused, so a listing row and its content can
be written in two steps without a window where a name points at someone
else's bytes: content first, then the listing cell (CPUT on "absent").
Renames and moves (later) change only the listing cell.  The URL names the id
within the logged-in user's rows, so another user's id is simply not found.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import msgpack
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from raftkv.errors import RaftKVError, Timeout

from .auth import current_user, login_required
from .filenames import BadFileName, check_filename, content_disposition

if TYPE_CHECKING:
    from collections.abc import Iterator

    from werkzeug.datastructures import FileStorage

    from .app import Portal, Request

DATA_COL = "data"
_FILE_ID_RE = re.compile(r"[0-9a-f]{24}")
# type/subtype tokens only (RFC 9110 §8.3.1); anything fancier is served as bytes.
_CTYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")


def drive_row(user: str) -> str:
    return f"{{{user}}}/drive"


def file_row(user: str, file_id: str) -> str:
    return f"{{{user}}}/file:{file_id}"


def safe_ctype(mimetype: str | None) -> str:
    """The browser-declared type if it is a plain ``type/subtype``, else octet-stream."""
    if mimetype and _CTYPE_RE.fullmatch(mimetype):
        return mimetype.lower()
    return "application/octet-stream"


def _size_of(upload: FileStorage) -> int:
    stream = upload.stream
    stream.seek(0, 2)  # werkzeug spooled it to memory or a temp file: seekable
    size = stream.tell()
    stream.seek(0)
    return size


class DriveViews:
    """Mixin of :class:`portal.app.Portal`: the drive pages."""

    @login_required
    def on_drive(self: Portal, request: Request) -> Response:
        user = current_user(request)
        files = []
        for column, cell in self.client().get_row(drive_row(user), prefix="f:").items():
            meta = msgpack.unpackb(cell.value, raw=False)
            files.append({**meta, "id": column[2:]})
        files.sort(key=lambda f: (f["name"].casefold(), f["created"]))
        return self.render(request, "drive.html", files=files)

    @login_required
    def on_drive_upload(self: Portal, request: Request) -> Response:
        user = current_user(request)
        uploads = [u for u in request.files.getlist("file") if u.filename]
        if not uploads:
            raise BadRequest("Choose a file to upload.")
        try:
            names = [check_filename(u.filename or "") for u in uploads]
        except BadFileName as exc:
            raise BadRequest(f"That file name cannot be used: {exc}.") from None
        for upload, name in zip(uploads, names, strict=True):
            self._store_file(user, upload, name)
        return redirect("/drive", 303)

    def _store_file(self: Portal, user: str, upload: FileStorage, name: str) -> str:
        client = self.client()
        file_id = secrets.token_hex(12)
        size = _size_of(upload)
        # put_stream reads the spooled upload in chunks: the file is never
        # held whole in memory, here or in the store client.
        client.put_stream(file_row(user, file_id), DATA_COL, upload.stream)
        meta: dict[str, Any] = {"name": name, "size": size, "ctype": safe_ctype(upload.mimetype),
                                "created": time.time(), "parent": ""}
        try:
            client.cput(drive_row(user), f"f:{file_id}", msgpack.packb(meta), if_version=0)
        except RaftKVError as exc:
            # After a timeout the listing cell may exist after all: keep the
            # bytes it would point to.  Otherwise drop the unreachable content.
            if not isinstance(exc, Timeout):
                with contextlib.suppress(RaftKVError):
                    client.delete(file_row(user, file_id), DATA_COL)
            raise
        return file_id

    def _file_meta(self: Portal, user: str, file_id: str) -> dict[str, Any]:
        if not _FILE_ID_RE.fullmatch(file_id):
            raise NotFound("There is no such file in your drive.")
        cell = self.client().get(drive_row(user), f"f:{file_id}")
        if cell is None:
            raise NotFound("There is no such file in your drive.")
        meta: dict[str, Any] = msgpack.unpackb(cell.value, raw=False)
        return meta

    @login_required
    def on_drive_download(self: Portal, request: Request, file_id: str) -> Response:
        user = current_user(request)
        meta = self._file_meta(user, file_id)
        headers = {"Content-Disposition": content_disposition(meta["name"]),
                   "Cache-Control": "private, no-cache"}
        # Always "attachment": a user's HTML file must never render on our origin.
        response = Response(mimetype=meta["ctype"], headers=headers, direct_passthrough=True)
        if request.method == "HEAD":  # the listing knows the size: no need to open the data
            response.content_length = meta["size"]
            return response
        found = self.client().get_stream(file_row(user, file_id), DATA_COL)
        if found is None:
            raise NotFound("The file's contents are missing; it may have just been deleted.")
        response.content_length, chunks = found
        response.response = _closing(chunks)
        return response

    @login_required
    def on_drive_delete(self: Portal, request: Request, file_id: str) -> Response:
        user = current_user(request)
        self._file_meta(user, file_id)
        client = self.client()
        # Listing cell first: once it is gone the file is gone for the user,
        # and a crash before the second delete leaves only unreachable bytes.
        client.delete(drive_row(user), f"f:{file_id}")
        client.delete(file_row(user, file_id), DATA_COL)
        return redirect("/drive", 303)


def _closing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield ``chunks``; close the store's iterator if the client goes away early."""
    try:
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

"""PUT and COPY of files: bytes streamed into the store, then linked in one mutation.

A PUT's body is read from the WSGI input while it arrives and goes straight into
the new bytes' row (``drive.store_file``, or ``drive.put_content`` over a file):
never whole in memory, never spooled.  Both the drive's file-size limit and what
the quota leaves bound it; a Content-Length that cannot fit was refused before
(:mod:`.door`).

Replacing a file stores the new bytes first, then makes them the file's current ones
in one ``mutate_row`` (``drive.overwrite``): the file keeps its id, and what it held
becomes its newest earlier version.  That mutation is conditioned on the index version
read before the entry was found unchanged -- the entry the request's If headers were
checked against -- so a PUT never overwrites a file newer than the one the client saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wsgidav.dav_error import HTTP_PRECONDITION_FAILED, HTTP_REQUEST_ENTITY_TOO_LARGE, DAVError

from shards.model import drive
from shards.model.drive.contents import drop_unlinked
from shards.model.drive.records import drive_row, entry_col

from ..drive import safe_ctype
from .paths import Found, found_entry, store_errors

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

    from .door import DavDoor


class _Body:
    """The request body, at most ``limit`` bytes of it (then a 413)."""

    def __init__(self, stream: Any, length: int | None, limit: int) -> None:
        self._stream, self._left, self._limit = stream, length, limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._left is not None:
            size = self._left if size < 0 else min(size, self._left)
            if size == 0:
                return b""
        data: bytes = self._stream.read(size)
        self.count += len(data)
        if self._left is not None:
            self._left -= len(data)
        if self.count > self._limit:
            raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE,
                           f"A file can be at most {self._limit:,} bytes here.")
        return data


def _length(environ: dict[str, Any]) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class Upload:
    """One PUT: :meth:`store` reads and links the body; WsgiDAV then writes what is left
    of the input (nothing) to it and calls :meth:`finish`."""

    def __init__(self, door: DavDoor, user: str, environ: dict[str, Any], *,
                 found: Found | None, parent: drive.Item | None, name: str,
                 content_type: str | None) -> None:
        self._door, self._user, self._environ = door, user, environ
        self._found, self._parent, self._name = found, parent, name
        self._ctype = safe_ctype((content_type or "").split(";")[0].strip() or None)
        self.stored: Found | None = None

    def store(self, *, empty: bool = False) -> None:
        length = 0 if empty else _length(self._environ)
        stream = self._environ["wsgi.input"] if not empty else None
        body = _Body(stream, length, self._door.max_file)
        client, quota = self._door.client(), self._door.quota(self._user)
        with store_errors():
            if self._found is None:
                assert self._parent is not None
                try:
                    item = drive.store_file(client, self._user, self._parent.id, self._name,
                                            body, quota=quota, size=length, ctype=self._ctype)
                    self.stored = _entry(client, self._user, item)
                    return
                except drive.NameTaken:
                    if self._environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*":
                        raise DAVError(HTTP_PRECONDITION_FAILED,
                                       "Something of that name was made meanwhile.") from None
                    if body.count:  # its bytes were read already: they cannot be read again
                        raise
                    self._found = _current(client, self._user, self._parent.id, self._name)
                    if self._found is None or self._found.item.is_folder:
                        raise
            self.stored = overwrite_file(client, self._user, self._found, body, quota=quota,
                                       ctype=self._ctype)

    def write(self, data: bytes) -> None:
        if data:  # store() read the input to its end; WsgiDAV finds nothing left
            raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, "More body than announced.")

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        pass

    def finish(self, *, failed: bool) -> Found | None:
        return self.stored


def _current(client: KeyValueStore, user: str, folder_id: str, name: str) -> Found | None:
    cell = client.get(drive_row(user), entry_col(folder_id, name))
    return None if cell is None else found_entry(folder_id, name, cell)


def _entry(client: KeyValueStore, user: str, item: drive.Item) -> Found | None:
    return _current(client, user, item.parent, item.name)


def overwrite_file(client: KeyValueStore, user: str, old: Found, stream: Any, *, quota: int,
                 ctype: str) -> Found | None:
    """New contents for the file ``old``: the bytes stored first, then made its current
    ones in one mutation (``drive.overwrite``: the file keeps its id, what it held becomes
    its newest earlier version) -- only if it is still ``old`` (else 412, the new bytes
    dropped)."""
    item = old.item
    content_id, count = drive.put_content(client, user, stream, size=None, quota=quota)
    content = drive.Content(content_id, count, ctype)
    index = drive.get_file(client, user, item.id)
    now = _current(client, user, item.parent, item.name)
    if index is None or now is None or now.etag != old.etag:
        drop_unlinked(client, user, content_id)
        raise DAVError(HTTP_PRECONDITION_FAILED, "The file changed while it was written.")
    try:
        placed = drive.overwrite(client, user, item.id, content, quota=quota,
                                 expect=index.version)
    except drive.Changed:
        raise DAVError(HTTP_PRECONDITION_FAILED,
                       "The file changed while it was written.") from None
    return _entry(client, user, placed)


def copy_file(door: DavDoor, user: str, item: drive.Item, folder: drive.Item, name: str,
              existing: Found | None, *, source_user: str | None = None) -> None:
    """COPY of one file to ``folder``/``name`` of ``user``'s drive: its bytes streamed into
    a new file (the model's files each own their bytes row, dropped with the file: nothing
    to share).  ``source_user``: the drive ``item`` is in, when not ``user``'s (a folder
    shared with the user, portal.dav.shared); the copy fills ``user``'s quota."""
    client, quota = door.client(), door.quota(user)
    with store_errors():
        source_user = source_user or user
        _, size, chunks = drive.open_file(client, source_user, item.id)
        source = ChunkReader(lambda offset: drive.open_file(client, source_user, item.id,
                                                            offset=offset)[2], opened=chunks)
        try:
            if existing is not None and not existing.item.is_folder:
                overwrite_file(client, user, existing, source, quota=quota, ctype=item.ctype)
                return
            if existing is not None:
                drive.trash(client, user, existing.item.id, kind=drive.FOLDER)
            drive.store_file(client, user, folder.id, name, source, quota=quota, size=size,
                             ctype=item.ctype)
        finally:
            source.close()


class ChunkReader:
    """A file's bytes as a stream: ``read(n)``, and ``seek`` forward (a range's start).

    Chunks come from the store one at a time (never the whole file); a read copies
    only the bytes it returns.  ``open_at(offset)`` gives the file's chunks from a byte
    on: it is called at the first read, or at a seek past the chunk in hand, so a range
    near the end of a large file fetches nothing before it (a client downloading in
    several ranges at once costs what one download does).  ``opened``: the chunks from
    the start, already open.
    """

    def __init__(self, open_at: Callable[[int], Iterator[bytes]], *,
                 opened: Iterator[bytes] | None = None) -> None:
        self._open_at = open_at
        self._chunks = opened
        self._chunk = b""
        self._at = 0   # read up to here in the current chunk
        self._pos = 0  # read up to here in the file

    def _next(self) -> bool:
        if self._chunks is None:
            self._chunks = self._open_at(self._pos)
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._chunk, self._at = chunk, 0
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self._pos:
            raise OSError("only forward seeks from the start")
        left = len(self._chunk) - self._at
        if offset - self._pos <= left:
            self._at += offset - self._pos
        else:  # past what is in hand: the store starts there
            self.close()
            self._chunks, self._chunk, self._at = None, b"", 0
        self._pos = offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        while size:
            left = len(self._chunk) - self._at
            if not left:
                if not self._next():
                    break
                continue
            take = left if size < 0 else min(left, size)
            parts.append(self._chunk[self._at:self._at + take])
            self._at, self._pos = self._at + take, self._pos + take
            size = size if size < 0 else size - take
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

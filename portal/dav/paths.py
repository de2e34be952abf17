"""From a WebDAV path to an item of one user's drive, and the store's errors as DAV answers.

A path is walked name by name from the root of the signed-in user's drive: each
step is one read of an entry cell (``e:<folder>/<name>``) of that user's row, so
no path, however written, reaches anything but that user's own tree.  What a
request resolved is kept in its environ until it writes, since WsgiDAV asks
for the same path (and its parent) several times per request.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)

from raftkv.errors import RaftKVError
from shards.model import drive
from shards.model.drive.records import entry_col, item_from_entry, root_item

from ..errors import RETRY_AFTER, http_answer, http_message, retry_after

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

MOUNT = "/dav"                       # where the door is: WsgiDAV's URLs start with it
USER_KEY = "raftcloud.dav.user"      # environ: the signed-in user
_MEMO_KEY = "raftcloud.dav.resolved"  # environ: path names -> Found | None, until a write
HTTP_INSUFFICIENT_STORAGE = 507


@dataclass(frozen=True)
class Found:
    """An item at a path, with the version of its entry cell (the root's: 0).

    The entry cell is rewritten with the index cell by every change to the item
    (rename, move, new contents), so its version makes the ETag."""

    item: drive.Item
    version: int

    @property
    def etag(self) -> str:
        return f"{self.item.id}-{self.version}"


def segments(path: str) -> list[str]:
    """The names of a path below the mount ("/a/b/" -> ["a", "b"]); NFC, as stored."""
    return [unicodedata.normalize("NFC", s) for s in path.strip("/").split("/") if s]


def found_entry(folder_id: str, name: str, cell: Cell) -> Found | None:
    item = item_from_entry(entry_col(folder_id, name), cell)
    return None if item is None else Found(item, cell.version)


def resolve(client: KeyValueStore, user: str, path: str,
            environ: dict[str, object] | None = None) -> Found | None:
    """The item at ``path`` in ``user``'s drive, or None (a name missing on the way, or a
    file where a folder should be).  With ``environ``, every folder on the way is kept
    for the request too (WsgiDAV asks for a path's parent right after the path)."""
    return descend(client, user, Found(root_item(), 0), tuple(segments(path)), environ)


def descend(client: KeyValueStore, user: str, start: Found, names: tuple[str, ...],
            environ: dict[str, object] | None = None, *,
            known: tuple[str, ...] = ()) -> Found | None:
    """The item ``names`` below the folder ``start`` of ``user``'s drive, one entry cell
    per name, or None.  ``known`` is the start's own names in the request's paths (the
    memo's keys: a folder shared with the user is walked from there, portal.dav.shared)."""
    memo: dict[tuple[str, ...], Found | None] = {}
    if environ is not None:
        memo = cast("dict[tuple[str, ...], Found | None]", environ.setdefault(_MEMO_KEY, {}))
    full = known + names
    if full in memo:
        return memo[full]
    found: Found | None = start
    for depth in range(len(known) + 1, len(full) + 1):
        name, key = full[depth - 1], full[:depth]
        if key in memo:
            found = memo[key]
            continue
        if found is None or not found.item.is_folder or len(name.encode()) > 255:
            found = None
        else:
            cell = client.get(drive.drive_row(user), entry_col(found.item.id, name))
            found = None if cell is None else found_entry(found.item.id, name, cell)
        memo[key] = found
    memo[full] = found
    return found


def forget(environ: dict[str, object]) -> None:
    """After a write: what the request resolved may have changed."""
    environ.pop(_MEMO_KEY, None)


def dav_error(exc: RaftKVError) -> DAVError:
    """A store or data-model error as the DAV answer that means the same as the pages'."""
    if isinstance(exc, drive.QuotaExceeded):
        return DAVError(HTTP_INSUFFICIENT_STORAGE, str(exc))  # RFC 4918 §11.5
    if isinstance(exc, drive.NoSuchItem):
        return DAVError(HTTP_CONFLICT, str(exc))  # a parent went away meanwhile
    if isinstance(exc, drive.NameTaken):
        return DAVError(HTTP_PRECONDITION_FAILED, str(exc))
    if isinstance(exc, drive.BadMove):
        return DAVError(HTTP_FORBIDDEN, str(exc))
    if isinstance(exc, (drive.BadName, drive.TooDeep)):
        return DAVError(HTTP_BAD_REQUEST if isinstance(exc, drive.BadName) else HTTP_FORBIDDEN,
                        str(exc))
    answer = http_answer(exc)
    headers = []
    if answer.retry_after:
        headers.append(("Retry-After", str(retry_after(exc) or RETRY_AFTER)))
    status = answer.status if answer.status != 404 else HTTP_NOT_FOUND
    return DAVError(status, http_message(exc), add_headers=headers)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Map errors of the store and the data model to DAV answers (WsgiDAV would make
    any other exception a 500)."""
    try:
        yield
    except RaftKVError as exc:
        raise dav_error(exc) from None

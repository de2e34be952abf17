"""A file's thumbnail, kept beside its bytes: the ``thumb`` cell of ``{<user>}/file:<id>``.

Made lazily, the first time a page asks for it, by whichever frontend gets that request
(the pixels are the portal's business: :mod:`portal.thumbnailer`); this module only keeps
it.  The record says which content it was made of: the content row, size and
modification time the file's index showed, read *before* the bytes, so content that changes during or after
the making gets a new index that no longer matches, and the thumbnail is made again.
It is written with one ``mutate_row`` conditioned on the thumbnail cell being as read
(absent, or the outdated record), so two frontends racing to make it write once.

A file that yields no thumbnail (not an image after all, a decompression bomb, a broken
file) gets a record saying so, so its bytes are not decoded again on every listing.

Thumbnails expire after :data:`THUMB_TTL` (the store's cell expiry): deleting a file
removes only its ``data`` cell, and the expiry takes the thumbnail of a deleted file away
without every delete path having to know about it; a file still shown simply gets a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed
from raftkv.interface import Cell

from .records import (
    FILE,
    Item,
    content_row,
    drive_row,
    index_col,
    item_from_index,
    pack,
    unpack,
)

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore

THUMB_COL = "thumb"
THUMB_TTL = 30 * 86400.0  # seconds a thumbnail is kept; see the module's docstring


@dataclass(frozen=True)
class Thumb:
    """A stored thumbnail record: the image, or why there is none (``data`` empty)."""

    size: int           # the file's size and modified time when it was made
    modified: float
    content: str = ""   # the id of the row whose bytes it was made from (Item.content_id)
    data: bytes = b""   # the thumbnail's bytes; empty: the file has no thumbnail
    ctype: str = "image/webp"
    width: int = 0
    height: int = 0
    source_width: int = 0   # the image's own size (for the viewer page's room)
    source_height: int = 0
    why: str = ""       # why there is none
    version: int = 0    # the thumb cell's own version (0: not stored)

    @property
    def ok(self) -> bool:
        return bool(self.data)

    def fits(self, item: Item) -> bool:
        """True if made of the content ``item`` (as read from the index) has now."""
        return (self.content, self.size, self.modified) == (item.content_id, item.size,
                                                            item.modified)


def thumb_value(thumb: Thumb) -> bytes:
    record: dict[str, object] = {"size": thumb.size, "m": thumb.modified, "c": thumb.content}
    if thumb.ok:
        record.update(b=thumb.data, t=thumb.ctype, w=thumb.width, h=thumb.height,
                      ow=thumb.source_width, oh=thumb.source_height)
    else:
        record["why"] = thumb.why
    return pack(record)


def thumb_from(value: bytes, version: int) -> Thumb | None:
    record = unpack(value)
    if not isinstance(record, dict):
        return None
    try:
        return Thumb(size=int(record["size"]), modified=float(record["m"]),
                     content=str(record.get("c", "")), data=bytes(record.get("b", b"")),
                     ctype=str(record.get("t", "image/webp")), width=int(record.get("w", 0)),
                     height=int(record.get("h", 0)), source_width=int(record.get("ow", 0)),
                     source_height=int(record.get("oh", 0)), why=str(record.get("why", "")),
                     version=version)
    except (KeyError, TypeError, ValueError):
        return None


def file_and_thumb(client: KeyValueStore, user: str, file_id: str
                   ) -> tuple[Item | None, Thumb | None, int]:
    """The file's index and its stored thumbnail, in one ``get_cells``:
    ``(item or None, thumbnail record or None, the thumb cell's version, 0 if absent)``."""
    index, cell = client.get_cells([(drive_row(user), index_col(FILE, file_id)),
                                    (content_row(user, file_id), THUMB_COL)])
    # No versions are named as known, so no Unchanged comes back: a Cell or None.
    item = item_from_index(FILE, file_id, index) if isinstance(index, Cell) else None
    if not isinstance(cell, Cell):
        return item, None, 0
    return item, thumb_from(cell.value, cell.version), cell.version


def save_thumb(client: KeyValueStore, user: str, file_id: str, thumb: Thumb,
               seen_version: int) -> Thumb:
    """Store ``thumb`` unless someone else stored one first, or the content changed.

    :param seen_version: the thumb cell's version when read (0: absent); the write
        holds only if it is still that.
    :returns: the record that is stored now: ``thumb`` (with its cell version), or the
        one another frontend wrote of the same content; else ``thumb`` unstored
        (version 0).
    """
    row = content_row(user, file_id)
    seen: Condition = ("version", THUMB_COL, seen_version) if seen_version else (
        "absent", THUMB_COL)
    try:
        versions = client.mutate_row(
            row, [seen],
            [("put", THUMB_COL, thumb_value(thumb))], ttl=THUMB_TTL)
    except ConditionFailed:
        cell = client.get(row, THUMB_COL)
        other = None if cell is None else thumb_from(cell.value, cell.version)
        if other is not None and (other.content, other.size, other.modified) == (
                thumb.content, thumb.size, thumb.modified):
            return other  # a racing frontend made it from the same bytes
        return thumb
    return replace(thumb, version=versions.get(THUMB_COL, 0))

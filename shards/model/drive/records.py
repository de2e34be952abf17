"""The drive's layout: rows, columns, record formats, ids and names (see the package).

Its errors are in :mod:`shards.model.errors`."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The model's one codec, re-exported: the drive's and the mailbox's modules take it from here.
from ..codec import pack as pack
from ..codec import unpack as unpack
from ..errors import BadName

if TYPE_CHECKING:
    from raftkv.interface import Cell

ROOT = "root"
FILE, FOLDER = "file", "folder"
DATA_COL = "data"
USAGE_COL = "q:used"
DEFAULT_QUOTA = 1 << 30   # bytes of file content per user, unless configured otherwise
MAX_DEPTH = 32            # folders below the root; bounds the path conditions of one mutation
MAX_NAME_BYTES = 255
SMALL_FILE = 64 * 1024    # files up to this size (when known) are read and stored in one put
ATTEMPTS = 10             # re-read and retry this often when a condition fails under contention
_KIND_CODE = {FILE: "f", FOLDER: "d"}
_CODE_KIND = {"f": FILE, "d": FOLDER}


@dataclass(frozen=True)
class Item:
    """A file or folder as read from the store."""

    id: str
    kind: str                               # FILE or FOLDER
    name: str                               # "" for the root
    parent: str                             # the containing folder's id; "" for the root
    size: int = 0                           # bytes (files)
    ctype: str = "application/octet-stream"  # the content type given at upload (files)
    created: float = 0.0
    modified: float = 0.0
    version: int = 0                        # its index cell's version (0: root, or from a listing)
    content: str = ""                       # the id of the row holding its bytes ("": its own id)

    @property
    def content_id(self) -> str:
        """Whose ``file:`` row holds the current bytes: the file's own id until it is
        overwritten (:mod:`.versions`), then the id of the upload that replaced them."""
        return self.content or self.id

    @property
    def is_folder(self) -> bool:
        return self.kind == FOLDER


@dataclass(frozen=True)
class Listing:
    """One folder's entries, read in one go."""

    folder_id: str
    version: int          # the folder header's version when read (0: never changed)
    items: tuple[Item, ...]


def drive_row(user: str) -> str:
    """The row holding every name in ``user``'s drive."""
    return f"{{{user}}}/drive"


def content_row(user: str, file_id: str) -> str:
    """The row holding one file's bytes."""
    return f"{{{user}}}/file:{file_id}"


def header_col(folder_id: str) -> str:
    return f"e:{folder_id}/"


def entry_col(folder_id: str, name: str) -> str:
    return f"e:{folder_id}/{name}"


def index_col(kind: str, item_id: str) -> str:
    return f"{'d' if kind == FOLDER else 'i'}:{item_id}"


def marker_col(item_id: str) -> str:
    return f"t:{item_id}"


def new_id() -> str:
    """A fresh, unguessable id for a file or folder (96 bits, 24 hex digits)."""
    return secrets.token_hex(12)


def is_id(value: str) -> bool:
    """True if ``value`` has the shape of an id made by :func:`new_id`."""
    return len(value) == 24 and all(c in "0123456789abcdef" for c in value)


def check_name(name: str) -> str:
    """The NFC form of ``name`` if it can be a column key here; else :class:`BadName`.

    Only what the layout needs; the portal applies stricter rules for names
    that reach browsers and other people's disks.
    """
    if not isinstance(name, str):
        raise BadName("A name must be text.")
    name = unicodedata.normalize("NFC", name)
    if not name or "/" in name:
        raise BadName("A name cannot be empty or contain '/'.")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadName(f"A name can be at most {MAX_NAME_BYTES} bytes long.")
    return name


def root_item() -> Item:
    return Item(id=ROOT, kind=FOLDER, name="", parent="")


def item_from_index(kind: str, item_id: str, cell: Cell) -> Item | None:
    record = unpack(cell.value)
    if not isinstance(record, dict):
        return None
    return Item(id=item_id, kind=kind, name=str(record.get("n", "")),
                parent=str(record.get("p", "")), size=int(record.get("size", 0)),
                ctype=str(record.get("ctype", "application/octet-stream")),
                created=float(record.get("created", 0.0)),
                modified=float(record.get("modified", 0.0)), version=cell.version,
                content=str(record.get("c", "")))


def item_from_entry(column: str, cell: Cell) -> Item | None:
    folder_id, _, name = column[2:].partition("/")
    record = unpack(cell.value)
    if not name or not isinstance(record, dict) or record.get("k") not in _CODE_KIND:
        return None
    return Item(id=str(record.get("id", "")), kind=_CODE_KIND[record["k"]], name=name,
                parent=folder_id, size=int(record.get("size", 0)),
                ctype=str(record.get("ctype", "application/octet-stream")),
                created=float(record.get("created", 0.0)),
                modified=float(record.get("modified", 0.0)))


def entry_value(item: Item) -> bytes:
    record: dict[str, Any] = {"id": item.id, "k": _KIND_CODE[item.kind],
                              "created": item.created, "modified": item.modified}
    if item.kind == FILE:
        record.update(size=item.size, ctype=item.ctype)
    return pack(record)


def index_value(item: Item) -> bytes:
    record: dict[str, Any] = {"p": item.parent, "n": item.name, "created": item.created,
                              "modified": item.modified}
    if item.kind == FILE:
        record.update(size=item.size, ctype=item.ctype)
        if item.content and item.content != item.id:
            record["c"] = item.content
    return pack(record)


def link(item: Item, now: float) -> list[tuple[Any, ...]]:
    """Mutations that put ``item`` at its (parent, name) and bump the parent's header."""
    return [("put", entry_col(item.parent, item.name), entry_value(item)),
            ("put", index_col(item.kind, item.id), index_value(item)),
            ("put", header_col(item.parent), pack({"modified": now}))]


def path_conditions(path: list[Item]) -> list[tuple[Any, ...]]:
    """The folders on a path must be exactly as read: not moved, renamed or deleted."""
    return [("version", index_col(FOLDER, f.id), f.version) for f in path if f.id != ROOT]

"""Each user's drive: nested folders and files, kept consistent with one-row mutations.

Layout.  Every *name* of a user lives in one row, so that creating, renaming,
moving or deleting anything -- within a folder or between two folders -- is a
single ``mutate_row`` on that row, conditioned on the versions it read; the
bytes of each file live in a row of their own, which a rename or a move never
touches::

    row {<user>}/drive
        e:<folder_id>/              folder header; its version changes with every entry
                                    added, renamed, moved out or removed (caches check it)
        e:<folder_id>/<name>        entry: msgpack {id, k: "f"|"d", size, ctype, created, modified}
        i:<file_id>                 file index: {p: parent id, n: name, size, ctype, created, modified}
        d:<folder_id>               folder index: {p: parent id, n: name, created, modified}
        q:used                      bytes of file content the user holds (quota)
        t:<id>                      clean-up marker: a deleted file's bytes or a deleted tree
    row {<user>}/file:<file_id>
        data                        the bytes (the store makes big values blobs)

The root folder is :data:`ROOT`; it has a header but no entry and no index.
Names are column keys, so "a name is free" is the condition ``absent`` on
``e:<folder>/<name>``: two frontends creating the same name end with one
winner and a clear :class:`NameTaken` for the other; creates of different
names in one folder never conflict.  An entry and its index cell are always
written together, so a condition on the index cell's version covers both.

Creates and moves also condition on the version of every folder on the target's
path to the root: a folder deleted or moved meanwhile makes the change fail
and retry instead of landing in a detached subtree.  Deleting a tree is one
short step (unlink it, leave a ``t:`` marker) followed by clean-up
(:mod:`.drive_purge`) that any frontend can resume.

All of a user's rows carry the ``{user}`` hash tag and share a shard; the
folder tree row holds only small cells (a few hundred bytes per name), so it
stays cheap to keep in Raft.
"""

from __future__ import annotations

import secrets
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack

from raftkv.errors import ConditionFailed, RaftKVError, Timeout

if TYPE_CHECKING:
    from shards import Cell, Client

__all__ = ["DEFAULT_QUOTA", "MAX_DEPTH", "ROOT", "BadMove", "BadName", "DriveError", "Item",
           "Listing", "NameTaken", "NoSuchItem", "QuotaExceeded", "TooDeep", "all_folders",
           "content_row", "create_folder", "delete_file", "delete_folder", "drive_row",
           "folder_path", "folder_version", "get_file", "get_folder", "is_id", "list_folder",
           "move", "open_file", "rename", "store_file", "usage", "walk_files"]

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


class DriveError(Exception):
    """Something the user asked for cannot be done; the message is a sentence for them."""


class NoSuchItem(DriveError):
    """No such file or folder in this user's drive (or it was just deleted)."""


class NameTaken(DriveError):
    """The folder already holds something with that name."""


class BadName(DriveError):
    """The name cannot be stored (empty, a '/', too long)."""


class BadMove(DriveError):
    """A folder cannot move into itself or below itself; the root cannot move at all."""


class TooDeep(DriveError):
    """The change would nest folders deeper than :data:`MAX_DEPTH`."""


class QuotaExceeded(DriveError):
    """The file would take the user over their quota."""

    def __init__(self, message: str, *, used: int, quota: int) -> None:
        super().__init__(message)
        self.used = used
        self.quota = quota


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

    @property
    def is_folder(self) -> bool:
        return self.kind == FOLDER


@dataclass(frozen=True)
class Listing:
    """One folder's entries, read in one go."""

    folder_id: str
    version: int          # the folder header's version when read (0: never changed)
    items: tuple[Item, ...]


# -- layout -----------------------------------------------------------------

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


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(value: bytes) -> Any:
    try:
        return msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None


def _root() -> Item:
    return Item(id=ROOT, kind=FOLDER, name="", parent="")


def _item_from_index(kind: str, item_id: str, cell: Cell) -> Item | None:
    record = _unpack(cell.value)
    if not isinstance(record, dict):
        return None
    return Item(id=item_id, kind=kind, name=str(record.get("n", "")),
                parent=str(record.get("p", "")), size=int(record.get("size", 0)),
                ctype=str(record.get("ctype", "application/octet-stream")),
                created=float(record.get("created", 0.0)),
                modified=float(record.get("modified", 0.0)), version=cell.version)


def _item_from_entry(column: str, cell: Cell) -> Item | None:
    folder_id, _, name = column[2:].partition("/")
    record = _unpack(cell.value)
    if not name or not isinstance(record, dict) or record.get("k") not in _CODE_KIND:
        return None
    return Item(id=str(record.get("id", "")), kind=_CODE_KIND[record["k"]], name=name,
                parent=folder_id, size=int(record.get("size", 0)),
                ctype=str(record.get("ctype", "application/octet-stream")),
                created=float(record.get("created", 0.0)),
                modified=float(record.get("modified", 0.0)))


def _entry_value(item: Item) -> bytes:
    record: dict[str, Any] = {"id": item.id, "k": _KIND_CODE[item.kind],
                              "created": item.created, "modified": item.modified}
    if item.kind == FILE:
        record.update(size=item.size, ctype=item.ctype)
    return _pack(record)


def _index_value(item: Item) -> bytes:
    record: dict[str, Any] = {"p": item.parent, "n": item.name, "created": item.created,
                              "modified": item.modified}
    if item.kind == FILE:
        record.update(size=item.size, ctype=item.ctype)
    return _pack(record)


def _link(item: Item, now: float) -> list[tuple[Any, ...]]:
    """Mutations that put ``item`` at its (parent, name) and bump the parent's header."""
    return [("put", entry_col(item.parent, item.name), _entry_value(item)),
            ("put", index_col(item.kind, item.id), _index_value(item)),
            ("put", header_col(item.parent), _pack({"modified": now}))]


def _path_conditions(path: list[Item]) -> list[tuple[Any, ...]]:
    """The folders on a path must be exactly as read: not moved, renamed or deleted."""
    return [("version", index_col(FOLDER, f.id), f.version) for f in path if f.id != ROOT]


# -- reads ------------------------------------------------------------------

def get_file(client: Client, user: str, file_id: str) -> Item | None:
    """The file ``file_id`` of ``user``, or None (also for ids of other users' files)."""
    if not is_id(file_id):
        return None
    cell = client.get(drive_row(user), index_col(FILE, file_id))
    return None if cell is None else _item_from_index(FILE, file_id, cell)


def get_folder(client: Client, user: str, folder_id: str) -> Item | None:
    """The folder ``folder_id`` of ``user`` (the root for :data:`ROOT`), or None."""
    if folder_id == ROOT:
        return _root()
    if not is_id(folder_id):
        return None
    cell = client.get(drive_row(user), index_col(FOLDER, folder_id))
    return None if cell is None else _item_from_index(FOLDER, folder_id, cell)


def folder_path(client: Client, user: str, folder_id: str) -> list[Item]:
    """The folders from the root down to ``folder_id``, each with its version.

    :raises NoSuchItem: the folder does not exist, or hangs below a deleted one.
    """
    path: list[Item] = []
    current = folder_id
    while current != ROOT:
        if len(path) > MAX_DEPTH:
            raise NoSuchItem("That folder is nested too deeply to be found.")
        folder = get_folder(client, user, current)
        if folder is None:
            raise NoSuchItem("There is no such folder in your drive.")
        path.append(folder)
        current = folder.parent
    path.append(_root())
    path.reverse()
    return path


def folder_version(client: Client, user: str, folder_id: str) -> int:
    """The version of the folder's header: equal versions mean an unchanged listing."""
    cell = client.get(drive_row(user), header_col(folder_id))
    return 0 if cell is None else cell.version


def list_folder(client: Client, user: str, folder_id: str) -> Listing:
    """Every entry of one folder, with the header version they were read at.

    One ``get_row`` returns the header and the entries together, so a cache
    holding this listing is exactly as fresh as its version says.
    """
    cells = client.get_row(drive_row(user), prefix=header_col(folder_id))
    header = cells.pop(header_col(folder_id), None)
    items = [item for column, cell in cells.items()
             if (item := _item_from_entry(column, cell)) is not None]
    return Listing(folder_id, header.version if header else 0, tuple(items))


def all_folders(client: Client, user: str) -> dict[str, Item]:
    """Every folder of ``user`` by id, the root included (for move targets)."""
    folders = {ROOT: _root()}
    for column, cell in client.get_row(drive_row(user), prefix="d:").items():
        folder = _item_from_index(FOLDER, column[2:], cell)
        if folder is not None:
            folders[folder.id] = folder
    return folders


def path_in(folders: dict[str, Item], folder_id: str) -> list[Item] | None:
    """Like :func:`folder_path`, from :func:`all_folders`; None if detached."""
    path: list[Item] = []
    current = folder_id
    while current != ROOT:
        folder = folders.get(current)
        if folder is None or len(path) > MAX_DEPTH:
            return None
        path.append(folder)
        current = folder.parent
    path.append(folders[ROOT])
    path.reverse()
    return path


def _usage_cell(client: Client, user: str) -> tuple[int, int]:
    cell = client.get(drive_row(user), USAGE_COL)
    if cell is None:
        return 0, 0
    used = _unpack(cell.value)
    return (used if isinstance(used, int) else 0), cell.version


def usage(client: Client, user: str) -> int:
    """Bytes of file content ``user`` holds."""
    return _usage_cell(client, user)[0]


def open_file(client: Client, user: str, file_id: str) -> tuple[Item, int, Iterator[bytes]]:
    """A file and its bytes, fetched lazily: ``(item, size, chunks)``.

    :raises NoSuchItem: no such file, or its bytes are gone (deleted meanwhile).
    """
    item = get_file(client, user, file_id)
    if item is None:
        raise NoSuchItem("There is no such file in your drive.")
    found = client.get_stream(content_row(user, file_id), DATA_COL)
    if found is None:
        raise NoSuchItem("The file's contents are missing; it may have just been deleted.")
    return item, found[0], found[1]


def walk_files(client: Client, user: str, folder_id: str) -> Iterator[tuple[str, Item]]:
    """``(relative path, file)`` for every file below a folder, depth first, by name."""
    stack: list[tuple[str, str, int]] = [(folder_id, "", 0)]
    while stack:
        current, prefix, depth = stack.pop()
        listing = list_folder(client, user, current)
        items = sorted(listing.items, key=lambda i: i.name, reverse=True)
        for item in items:
            if item.is_folder and depth < MAX_DEPTH:
                stack.append((item.id, f"{prefix}{item.name}/", depth + 1))
        for item in reversed(items):
            if not item.is_folder:
                yield f"{prefix}{item.name}", item


# -- changes ------------------------------------------------------------------

def _name_taken(client: Client, user: str, folder_id: str, name: str, mine: str) -> bool:
    """After a failed condition: is ``name`` taken in the folder by another item than ``mine``?"""
    cell = client.get(drive_row(user), entry_col(folder_id, name))
    if cell is None:
        return False
    item = _item_from_entry(entry_col(folder_id, name), cell)
    return item is None or item.id != mine


def _taken(name: str) -> NameTaken:
    return NameTaken(f"There is already something named {name!r} in this folder.")


def create_folder(client: Client, user: str, parent_id: str, name: str, *,
                  now: float | None = None) -> Item:
    """Make a new, empty folder.

    :raises NoSuchItem: the parent is gone.
    :raises NameTaken: the name is in use there.
    :raises TooDeep: the parent is already :data:`MAX_DEPTH` deep.
    """
    name = check_name(name)
    now = time.time() if now is None else now
    folder = Item(id=new_id(), kind=FOLDER, name=name, parent=parent_id, created=now,
                  modified=now)
    for _ in range(ATTEMPTS):
        path = folder_path(client, user, parent_id)
        if len(path) > MAX_DEPTH:
            raise TooDeep(f"Folders can be nested at most {MAX_DEPTH} deep.")
        conditions = [("absent", entry_col(parent_id, name)), *_path_conditions(path)]
        mutations = [*_link(folder, now), ("put", header_col(folder.id), _pack({"modified": now}))]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(folder, version=versions.get(index_col(FOLDER, folder.id), 0))
        except ConditionFailed:
            if _name_taken(client, user, parent_id, name, folder.id):
                raise _taken(name) from None
    raise ConditionFailed("the folder kept changing; try again")


class _Counted:
    """A read-only stream that counts bytes and refuses to yield more than ``limit``."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise _OverLimit()
        return data


class _OverLimit(Exception):
    pass


def _over_quota(used: int, size: int, quota: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"This file ({size:,} bytes) does not fit: {used:,} of your {quota:,} bytes "
        f"are in use.", used=used, quota=quota)


def store_file(client: Client, user: str, parent_id: str, name: str, stream: BinaryIO, *,
               quota: int, size: int | None = None, ctype: str = "application/octet-stream",
               now: float | None = None) -> Item:
    """Stream a new file into the store and link it into a folder.

    The bytes go to their own row first (never held whole in memory); the
    name, the index and the quota then change in one ``mutate_row``.  A name
    that is taken, or a quota that is exceeded, is checked before any byte
    is stored and again, atomically, when linking.

    :param size: the size, when known beforehand (checked against the quota
        before reading anything); the bytes read are what counts.
    :raises QuotaExceeded, NameTaken, NoSuchItem, BadName: nothing is left behind.
    """
    name = check_name(name)
    row = drive_row(user)
    path = folder_path(client, user, parent_id)
    used, _ = _usage_cell(client, user)
    if size is not None and used + size > quota:
        raise _over_quota(used, size, quota)
    if client.get(row, entry_col(parent_id, name)) is not None:
        raise _taken(name)
    file_id = new_id()
    counted = _Counted(stream, quota - used)
    try:
        if size is not None and size <= SMALL_FILE:
            # Small and of known size: one plain put of the bytes.
            client.put(content_row(user, file_id), DATA_COL, counted.read(size + 1))
        else:
            client.put_stream(content_row(user, file_id), DATA_COL, counted)  # type: ignore[arg-type]
    except _OverLimit:
        _drop_content(client, user, file_id)
        raise _over_quota(used, counted.count, quota) from None
    now = time.time() if now is None else now
    item = Item(id=file_id, kind=FILE, name=name, parent=parent_id, size=counted.count,
                ctype=ctype, created=now, modified=now)
    try:
        return _link_file(client, user, item, path, quota, now)
    except BaseException as exc:
        # After a timeout the link may have landed after all: keep the bytes
        # it would point to.  Otherwise nothing refers to them: drop them.
        if not isinstance(exc, Timeout):
            _drop_content(client, user, file_id)
        raise


def _drop_content(client: Client, user: str, file_id: str) -> None:
    try:
        client.delete(content_row(user, file_id), DATA_COL)
    except RaftKVError:
        pass  # unreachable bytes; nothing points at them


def _link_file(client: Client, user: str, item: Item, path: list[Item], quota: int,
               now: float) -> Item:
    for _ in range(ATTEMPTS):
        used, used_version = _usage_cell(client, user)
        if used + item.size > quota:
            raise _over_quota(used, item.size, quota)
        conditions = [("absent", entry_col(item.parent, item.name)),
                      ("version", USAGE_COL, used_version), *_path_conditions(path)]
        mutations = [*_link(item, now), ("put", USAGE_COL, _pack(used + item.size))]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(item, version=versions.get(index_col(FILE, item.id), 0))
        except ConditionFailed:
            if _name_taken(client, user, item.parent, item.name, item.id):
                raise _taken(item.name) from None
            path = folder_path(client, user, item.parent)
    raise ConditionFailed("the folder kept changing; try again")


def _get_item(client: Client, user: str, kind: str, item_id: str) -> Item:
    item = get_file(client, user, item_id) if kind == FILE else get_folder(client, user, item_id)
    if item is None:
        raise NoSuchItem(f"There is no such {kind} in your drive.")
    return item


def rename(client: Client, user: str, kind: str, item_id: str, new_name: str, *,
           now: float | None = None) -> Item:
    """Give a file or folder a new name in the same folder: one ``mutate_row``.

    :raises NameTaken: the new name is in use in that folder.
    :raises NoSuchItem: no such item (the root cannot be renamed).
    """
    new_name = check_name(new_name)
    now = time.time() if now is None else now
    for _ in range(ATTEMPTS):
        item = _get_item(client, user, kind, item_id)
        if item.id == ROOT:
            raise BadMove("The top folder of your drive cannot be renamed.")
        if item.name == new_name:
            return item
        renamed = replace(item, name=new_name)
        conditions = [("version", index_col(kind, item_id), item.version),
                      ("absent", entry_col(item.parent, new_name))]
        mutations = [("delete", entry_col(item.parent, item.name)), *_link(renamed, now)]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(renamed, version=versions.get(index_col(kind, item_id), 0))
        except ConditionFailed:
            if _name_taken(client, user, item.parent, new_name, item_id):
                raise _taken(new_name) from None
    raise ConditionFailed("the item kept changing; try again")


def _height(folders: dict[str, Item], folder_id: str) -> int:
    """Levels of folders below ``folder_id`` (0 for a folder without subfolders)."""
    children: dict[str, list[str]] = {}
    for folder in folders.values():
        children.setdefault(folder.parent, []).append(folder.id)
    height, level = 0, [folder_id]
    while level and height <= MAX_DEPTH:
        level = [c for f in level for c in children.get(f, [])]
        height += 1 if level else 0
    return height


def move(client: Client, user: str, kind: str, item_id: str, target_id: str, *,
         now: float | None = None) -> Item:
    """Move a file or folder (keeping its name) into another folder: one ``mutate_row``.

    :raises NameTaken: the target folder holds that name already.
    :raises BadMove: a folder into itself or below itself.
    :raises NoSuchItem: the item or the target is gone.
    :raises TooDeep: the move would nest folders too deeply.
    """
    now = time.time() if now is None else now
    for _ in range(ATTEMPTS):
        item = _get_item(client, user, kind, item_id)
        if item.id == ROOT:
            raise BadMove("The top folder of your drive cannot be moved.")
        if item.parent == target_id:
            return item
        folders = all_folders(client, user)
        target_path = path_in(folders, target_id)
        source_path = path_in(folders, item.parent)
        if target_path is None or source_path is None:
            raise NoSuchItem("There is no such folder in your drive.")
        if kind == FOLDER:
            if any(f.id == item_id for f in target_path):
                raise BadMove("A folder cannot be moved into itself or one of its subfolders.")
            if len(target_path) + _height(folders, item_id) > MAX_DEPTH:
                raise TooDeep(f"Folders can be nested at most {MAX_DEPTH} deep.")
        moved = replace(item, parent=target_id)
        seen = {f.id: f for f in (*target_path, *source_path)}
        conditions = [("version", index_col(kind, item_id), item.version),
                      ("absent", entry_col(target_id, item.name)),
                      *_path_conditions(list(seen.values()))]
        mutations = [("delete", entry_col(item.parent, item.name)),
                     ("put", header_col(item.parent), _pack({"modified": now})), *_link(moved, now)]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(moved, version=versions.get(index_col(kind, item_id), 0))
        except ConditionFailed:
            if _name_taken(client, user, target_id, item.name, item_id):
                raise _taken(item.name) from None
    raise ConditionFailed("the folders kept changing; try again")


def delete_file(client: Client, user: str, file_id: str, *, now: float | None = None) -> Item:
    """Remove a file: its name and quota share at once, then its bytes.

    A ``t:`` marker covers the moment between the two steps, so bytes of a
    file deleted by a frontend that then crashed are found and dropped later.
    """
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in range(ATTEMPTS):
        item = _get_item(client, user, FILE, file_id)
        used, used_version = _usage_cell(client, user)
        conditions = [("version", index_col(FILE, file_id), item.version),
                      ("version", USAGE_COL, used_version)]
        mutations = [("delete", entry_col(item.parent, item.name)),
                     ("delete", index_col(FILE, file_id)),
                     ("put", header_col(item.parent), _pack({"modified": now})),
                     ("put", marker_col(file_id), _pack({"k": "f", "at": now})),
                     ("put", USAGE_COL, _pack(max(0, used - item.size)))]
        try:
            client.mutate_row(row, conditions, mutations)
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the file kept changing; try again")
    client.delete(content_row(user, file_id), DATA_COL)
    client.delete(row, marker_col(file_id))
    return item


def delete_folder(client: Client, user: str, folder_id: str, *,
                  now: float | None = None) -> Item:
    """Unlink a folder and everything below it, in one short step.

    The folder vanishes from its parent and from every path at once; its
    contents are removed afterwards by :func:`shards.model.drive_purge.purge`,
    guided by the ``t:`` marker left here.
    """
    now = time.time() if now is None else now
    for _ in range(ATTEMPTS):
        folder = _get_item(client, user, FOLDER, folder_id)
        if folder.id == ROOT:
            raise BadMove("The top folder of your drive cannot be deleted.")
        conditions = [("version", index_col(FOLDER, folder_id), folder.version)]
        mutations = [("delete", entry_col(folder.parent, folder.name)),
                     ("delete", index_col(FOLDER, folder_id)),
                     ("put", header_col(folder.parent), _pack({"modified": now})),
                     ("put", marker_col(folder_id), _pack({"k": "d", "at": now}))]
        try:
            client.mutate_row(drive_row(user), conditions, mutations)
            return folder
        except ConditionFailed:
            continue
    raise ConditionFailed("the folder kept changing; try again")

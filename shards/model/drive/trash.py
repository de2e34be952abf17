"""The drive's Trash: deleting moves an item out of the name space, restoring puts it back.

Trashing a file or folder is one ``mutate_row`` in the drive row, conditioned on the
item's index version: its entry and index cell go (so its name is free at once and no
path reaches it) and a cell ``x:<id>`` records what it was and where it came from
(parent id, the path's names then, when).  No byte moves: a file's ``file:`` rows and
versions, and everything below a folder (entries, index cells, bytes), stay where they
are, unreachable until restored.  Trash counts against the quota (``q:used`` does not
change).

Restoring is one ``mutate_row`` too, conditioned on the ``x:`` cell, the target name
being absent and the target path's folders: it links the item back under its parent
-- with the name taken, as ``name (n).ext`` (as "Keep both" names); with the parent
gone (deleted, or in the Trash itself), into the top folder -- and says which.

Deleting forever (one item, a batch, the whole Trash, or items older than
:data:`TRASH_DAYS` by :func:`sweep`) replaces ``x:`` with the ``t:`` marker a delete
leaves; :mod:`.cleanup` drops the bytes, versions and trees resumably.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from raftkv.errors import ConditionFailed

from ..errors import NoSuchItem, TooDeep
from ..retry import attempts
from .changes import _height
from .contents import MARK_FOLDER, file_marker, finish_file
from .held import free_name
from .many import read_items
from .reads import all_folders, list_folder, path_in, usage_cell
from .records import (
    ATTEMPTS,
    FILE,
    FOLDER,
    MAX_DEPTH,
    ROOT,
    USAGE_COL,
    Item,
    drive_row,
    entry_col,
    header_col,
    index_col,
    is_id,
    link,
    marker_col,
    pack,
    path_conditions,
    unpack,
)
from .versions import Changed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from raftkv.interface import Cell, Condition, KeyValueStore, Mutation

TRASH_PREFIX = "x:"
TRASH_DAYS = 30
TRASH_TTL = TRASH_DAYS * 86400.0
BATCH = 25              # items per mutation (about 4 cells of < 400 bytes each)
SIZE_WALK = 2000        # entries a folder's size is summed over when trashed
SWEEP_PER_VISIT = 25    # items one sweep of one user deletes forever at most
_KIND = {"f": FILE, "d": FOLDER}


@dataclass(frozen=True)
class Trashed:
    """An item in the Trash, as its ``x:`` cell records it."""

    item: Item          # as it was (parent: where it came from; content: its bytes' row)
    at: float           # when it was trashed
    place: str          # the path it came from, as names ("" for the top folder)
    size: int           # bytes (a folder: of the files below it, as far as counted)
    counted: bool       # False: a folder too big to count whole (size is a lower bound)
    version: int        # the x: cell's version


@dataclass(frozen=True)
class Restored:
    """Where a restore put an item, and why if not exactly where it was."""

    item: Item
    renamed: bool       # its name was taken: it got the next free "name (n).ext"
    to_root: bool       # its folder is gone: it is in the top folder


def trash_col(item_id: str) -> str:
    return f"{TRASH_PREFIX}{item_id}"


def _record(item: Item, at: float, place: str, size: int, counted: bool) -> bytes:
    return pack({"k": "d" if item.is_folder else "f", "n": item.name, "p": item.parent,
                 "at": at, "place": place, "size": size, "all": counted,
                 "ctype": item.ctype, "created": item.created, "modified": item.modified,
                 "c": item.content})


def _trashed(item_id: str, cell: Cell) -> Trashed | None:
    record = unpack(cell.value)
    if not isinstance(record, dict) or record.get("k") not in _KIND:
        return None
    kind = _KIND[record["k"]]
    size = int(record.get("size", 0))
    item = Item(id=item_id, kind=kind, name=str(record.get("n", "")),
                parent=str(record.get("p", ROOT)), size=size if kind == FILE else 0,
                ctype=str(record.get("ctype", "application/octet-stream")),
                created=float(record.get("created", 0.0)),
                modified=float(record.get("modified", 0.0)), content=str(record.get("c", "")))
    return Trashed(item, float(record.get("at", 0.0)), str(record.get("place", "")), size,
                   bool(record.get("all", True)), cell.version)


def list_trash(client: KeyValueStore, user: str) -> list[Trashed]:
    """Everything in the Trash, most recently trashed first (one read)."""
    cells = client.get_row(drive_row(user), prefix=TRASH_PREFIX)
    found = [t for column, cell in cells.items()
             if (t := _trashed(column[len(TRASH_PREFIX):], cell)) is not None]
    return sorted(found, key=lambda t: (-t.at, t.item.name))


def get_trashed(client: KeyValueStore, user: str, item_id: str) -> Trashed:
    """One item in the Trash; :raises NoSuchItem: not there (restored, or gone for good)."""
    cell = client.get(drive_row(user), trash_col(item_id)) if is_id(item_id) else None
    found = None if cell is None else _trashed(item_id, cell)
    if found is None:
        raise NoSuchItem("That is no longer in your Trash.")
    return found


def _tree_size(client: KeyValueStore, user: str, folder_id: str) -> tuple[int, bool]:
    """Bytes of the files below a folder, over at most :data:`SIZE_WALK` entries:
    ``(bytes, counted all)``."""
    total, seen, stack = 0, 0, [folder_id]
    while stack:
        listing = list_folder(client, user, stack.pop())
        for item in listing.items:
            seen += 1
            if seen > SIZE_WALK:
                return total, False
            if item.is_folder:
                stack.append(item.id)
            else:
                total += item.size
    return total, True


def trash(client: KeyValueStore, user: str, item_id: str, *, kind: str = FILE,
          expect: int | None = None, now: float | None = None) -> Item:
    """Move one file or folder into the Trash: one ``mutate_row`` (WebDAV's DELETE).

    :param expect: the item's index version the caller saw; None: whatever it is.
    :raises NoSuchItem: no such item.  :raises BadMove: the top folder.
    :raises Changed: it is not at ``expect`` any more (:mod:`.versions`).
    """
    return trash_many(client, user, [(kind, item_id)], now=now, expect=expect)[0]


def trash_many(client: KeyValueStore, user: str, refs: Sequence[tuple[str, str]], *,
               now: float | None = None, expect: int | None = None) -> list[Item]:
    """Move up to :data:`BATCH` files and folders into the Trash together: one
    ``mutate_row`` conditioned on each item's index version (``expect`` for a single
    item, else the version read); nothing else changes, the quota neither."""
    if len(refs) > BATCH:
        raise ValueError(f"at most {BATCH} items per batch")
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        items = read_items(client, user, refs)
        folders = all_folders(client, user)
        conditions: list[Condition] = []
        mutations: list[Mutation] = []
        for item in items:
            path = path_in(folders, item.parent) or []
            place = "/".join(f.name for f in path[1:])
            size, counted = ((item.size, True) if not item.is_folder
                             else _tree_size(client, user, item.id))
            version = expect if expect is not None and len(items) == 1 else item.version
            conditions.append(("version", index_col(item.kind, item.id), version))
            mutations += [("delete", entry_col(item.parent, item.name)),
                          ("delete", index_col(item.kind, item.id)),
                          ("put", header_col(item.parent), pack({"modified": now})),
                          ("put", trash_col(item.id), _record(item, now, place, size, counted))]
        try:
            client.mutate_row(drive_row(user), conditions, mutations)
            return items
        except ConditionFailed:
            if expect is not None:
                raise Changed("It has changed since you saw it.") from None
            continue
    raise ConditionFailed("the items kept changing; try again")


def restore(client: KeyValueStore, user: str, item_id: str, *,
            now: float | None = None) -> Restored:
    """Put an item from the Trash back where it was: one ``mutate_row``.

    With its name taken there, it gets the next free ``name (n).ext``; with its
    folder gone, it goes into the top folder.
    :raises NoSuchItem: it is not in the Trash.  :raises TooDeep: no room for it.
    """
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        found = get_trashed(client, user, item_id)
        item = found.item
        folders = all_folders(client, user)
        path = path_in(folders, item.parent)
        to_root = path is None
        if path is None:
            path = [folders[ROOT]]
        if item.is_folder and len(path) + _height(folders, item.id) > MAX_DEPTH:
            # Its old place is nested deeper now than when it left: the top folder.
            if to_root or 1 + _height(folders, item.id) > MAX_DEPTH:
                raise TooDeep(f"Folders can be nested at most {MAX_DEPTH} deep.")
            path, to_root = [folders[ROOT]], True
        parent = path[-1].id
        name = item.name
        if client.get(row, entry_col(parent, name)) is not None:
            name = free_name(client, user, parent, name)
        placed = replace(item, parent=parent, name=name, modified=item.modified)
        conditions: list[Condition] = [("version", trash_col(item_id), found.version),
                                       ("absent", entry_col(parent, name)),
                                       *path_conditions(path)]
        mutations: list[Mutation] = [("delete", trash_col(item_id)), *link(placed, now)]
        if item.is_folder:
            # Its own header stayed (its entries did): touch it so caches look again.
            mutations.append(("put", header_col(item.id), pack({"modified": now})))
        try:
            versions = client.mutate_row(row, conditions, mutations)
        except ConditionFailed:
            continue
        return Restored(replace(placed, version=versions.get(index_col(item.kind, item.id), 0)),
                        renamed=name != item.name, to_root=to_root)
    raise ConditionFailed("the folder kept changing; try again")


def delete_forever(client: KeyValueStore, user: str, item_ids: Sequence[str], *,
                   now: float | None = None) -> list[Trashed]:
    """Delete up to :data:`BATCH` items of the Trash for good: one ``mutate_row`` that
    swaps each ``x:`` cell for a ``t:`` marker and frees the files' current bytes' share
    of the quota; then the files' bytes and versions go (:func:`.contents.finish_file`).
    Folders' trees are left to :func:`.cleanup.purge` (the caller runs it).
    Items no longer in the Trash are skipped."""
    if len(item_ids) > BATCH:
        raise ValueError(f"at most {BATCH} items per batch")
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        found = []
        for item_id in dict.fromkeys(item_ids):
            try:
                found.append(get_trashed(client, user, item_id))
            except NoSuchItem:
                continue
        if not found:
            return []
        used, used_version = usage_cell(client, user)
        freed = sum(t.item.size for t in found if not t.item.is_folder)
        conditions: list[Condition] = [("version", USAGE_COL, used_version)]
        mutations: list[Mutation] = [("put", USAGE_COL, pack(max(0, used - freed)))]
        for t in found:
            marker: Any = (pack({"k": MARK_FOLDER, "at": now}) if t.item.is_folder
                           else file_marker(t.item.content_id, now))
            conditions.append(("version", trash_col(t.item.id), t.version))
            mutations += [("delete", trash_col(t.item.id)), ("put", marker_col(t.item.id), marker)]
        try:
            client.mutate_row(row, conditions, mutations)
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the Trash kept changing; try again")
    for t in found:
        if not t.item.is_folder:
            finish_file(client, user, t.item.id, t.item.content_id)
    return found


def empty_trash(client: KeyValueStore, user: str, *, now: float | None = None,
                limit: int | None = None) -> int:
    """Delete everything in the Trash for good (at most ``limit`` items), a batch per
    mutation; how many went.  Folders' trees are left to :func:`.cleanup.purge`."""
    ids = [t.item.id for t in list_trash(client, user)][:limit]
    done = 0
    for start in range(0, len(ids), BATCH):
        done += len(delete_forever(client, user, ids[start:start + BATCH], now=now))
    return done


def sweep(client: KeyValueStore, user: str, *, now: float | None = None,
          limit: int = SWEEP_PER_VISIT) -> int:
    """Delete for good up to ``limit`` items trashed more than :data:`TRASH_DAYS` ago
    (the oldest first); how many went.  Folders' trees are left to
    :func:`.cleanup.purge`."""
    now = time.time() if now is None else now
    due = [t.item.id for t in reversed(list_trash(client, user)) if now - t.at > TRASH_TTL]
    due = due[:limit]
    done = 0
    for start in range(0, len(due), BATCH):
        done += len(delete_forever(client, user, due[start:start + BATCH], now=now))
    return done


__all__ = ["BATCH", "TRASH_DAYS", "Restored", "Trashed", "delete_forever",
           "empty_trash", "get_trashed", "list_trash", "restore", "sweep", "trash", "trash_many"]

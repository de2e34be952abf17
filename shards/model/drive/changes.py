"""Changing the drive: each create, rename, move or delete is one ``mutate_row``.

Every change conditions on the versions it read (the item's index cell, the
folders on the paths it touches, the quota) and on the target name being
absent; when a condition fails it reads again and retries, unless the reason
is a name now taken, which is the user's to resolve (:class:`NameTaken`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, Timeout

from ..errors import BadMove, NameTaken, NoSuchItem, QuotaExceeded, TooDeep
from ..retry import attempts
from .contents import drop_unlinked, file_marker, finish_file
from .reads import all_folders, folder_path, get_file, get_folder, path_in, usage_cell
from .records import (
    ATTEMPTS,
    DATA_COL,
    FILE,
    FOLDER,
    MAX_DEPTH,
    ROOT,
    SMALL_FILE,
    USAGE_COL,
    Item,
    check_name,
    content_row,
    drive_row,
    entry_col,
    header_col,
    index_col,
    item_from_entry,
    link,
    marker_col,
    new_id,
    pack,
    path_conditions,
)

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation, Readable


def _name_taken(client: KeyValueStore, user: str, folder_id: str, name: str, mine: str) -> bool:
    """After a failed condition: is ``name`` taken in the folder by another item than ``mine``?"""
    cell = client.get(drive_row(user), entry_col(folder_id, name))
    if cell is None:
        return False
    item = item_from_entry(entry_col(folder_id, name), cell)
    return item is None or item.id != mine


def _taken(name: str) -> NameTaken:
    return NameTaken(f"There is already something named {name!r} in this folder.")


def create_folder(client: KeyValueStore, user: str, parent_id: str, name: str, *,
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
    for _ in attempts(ATTEMPTS):
        path = folder_path(client, user, parent_id)
        if len(path) > MAX_DEPTH:
            raise TooDeep(f"Folders can be nested at most {MAX_DEPTH} deep.")
        conditions: list[Condition] = [("absent", entry_col(parent_id, name)), *path_conditions(path)]
        mutations = [*link(folder, now), ("put", header_col(folder.id), pack({"modified": now}))]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(folder, version=versions.get(index_col(FOLDER, folder.id), 0))
        except ConditionFailed:
            if _name_taken(client, user, parent_id, name, folder.id):
                raise _taken(name) from None
    raise ConditionFailed("the folder kept changing; try again")


class _Counted:
    """A read-only stream that counts bytes and refuses to yield more than ``limit``."""

    def __init__(self, stream: Readable, limit: int) -> None:
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


def over_quota(used: int, size: int, quota: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"This file ({size:,} bytes) does not fit: {used:,} of your {quota:,} bytes "
        f"are in use.", used=used, quota=quota)


def store_file(client: KeyValueStore, user: str, parent_id: str, name: str, stream: Readable, *,
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
    if client.get(row, entry_col(parent_id, name)) is not None:
        raise _taken(name)
    file_id, count = put_content(client, user, stream, size=size, quota=quota)
    now = time.time() if now is None else now
    item = Item(id=file_id, kind=FILE, name=name, parent=parent_id, size=count,
                ctype=ctype, created=now, modified=now)
    try:
        return _link_file(client, user, item, path, quota, now)
    except BaseException as exc:
        # After a timeout the link may have landed after all: keep the bytes
        # it would point to.  Otherwise nothing refers to them: drop them.
        if not isinstance(exc, Timeout):
            _drop_content(client, user, file_id)
        raise


def put_content(client: KeyValueStore, user: str, stream: Readable, *, size: int | None,
                quota: int) -> tuple[str, int]:
    """Stream an upload's bytes into a new file's row, within what the quota leaves:
    ``(file id, bytes stored)``.  Nothing links to them yet.

    :raises QuotaExceeded: they do not fit (known beforehand, or found while reading);
        nothing is left behind.
    """
    used, _ = usage_cell(client, user)
    if size is not None and used + size > quota:
        raise over_quota(used, size, quota)
    file_id = new_id()
    counted = _Counted(stream, quota - used)
    try:
        if size is not None and size <= SMALL_FILE:
            # Small and of known size: one plain put of the bytes.
            client.put(content_row(user, file_id), DATA_COL, counted.read(size + 1))
        else:
            client.put_stream(content_row(user, file_id), DATA_COL, counted)
    except _OverLimit:
        _drop_content(client, user, file_id)
        raise over_quota(used, counted.count, quota) from None
    return file_id, counted.count


def _drop_content(client: KeyValueStore, user: str, file_id: str) -> None:
    drop_unlinked(client, user, file_id)


def _link_file(client: KeyValueStore, user: str, item: Item, path: list[Item], quota: int,
               now: float) -> Item:
    for _ in attempts(ATTEMPTS):
        used, used_version = usage_cell(client, user)
        if used + item.size > quota:
            raise over_quota(used, item.size, quota)
        conditions: list[Condition] = [("absent", entry_col(item.parent, item.name)),
                      ("version", USAGE_COL, used_version), *path_conditions(path)]
        mutations = [*link(item, now), ("put", USAGE_COL, pack(used + item.size))]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(item, version=versions.get(index_col(FILE, item.id), 0))
        except ConditionFailed:
            if _name_taken(client, user, item.parent, item.name, item.id):
                raise _taken(item.name) from None
            path = folder_path(client, user, item.parent)
    raise ConditionFailed("the folder kept changing; try again")


def _get_item(client: KeyValueStore, user: str, kind: str, item_id: str) -> Item:
    item = get_file(client, user, item_id) if kind == FILE else get_folder(client, user, item_id)
    if item is None:
        raise NoSuchItem(f"There is no such {kind} in your drive.")
    return item


def rename(client: KeyValueStore, user: str, kind: str, item_id: str, new_name: str, *,
           now: float | None = None) -> Item:
    """Give a file or folder a new name in the same folder: one ``mutate_row``.

    :raises NameTaken: the new name is in use in that folder.
    :raises NoSuchItem: no such item (the root cannot be renamed).
    """
    new_name = check_name(new_name)
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        item = _get_item(client, user, kind, item_id)
        if item.id == ROOT:
            raise BadMove("The top folder of your drive cannot be renamed.")
        if item.name == new_name:
            return item
        renamed = replace(item, name=new_name)
        conditions: list[Condition] = [("version", index_col(kind, item_id), item.version),
                      ("absent", entry_col(item.parent, new_name))]
        mutations: list[Mutation] = [("delete", entry_col(item.parent, item.name)), *link(renamed, now)]
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


def move(client: KeyValueStore, user: str, kind: str, item_id: str, target_id: str, *,
         name: str | None = None, now: float | None = None) -> Item:
    """Move a file or folder into another folder: one ``mutate_row``.

    It keeps its name unless ``name`` is given (WebDAV's MOVE renames and moves at once).

    :raises NameTaken: the target folder holds that name already.
    :raises BadMove: a folder into itself or below itself.
    :raises NoSuchItem: the item or the target is gone.
    :raises TooDeep: the move would nest folders too deeply.
    """
    now = time.time() if now is None else now
    name = None if name is None else check_name(name)
    for _ in attempts(ATTEMPTS):
        item = _get_item(client, user, kind, item_id)
        if item.id == ROOT:
            raise BadMove("The top folder of your drive cannot be moved.")
        new_name = item.name if name is None else name
        if item.parent == target_id:
            return item if new_name == item.name else rename(client, user, kind, item_id,
                                                             new_name, now=now)
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
        moved = replace(item, parent=target_id, name=new_name)
        seen = {f.id: f for f in (*target_path, *source_path)}
        conditions: list[Condition] = [("version", index_col(kind, item_id), item.version),
                      ("absent", entry_col(target_id, new_name)),
                      *path_conditions(list(seen.values()))]
        mutations: list[Mutation] = [("delete", entry_col(item.parent, item.name)),
                     ("put", header_col(item.parent), pack({"modified": now})), *link(moved, now)]
        try:
            versions = client.mutate_row(drive_row(user), conditions, mutations)
            return replace(moved, version=versions.get(index_col(kind, item_id), 0))
        except ConditionFailed:
            if _name_taken(client, user, target_id, new_name, item_id):
                raise _taken(new_name) from None
    raise ConditionFailed("the folders kept changing; try again")


def delete_file(client: KeyValueStore, user: str, file_id: str, *, now: float | None = None) -> Item:
    """Remove a file for good (not into the Trash: :mod:`.trash`): its name and quota
    share at once, then its bytes and its earlier versions (:func:`.contents.finish_file`).

    A ``t:`` marker covers the moment between the two steps, so bytes of a
    file deleted by a frontend that then crashed are found and dropped later.
    """
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        item = _get_item(client, user, FILE, file_id)
        used, used_version = usage_cell(client, user)
        conditions: list[Condition] = [("version", index_col(FILE, file_id), item.version),
                      ("version", USAGE_COL, used_version)]
        mutations: list[Mutation] = [("delete", entry_col(item.parent, item.name)),
                     ("delete", index_col(FILE, file_id)),
                     ("put", header_col(item.parent), pack({"modified": now})),
                     ("put", marker_col(file_id), file_marker(item.content_id, now)),
                     ("put", USAGE_COL, pack(max(0, used - item.size)))]
        try:
            client.mutate_row(row, conditions, mutations)
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the file kept changing; try again")
    finish_file(client, user, file_id, item.content_id)
    return item


def delete_folder(client: KeyValueStore, user: str, folder_id: str, *,
                  now: float | None = None) -> Item:
    """Unlink a folder and everything below it, in one short step.

    The folder vanishes from its parent and from every path at once; its
    contents are removed afterwards by :func:`.cleanup.purge`,
    guided by the ``t:`` marker left here.
    """
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        folder = _get_item(client, user, FOLDER, folder_id)
        if folder.id == ROOT:
            raise BadMove("The top folder of your drive cannot be deleted.")
        conditions: list[Condition] = [("version", index_col(FOLDER, folder_id), folder.version)]
        mutations: list[Mutation] = [("delete", entry_col(folder.parent, folder.name)),
                     ("delete", index_col(FOLDER, folder_id)),
                     ("put", header_col(folder.parent), pack({"modified": now})),
                     ("put", marker_col(folder_id), pack({"k": "d", "at": now}))]
        try:
            client.mutate_row(drive_row(user), conditions, mutations)
            return folder
        except ConditionFailed:
            continue
    raise ConditionFailed("the folder kept changing; try again")

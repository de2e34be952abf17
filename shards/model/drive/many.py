"""Moving and deleting several items at once: each batch one ``mutate_row``.

A batch of up to :data:`BATCH` items (files and folders of one user) moves or goes
together or not at all: every item's index version is a condition, as in the
one-item changes of :mod:`.changes`.  The caller splits a longer selection into
batches (portal.drive_select); each stays far below one Raft entry's 32 KiB
(docs/store-promises.md, "Sizes": about 5 cells of under 300 bytes per item).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed

from ..errors import BadMove, NameTaken, NoSuchItem, TooDeep
from ..retry import attempts
from .changes import _height
from .contents import file_marker, finish_file
from .reads import all_folders, get_file, get_folder, path_in, usage_cell
from .records import (
    ATTEMPTS,
    FILE,
    MAX_DEPTH,
    ROOT,
    USAGE_COL,
    Item,
    drive_row,
    entry_col,
    header_col,
    index_col,
    link,
    marker_col,
    pack,
    path_conditions,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from raftkv.interface import Condition, KeyValueStore, Mutation

BATCH = 25  # items per mutation


def read_items(client: KeyValueStore, user: str, refs: Sequence[tuple[str, str]]) -> list[Item]:
    """The items named by ``(kind, id)``, each with its index version.

    :raises NoSuchItem: one of them is gone (or the root, which cannot be chosen).
    """
    items = []
    for kind, item_id in refs:
        item = get_file(client, user, item_id) if kind == FILE else get_folder(client, user,
                                                                                item_id)
        if item is None or item.id == ROOT:
            raise NoSuchItem("One of the chosen items is no longer in your drive.")
        items.append(item)
    return items


def move_many(client: KeyValueStore, user: str, refs: Sequence[tuple[str, str]], target_id: str,
              *, now: float | None = None) -> list[Item]:
    """Move up to :data:`BATCH` items into ``target_id`` together: one ``mutate_row``.

    Items already there stay as they are.
    :raises NameTaken: the target holds one of their names (or two share one).
    :raises BadMove, TooDeep, NoSuchItem: as :func:`.changes.move`; nothing moves.
    """
    if len(refs) > BATCH:
        raise ValueError(f"at most {BATCH} items per batch")
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        items = [i for i in read_items(client, user, refs) if i.parent != target_id]
        if not items:
            return []
        folders = all_folders(client, user)
        target_path = path_in(folders, target_id)
        if target_path is None:
            raise NoSuchItem("There is no such folder in your drive.")
        names = [i.name for i in items]
        clashes = sorted({n for n in names if names.count(n) > 1}
                         | {n for n in names if client.get(drive_row(user),
                                                           entry_col(target_id, n)) is not None})
        if clashes:
            raise NameTaken("The folder you chose already holds "
                            + ", ".join(repr(n) for n in clashes) + "; nothing was moved.")
        seen = {f.id: f for f in target_path}
        conditions: list[Condition] = []
        mutations: list[Mutation] = []
        for item in items:
            if item.is_folder:
                if any(f.id == item.id for f in target_path):
                    raise BadMove("A folder cannot be moved into itself or one of its "
                                  "subfolders.")
                if len(target_path) + _height(folders, item.id) > MAX_DEPTH:
                    raise TooDeep(f"Folders can be nested at most {MAX_DEPTH} deep.")
            source_path = path_in(folders, item.parent)
            if source_path is None:
                raise NoSuchItem("One of the chosen items is no longer in your drive.")
            seen.update((f.id, f) for f in source_path)
            conditions += [("version", index_col(item.kind, item.id), item.version),
                           ("absent", entry_col(target_id, item.name))]
            mutations += [("delete", entry_col(item.parent, item.name)),
                          ("put", header_col(item.parent), pack({"modified": now})),
                          *link(replace(item, parent=target_id), now)]
        conditions += path_conditions(list(seen.values()))
        try:
            client.mutate_row(drive_row(user), conditions, mutations)
            return [replace(i, parent=target_id) for i in items]
        except ConditionFailed:
            continue
    raise ConditionFailed("the folders kept changing; try again")


def delete_many(client: KeyValueStore, user: str, refs: Sequence[tuple[str, str]], *,
                now: float | None = None) -> list[Item]:
    """Unlink up to :data:`BATCH` files and folders together: one ``mutate_row`` (names,
    index cells, quota share, a ``t:`` marker each); then the files' bytes.  Folders'
    contents are left to :func:`.cleanup.purge`, as after :func:`.changes.delete_folder`.
    """
    if len(refs) > BATCH:
        raise ValueError(f"at most {BATCH} items per batch")
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        items = read_items(client, user, refs)
        used, used_version = usage_cell(client, user)
        freed = sum(i.size for i in items if not i.is_folder)
        conditions: list[Condition] = [("version", USAGE_COL, used_version)]
        mutations: list[Mutation] = [("put", USAGE_COL, pack(max(0, used - freed)))]
        for item in items:
            conditions.append(("version", index_col(item.kind, item.id), item.version))
            mutations += [("delete", entry_col(item.parent, item.name)),
                          ("delete", index_col(item.kind, item.id)),
                          ("put", header_col(item.parent), pack({"modified": now})),
                          ("put", marker_col(item.id),
                           pack({"k": "d", "at": now}) if item.is_folder
                           else file_marker(item.content_id, now))]
        try:
            client.mutate_row(row, conditions, mutations)
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the items kept changing; try again")
    for item in items:
        if not item.is_folder:
            finish_file(client, user, item.id, item.content_id)
    return items


__all__ = ["BATCH", "delete_many", "move_many", "read_items"]

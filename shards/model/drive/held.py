"""Uploads held on a name clash, until the user answers "Replace" or "Keep both".

An upload whose name is taken in its folder is not refused and not stored over
the other file: its bytes go to their own row as any upload's do, and an
``h:<id>`` cell in the drive row records where it was meant to go and which item
held the name then (its id and index version: what the question shows).  The
answer is one ``mutate_row`` each way:

- keep both: link it under the next free name, ``name (1).ext``, ``name (2).ext``...;
- replace: the upload becomes the old file's new content (the file keeps its id; its
  bytes until then become its newest earlier version, :mod:`.versions`), conditioned
  on the old file's index version being the one the user was shown, so a file
  changed since the question is never overwritten (:class:`Changed`).

Held bytes count against the quota only once linked; a hold nobody answers is
dropped by :func:`.cleanup.purge` after :data:`HELD_TTL` (docs/data-model.md, "Drive").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed

from ..errors import NameTaken, NoSuchItem
from ..retry import attempts
from .changes import over_quota, put_content
from .contents import Content
from .reads import folder_path, usage_cell
from .records import (
    ATTEMPTS,
    DATA_COL,
    FILE,
    USAGE_COL,
    Item,
    check_name,
    content_row,
    drive_row,
    entry_col,
    index_col,
    item_from_entry,
    link,
    pack,
    path_conditions,
    unpack,
)
from .versions import Changed, overwrite_with

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation, Readable

HELD_PREFIX = "h:"
HELD_TTL = 3600.0    # seconds a held upload waits for an answer before clean-up drops it
MAX_COPIES = 1000    # "name (1000).ext" is the last name keep-both tries
_COPY = re.compile(r" \((\d+)\)$")


@dataclass(frozen=True)
class Held:
    """An upload waiting for the user's answer, and the item its name clashed with."""

    item: Item            # the upload as it would be linked (id, parent, name, size, ctype)
    version: int          # the h: cell's version
    at: float             # when it was held
    other_id: str         # what held the name when it was asked
    other_version: int
    other_is_folder: bool


def held_col(file_id: str) -> str:
    return f"{HELD_PREFIX}{file_id}"


def copy_name(name: str, n: int) -> str:
    """``report.pdf`` -> ``report (n).pdf``; a name without an extension (or a dotfile) gets
    the number at its end."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def free_name(client: KeyValueStore, user: str, folder_id: str, name: str) -> str:
    """The first of ``name (1).ext``, ``name (2).ext``... not taken in the folder: one read
    of the columns that could hold them (they share the prefix ``name (``)."""
    first = copy_name(name, 1)
    prefix = first[:first.rindex(" (") + 2]
    taken = {column[len(entry_col(folder_id, "")):]
             for column in client.get_row(drive_row(user), prefix=entry_col(folder_id, prefix))}
    for n in range(1, MAX_COPIES + 1):
        candidate = copy_name(name, n)
        if candidate not in taken:
            return check_name(candidate)
    raise NameTaken(f"There are already {MAX_COPIES} copies of {name!r} in this folder.")


def hold_file(client: KeyValueStore, user: str, parent_id: str, name: str, stream: Readable, *,
              quota: int, size: int | None = None, ctype: str = "application/octet-stream",
              now: float | None = None) -> Held:
    """Store an upload's bytes and hold them for the user's answer to a name clash.

    :raises NoSuchItem: the folder is gone; :raises QuotaExceeded: it would not fit.
    If the name is free after all, the caller may link it with :func:`keep_both`.
    """
    name = check_name(name)
    folder_path(client, user, parent_id)
    file_id, count = put_content(client, user, stream, size=size, quota=quota)
    now = time.time() if now is None else now
    other = client.get(drive_row(user), entry_col(parent_id, name))
    found = None if other is None else item_from_entry(entry_col(parent_id, name), other)
    other_id, other_version, other_is_folder = "", 0, False
    if found is not None:
        index = client.get(drive_row(user), index_col(found.kind, found.id))
        other_id, other_is_folder = found.id, found.is_folder
        other_version = 0 if index is None else index.version
    record = {"p": parent_id, "n": name, "size": count, "ctype": ctype, "at": now,
              "o": other_id, "ov": other_version, "od": other_is_folder}
    versions = client.mutate_row(drive_row(user), [], [("put", held_col(file_id), pack(record))])
    item = Item(id=file_id, kind=FILE, name=name, parent=parent_id, size=count, ctype=ctype,
                created=now, modified=now)
    return Held(item, versions.get(held_col(file_id), 0), now, other_id, other_version,
                other_is_folder)


def get_held(client: KeyValueStore, user: str, file_id: str) -> Held:
    """The held upload ``file_id``; :raises NoSuchItem: answered already, or never held."""
    cell = client.get(drive_row(user), held_col(file_id))
    record = None if cell is None else unpack(cell.value)
    if cell is None or not isinstance(record, dict):
        raise NoSuchItem("That upload is no longer waiting: it was answered or has expired.")
    at = float(record.get("at", 0.0))
    item = Item(id=file_id, kind=FILE, name=str(record.get("n", "")), parent=str(record.get("p", "")),
                size=int(record.get("size", 0)), ctype=str(record.get("ctype", "")),
                created=at, modified=at)
    return Held(item, cell.version, at, str(record.get("o", "")), int(record.get("ov", 0)),
                bool(record.get("od", False)))


def keep_both(client: KeyValueStore, user: str, file_id: str, *, quota: int,
              now: float | None = None) -> Item:
    """Link a held upload under its own name if free, else the next free ``name (n).ext``."""
    now = time.time() if now is None else now
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        held = get_held(client, user, file_id)
        item = held.item
        name = item.name
        if client.get(row, entry_col(item.parent, name)) is not None:
            name = free_name(client, user, item.parent, name)
        used, used_version = usage_cell(client, user)
        if used + item.size > quota:
            raise over_quota(used, item.size, quota)
        placed = replace(item, name=name, created=now, modified=now)
        path = folder_path(client, user, item.parent)
        conditions: list[Condition] = [("version", held_col(file_id), held.version),
                                       ("absent", entry_col(item.parent, name)),
                                       ("version", USAGE_COL, used_version),
                                       *path_conditions(path)]
        mutations: list[Mutation] = [*link(placed, now), ("delete", held_col(file_id)),
                                     ("put", USAGE_COL, pack(used + item.size))]
        try:
            versions = client.mutate_row(row, conditions, mutations)
            return replace(placed, version=versions.get(index_col(FILE, file_id), 0))
        except ConditionFailed:
            continue
    raise ConditionFailed("the folder kept changing; try again")


def replace_file(client: KeyValueStore, user: str, file_id: str, *, quota: int,
                 now: float | None = None) -> Item:
    """Make a held upload the new content of the file it clashed with: one ``mutate_row``
    (:func:`.versions.overwrite_with`), conditioned on that file being as the user saw
    it when asked.  The file keeps its id; what it held becomes its newest earlier
    version (docs/data-model.md, "Drive").

    :raises Changed: the old file was changed, moved, renamed or deleted meanwhile
        (the upload stays held: ask again); a folder is never replaced.
    """
    row = drive_row(user)
    for _ in attempts(ATTEMPTS):
        held = get_held(client, user, file_id)
        item = held.item
        if held.other_is_folder or not held.other_id:
            raise Changed(f"{item.name!r} is a folder here, or free now: keep both instead.")
        entry = client.get(row, entry_col(item.parent, item.name))
        current = None if entry is None else item_from_entry(entry_col(item.parent, item.name),
                                                             entry)
        if current is None or current.id != held.other_id:
            _ask_again(client, user, held)
            raise Changed(f"{item.name!r} has changed since you were asked; choose again.")
        path = folder_path(client, user, item.parent)
        try:
            return overwrite_with(
                client, user, held.other_id, Content(file_id, item.size, item.ctype),
                quota=quota, expect=held.other_version, now=now,
                conditions=[("version", held_col(file_id), held.version),
                            *path_conditions(path)],
                mutations=[("delete", held_col(file_id))])
        except Changed:
            _ask_again(client, user, held)
            raise Changed(f"{item.name!r} has changed since you were asked; choose again."
                          ) from None
        except ConditionFailed:
            continue
    raise ConditionFailed("the folder kept changing; try again")


def _ask_again(client: KeyValueStore, user: str, held: Held) -> None:
    """Record what holds the name now: the question shown next is about it, and a
    Replace answered to that question conditions on it."""
    item = held.item
    other = client.get(drive_row(user), entry_col(item.parent, item.name))
    found = None if other is None else item_from_entry(entry_col(item.parent, item.name), other)
    index = None if found is None else client.get(drive_row(user),
                                                   index_col(found.kind, found.id))
    record = {"p": item.parent, "n": item.name, "size": item.size, "ctype": item.ctype,
              "at": held.at, "o": found.id if found else "",
              "ov": index.version if index else 0, "od": bool(found and found.is_folder)}
    try:
        client.mutate_row(drive_row(user), [("version", held_col(item.id), held.version)],
                          [("put", held_col(item.id), pack(record))])
    except ConditionFailed:
        pass  # answered or asked again meanwhile


def drop_held(client: KeyValueStore, user: str, file_id: str) -> None:
    """Forget a held upload (the user cancelled): its cell, then its bytes.

    Only while it is held: the id of a linked file (or of a hold just answered by
    another request) finds no ``h:`` cell, and no bytes are touched.
    :raises NoSuchItem: it is not held.
    """
    held = get_held(client, user, file_id)
    try:
        client.mutate_row(drive_row(user), [("version", held_col(file_id), held.version)],
                          [("delete", held_col(file_id))])
    except ConditionFailed:
        raise NoSuchItem("That upload was answered meanwhile.") from None
    client.delete(content_row(user, file_id), DATA_COL)


def drop_stale(client: KeyValueStore, user: str, *, now: float | None = None) -> int:
    """Drop every held upload older than :data:`HELD_TTL`; how many were dropped."""
    now = time.time() if now is None else now
    dropped = 0
    for column, cell in client.get_row(drive_row(user), prefix=HELD_PREFIX).items():
        record = unpack(cell.value)
        at = float(record.get("at", 0.0)) if isinstance(record, dict) else 0.0
        if now - at > HELD_TTL:
            try:
                drop_held(client, user, column[len(HELD_PREFIX):])
                dropped += 1
            except NoSuchItem:
                pass  # answered meanwhile
    return dropped

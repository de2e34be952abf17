"""Folders shared with named users ("Shared with me"), read-only or read-write.

Layout (two rows, each written by one conditioned ``mutate_row``)::

    row {<owner>}/grants            the truth, on the owner's shard beside their drive
        g:<folder_id>/<recipient>   {m: "r"|"w", c: created}
    row {<recipient>}/sharedwithme  the recipient's list: only a pointer
        <owner>/<folder_id>         {m, c} as granted (the mode shown; never trusted)

A column per (folder, recipient) rather than one dict per folder, so that two
frontends granting two people at once never overwrite each other, and a
folder's grants are one ``get_row`` by the prefix ``g:<folder_id>/``.

Order and crashes.  Grant writes the owner's cell first, then the pointer;
revoke (by the owner) and leave (by the recipient) delete the owner's cell
first, then the pointer.  The owner's cell is read on *every* access
(:func:`access`), never cached, so a revoke stops the next request at once;
a pointer opens nothing by itself.  So a crash between the two writes is
harmless: a grant without its pointer is on the owner's Sharing page but not
yet in the recipient's list (granting again writes the pointer); a pointer
without its grant lists a folder that opens nothing, and :func:`shared_with`
drops it from the list (and the row) when it sees it.

Bounds: at most :data:`MAX_PER_FOLDER` people per folder and
:data:`MAX_PER_RECIPIENT` folders shared with one person, so each list is one
bounded read.  Whatever a recipient changes is changed by the drive's own
functions on the owner's drive row (one mutation there); files uploaded into a
shared folder are the owner's and count against the owner's quota.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, RaftKVError, Refused

from ..errors import DriveError, NoSuchItem
from .reads import all_folders, get_folder, path_in
from .records import FOLDER, ROOT, Item, drive_row, is_id, pack, unpack
from .shares import Share, resolve

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore

__all__ = ["MAX_PER_FOLDER", "MAX_PER_RECIPIENT", "READ", "WRITE", "Access", "Grant",
           "NotAllowed", "TooManyGrants", "access", "folder_grants", "grant", "grants_row",
           "granted", "leave", "leave_all", "revoke", "shared_folders", "shared_with",
           "sharedwithme_row", "within"]

READ, WRITE = "r", "w"
MAX_PER_FOLDER = 100       # people one folder is shared with (the Sharing page reads them at once)
MAX_PER_RECIPIENT = 200    # folders shared with one person ("Shared with me" reads them at once)
_MODES = frozenset({READ, WRITE})


class NotAllowed(DriveError, Refused):
    """The recipient's mode does not allow this change (or it would leave the shared tree)."""


class TooManyGrants(DriveError, Refused):
    """A folder or a recipient has reached its bound of grants."""


@dataclass(frozen=True)
class Grant:
    """One folder of ``owner`` shared with ``recipient``."""

    owner: str
    folder_id: str
    recipient: str
    mode: str            # READ or WRITE
    created: float
    version: int = 0     # the cell's version when read

    @property
    def writable(self) -> bool:
        return self.mode == WRITE


@dataclass(frozen=True)
class Access:
    """What a recipient reached through a grant: the item and the folders from the
    shared one down to it (its parent for a file, itself for a folder)."""

    grant: Grant
    item: Item
    path: list[Item]


def grants_row(owner: str) -> str:
    return f"{{{owner}}}/grants"


def sharedwithme_row(recipient: str) -> str:
    return f"{{{recipient}}}/sharedwithme"


def _grant_col(folder_id: str, recipient: str) -> str:
    return f"g:{folder_id}/{recipient}"


def _decode(owner: str, folder_id: str, recipient: str, value: bytes,
            version: int) -> Grant | None:
    record = unpack(value)
    if not isinstance(record, dict) or record.get("m") not in _MODES:
        return None
    return Grant(owner, folder_id, recipient, record["m"], float(record.get("c", 0.0)), version)


def _check_folder_id(folder_id: str) -> None:
    if folder_id != ROOT and not is_id(folder_id):
        raise NoSuchItem("There is no such folder.")


def grant(client: KeyValueStore, owner: str, folder_id: str, recipient: str, mode: str, *,
          now: float | None = None) -> Grant:
    """Share ``owner``'s folder with ``recipient`` (or change the mode of that share).

    The caller checks that ``recipient`` is an account.  Owner's cell first, then
    the recipient's pointer (see the module).

    :raises NoSuchItem: no such folder in the owner's drive.
    :raises NotAllowed: sharing with oneself, or a mode other than READ/WRITE.
    :raises TooManyGrants: the folder or the recipient is at its bound.
    """
    if mode not in _MODES:
        raise NotAllowed("Choose read-only or read-write.")
    if recipient == owner:
        raise NotAllowed("You cannot share a folder with yourself.")
    _check_folder_id(folder_id)
    if get_folder(client, owner, folder_id) is None:
        raise NoSuchItem("There is no such folder in your drive.")
    now = time.time() if now is None else now
    column = _grant_col(folder_id, recipient)
    existing = client.get(grants_row(owner), column)
    condition: Condition
    if existing is None:
        if len(client.get_row(grants_row(owner), f"g:{folder_id}/",
                              limit=MAX_PER_FOLDER)) >= MAX_PER_FOLDER:
            raise TooManyGrants(f"A folder can be shared with at most {MAX_PER_FOLDER} people.")
        if len(client.get_row(sharedwithme_row(recipient),
                              limit=MAX_PER_RECIPIENT)) >= MAX_PER_RECIPIENT:
            raise TooManyGrants(f"{recipient} has {MAX_PER_RECIPIENT} folders shared with them "
                                "already.")
        condition = ("absent", column)
    else:
        condition = ("version", column, existing.version)
    value = pack({"m": mode, "c": now})
    try:
        versions = client.mutate_row(grants_row(owner), [condition], [("put", column, value)])
    except ConditionFailed:
        raise ConditionFailed("this sharing changed meanwhile; try again") from None
    client.put(sharedwithme_row(recipient), f"{owner}/{folder_id}", value)
    return Grant(owner, folder_id, recipient, mode, now, versions.get(column, 0))


def revoke(client: KeyValueStore, owner: str, folder_id: str, recipient: str) -> bool:
    """End a share: the owner's cell first (access ends there), then the pointer.

    Returns whether there was such a grant.  Also what a recipient's "leave" does
    (:func:`leave`); either side may finish a half-done one by calling it again.
    """
    if folder_id != ROOT and not is_id(folder_id):
        return False
    had = client.delete(grants_row(owner), _grant_col(folder_id, recipient))
    return client.delete(sharedwithme_row(recipient), f"{owner}/{folder_id}") or had


def leave(client: KeyValueStore, recipient: str, owner: str, folder_id: str) -> bool:
    """The recipient gives up a folder shared with them (same order as :func:`revoke`)."""
    return revoke(client, owner, folder_id, recipient)


def leave_all(client: KeyValueStore, recipient: str) -> int:
    """Give up every folder shared with ``recipient`` (deleting their account): otherwise a
    later account of the same name would find the grants.  Returns how many were left."""
    pointers = client.get_row(sharedwithme_row(recipient), limit=MAX_PER_RECIPIENT)
    for column in pointers:
        owner, _, folder_id = column.partition("/")
        if owner and (folder_id == ROOT or is_id(folder_id)):
            client.delete(grants_row(owner), _grant_col(folder_id, recipient))
        client.delete(sharedwithme_row(recipient), column)
    return len(pointers)


def folder_grants(client: KeyValueStore, owner: str, folder_id: str) -> list[Grant]:
    """Who ``owner``'s folder is shared with, by name (the Sharing page)."""
    prefix = f"g:{folder_id}/"
    found = [_decode(owner, folder_id, column[len(prefix):], cell.value, cell.version)
             for column, cell in client.get_row(grants_row(owner), prefix,
                                                limit=MAX_PER_FOLDER).items()]
    return [g for g in found if g is not None]


def shared_folders(client: KeyValueStore, owner: str) -> dict[str, int]:
    """The ids of ``owner``'s folders shared with anyone, and with how many people.

    Bounded by what the owner can share: read in pages of the grants row.
    """
    counts: dict[str, int] = {}
    after = ""
    while True:
        page = client.get_row(grants_row(owner), "g:", after=after, limit=1000)
        for column in page:
            folder_id = column[2:].partition("/")[0]
            counts[folder_id] = counts.get(folder_id, 0) + 1
        if len(page) < 1000:
            return counts
        after = next(reversed(page))


def shared_with(client: KeyValueStore, recipient: str) -> list[tuple[Grant, Item]]:
    """The folders shared with ``recipient`` that still open: each pointer checked
    against the owner's grant (one ``get_cells`` over the owners' rows) and the folder's
    index; pointers whose grant is gone are dropped from the row.  Sorted by owner, name."""
    pointers = client.get_row(sharedwithme_row(recipient), limit=MAX_PER_RECIPIENT)
    refs = [(column, *column.partition("/")[::2]) for column in pointers]
    refs = [(col, owner, fid) for col, owner, fid in refs if owner and (fid == ROOT or is_id(fid))]
    keys: list[tuple[str, str]] = []
    for _, owner, fid in refs:
        keys.append((grants_row(owner), _grant_col(fid, recipient)))
        keys.append((drive_row(owner), f"d:{fid}" if fid != ROOT else "e:root/"))
    cells = client.get_cells(keys) if keys else []
    found: list[tuple[Grant, Item]] = []
    for i, (column, owner, fid) in enumerate(refs):
        grant_cell, folder_cell = cells[2 * i], cells[2 * i + 1]
        value = getattr(grant_cell, "value", None)
        decoded = None if value is None else _decode(owner, fid, recipient, value,
                                                     getattr(grant_cell, "version", 0))
        if decoded is None:
            try:  # a pointer left by a crash: tidied, best effort (a GET must not fail on it)
                client.delete(sharedwithme_row(recipient), column)
            except RaftKVError:
                pass
            continue
        folder_value = getattr(folder_cell, "value", None)
        record = unpack(folder_value) if folder_value is not None else None
        if fid == ROOT:
            item = Item(id=ROOT, kind=FOLDER, name="", parent="")
        elif isinstance(record, dict):
            item = Item(id=fid, kind=FOLDER, name=str(record.get("n", "")),
                        parent=str(record.get("p", "")))
        else:
            continue  # the folder was deleted; the owner's grant goes with its page
        found.append((decoded, item))
    return sorted(found, key=lambda gi: (gi[0].owner, gi[1].name.casefold()))


def granted(client: KeyValueStore, recipient: str, owner: str, folder_id: str, *,
            write: bool = False) -> Grant:
    """``recipient``'s grant on ``owner``'s folder, read now (never cached: a revoked
    grant opens nothing from the next call on).  For callers that reach items by
    walking *down* from the shared folder by names (WebDAV paths), this is the whole
    check; callers given an id use :func:`access`.

    :raises NoSuchItem: no such grant.  :raises NotAllowed: ``write`` on a read-only one.
    """
    if folder_id != ROOT and not is_id(folder_id):
        raise NoSuchItem("There is no such shared folder.")
    cell = client.get(grants_row(owner), _grant_col(folder_id, recipient))
    found = None if cell is None else _decode(owner, folder_id, recipient, cell.value,
                                              cell.version)
    if found is None:
        raise NoSuchItem("There is no such shared folder.")
    if write and not found.writable:
        raise NotAllowed("This folder is shared with you read-only.")
    return found


def access(client: KeyValueStore, recipient: str, owner: str, folder_id: str, kind: str,
           item_id: str, *, write: bool = False) -> Access:
    """Check ``recipient``'s grant on ``owner``'s folder (:func:`granted`), then that
    ``item_id`` is inside it, walking parents up (as share links do).

    :raises NoSuchItem: no grant, or the item is not inside the shared folder.
    :raises NotAllowed: ``write`` and the grant is read-only.
    """
    try:
        found = granted(client, recipient, owner, folder_id, write=write)
    except NoSuchItem:
        raise NoSuchItem("There is no such item in this shared folder.") from None
    share = Share(hash="", owner=owner, item_id=folder_id, kind=FOLDER, created=found.created)
    item, path = resolve(client, share, kind, item_id)
    return Access(found, item, path)


def within(client: KeyValueStore, owner: str, folder_id: str) -> list[tuple[Item, list[str]]]:
    """The folders of ``owner`` inside the shared ``folder_id`` (itself first), each with
    its names below the shared folder: the targets a recipient may move things to."""
    folders = all_folders(client, owner)
    targets: list[tuple[Item, list[str]]] = []
    for folder in folders.values():
        path = path_in(folders, folder.id)
        ids = [f.id for f in path or []]
        if folder_id in ids:
            targets.append((folder, [f.name for f in (path or [])[ids.index(folder_id) + 1:]]))
    return sorted(targets, key=lambda t: [n.casefold() for n in t[1]])

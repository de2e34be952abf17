"""Clean-up after deletes in the drive: the bytes and the names below a deleted folder.

:func:`.changes.delete_folder` unlinks a tree in one short step and
leaves a ``t:<id>`` marker; this module removes what hangs below it, in
mutations small enough for one Raft entry (docs/store-promises.md, "Sizes"), and frees the
quota as bytes go.  Any frontend can run it, and run it again after a crash:
every step is idempotent, and the marker goes last.

A folder is removed only when its header still has the version its emptiness
was seen at, so anything that landed in it meanwhile is found on the next pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raftkv.errors import ConditionFailed

from .held import drop_stale
from .reads import list_folder, usage_cell
from .records import (
    ATTEMPTS,
    DATA_COL,
    FILE,
    FOLDER,
    USAGE_COL,
    Item,
    content_row,
    drive_row,
    entry_col,
    header_col,
    index_col,
    pack,
    unpack,
)

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["pending", "purge"]

BATCH = 25            # names removed per mutation: 2 cells of <300 bytes each, far below 32 KiB
MAX_STEPS = 100_000   # a bound on one purge's loop, whatever happens concurrently


def pending(client: KeyValueStore, user: str) -> list[tuple[str, str]]:
    """``(id, "f" | "d")`` of every deleted file or folder whose clean-up is unfinished."""
    found = []
    for column, cell in client.get_row(drive_row(user), prefix="t:").items():
        record = unpack(cell.value)
        kind = record.get("k") if isinstance(record, dict) else None
        found.append((column[2:], kind if kind in ("f", "d") else "f"))
    return found


def purge(client: KeyValueStore, user: str, *, deadline: float | None = None) -> bool:
    """Finish every pending clean-up of ``user`` (and drop stale held uploads); True when
    nothing is left.

    :param deadline: a ``time.monotonic()`` after which to stop (the rest stays
        marked for the next call).
    """
    row = drive_row(user)
    drop_stale(client, user)  # uploads held on a name clash that nobody answered
    for item_id, kind in pending(client, user):
        if kind == "f":
            client.delete(content_row(user, item_id), DATA_COL)
        elif not _purge_tree(client, user, item_id, deadline):
            return False
        client.delete(row, f"t:{item_id}")
        if _expired(deadline):
            return not pending(client, user)
    return True


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _purge_tree(client: KeyValueStore, user: str, top: str, deadline: float | None) -> bool:
    """Remove everything below ``top`` and ``top`` itself, deepest folders first."""
    # (folder id, its entry column in its parent; None for the already unlinked top)
    stack: list[tuple[str, str | None]] = [(top, None)]
    for _ in range(MAX_STEPS):
        if not stack:
            return True
        if _expired(deadline):
            return False
        folder_id, entry = stack[-1]
        listing = list_folder(client, user, folder_id)
        subfolders = [i for i in listing.items if i.kind == FOLDER]
        if subfolders:
            stack.extend((f.id, entry_col(folder_id, f.name)) for f in subfolders)
            continue
        files = list(listing.items)
        for start in range(0, len(files), BATCH):
            _remove_files(client, user, files[start:start + BATCH])
            if _expired(deadline):
                return False
        mutations: list[tuple[Any, ...]] = [("delete", header_col(folder_id)),
                                            ("delete", index_col(FOLDER, folder_id))]
        if entry is not None:
            mutations.append(("delete", entry))
        try:
            client.mutate_row(drive_row(user), [("version", header_col(folder_id),
                                                 listing.version)], mutations)
            stack.pop()
        except ConditionFailed:
            continue  # something changed in the folder meanwhile: look again
    return False


def _remove_files(client: KeyValueStore, user: str, files: Sequence[Item]) -> None:
    """Drop the bytes, then the names and the quota share, of up to :data:`BATCH` files."""
    for item in files:
        client.delete(content_row(user, item.id), DATA_COL)
    freed = sum(item.size for item in files)
    mutations: list[tuple[Any, ...]] = []
    for item in files:
        mutations += [("delete", entry_col(item.parent, item.name)),
                      ("delete", index_col(FILE, item.id))]
    for _ in range(ATTEMPTS):
        used, version = usage_cell(client, user)
        try:
            client.mutate_row(drive_row(user), [("version", USAGE_COL, version)],
                              [*mutations, ("put", USAGE_COL, pack(max(0, used - freed)))])
            return
        except ConditionFailed:
            continue
    raise ConditionFailed("the quota kept changing; try again")

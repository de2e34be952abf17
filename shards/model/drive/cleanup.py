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

from ..retry import attempts
from .contents import MARK_CONTENT, MARK_FILE, MARK_FOLDER, drop_bytes, file_marker, finish_file
from .held import drop_stale
from .reads import get_file, list_folder, usage_cell
from .records import (
    ATTEMPTS,
    FILE,
    FOLDER,
    USAGE_COL,
    Item,
    drive_row,
    entry_col,
    header_col,
    index_col,
    marker_col,
    pack,
    unpack,
)

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["pending", "purge"]

BATCH = 25            # names removed per mutation: 2 cells of <300 bytes each, far below 32 KiB
MAX_STEPS = 100_000   # a bound on one purge's loop, whatever happens concurrently


def pending(client: KeyValueStore, user: str) -> list[tuple[str, str]]:
    """``(id, "f" | "d" | "c")`` of every deleted file, folder or dropped version whose
    clean-up is unfinished (see :mod:`.contents` for the kinds)."""
    return [(item_id, kind) for item_id, kind, _ in _markers(client, user)]


def _markers(client: KeyValueStore, user: str) -> list[tuple[str, str, str]]:
    found = []
    for column, cell in client.get_row(drive_row(user), prefix="t:").items():
        record = unpack(cell.value)
        record = record if isinstance(record, dict) else {}
        kind = record.get("k")
        found.append((column[2:], kind if kind in (MARK_FILE, MARK_FOLDER, MARK_CONTENT)
                      else MARK_FILE, str(record.get("c", ""))))
    return found


def purge(client: KeyValueStore, user: str, *, deadline: float | None = None) -> bool:
    """Finish every pending clean-up of ``user`` (and drop stale held uploads); True when
    nothing is left.

    :param deadline: a ``time.monotonic()`` after which to stop (the rest stays
        marked for the next call).
    """
    row = drive_row(user)
    drop_stale(client, user)  # uploads held on a name clash that nobody answered
    for item_id, kind, content_id in _markers(client, user):
        if kind == MARK_FILE:
            finish_file(client, user, item_id, content_id)  # bytes, versions, marker
        elif kind == MARK_CONTENT:
            drop_bytes(client, user, item_id)
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
    """Unlink up to :data:`BATCH` files for good, as :func:`.changes.delete_file` does
    (names, quota share and a ``t:`` marker each in one mutation), then drop their bytes
    and versions (:func:`.contents.finish_file`)."""
    now = time.time()
    content = {}
    for item in files:
        found = get_file(client, user, item.id)
        content[item.id] = found.content_id if found is not None else item.id
    freed = sum(item.size for item in files)
    mutations: list[tuple[Any, ...]] = []
    for item in files:
        mutations += [("delete", entry_col(item.parent, item.name)),
                      ("delete", index_col(FILE, item.id)),
                      ("put", marker_col(item.id), file_marker(content[item.id], now))]
    for _ in attempts(ATTEMPTS):
        used, version = usage_cell(client, user)
        try:
            client.mutate_row(drive_row(user), [("version", USAGE_COL, version)],
                              [*mutations, ("put", USAGE_COL, pack(max(0, used - freed)))])
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the quota kept changing; try again")
    for item in files:
        finish_file(client, user, item.id, content[item.id])

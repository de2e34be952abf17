"""Reads the other modules build on: folder cells, records, pointers, the usage count.

None of these migrate the mailbox (:mod:`.migrate` does, and the public entry
points call it first); they read what the layout holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raftkv.interface import MAX_CELLS, Cell

from ..errors import NoSuchFolder
from .layout import (
    FOLDER_PREFIX,
    FSEQ_COL,
    RECORD_PREFIX,
    USAGE_COL,
    Folder,
    Record,
    fid_of,
    folder_col,
    folder_from_cell,
    mailbox_row,
    pointer_col,
    record_col,
    record_from_cell,
    uid_of,
    unpack,
    unpack_int,
    unpack_pointer,
    usage_clean,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from raftkv.interface import KeyValueStore, Unchanged


def read_cells(client: KeyValueStore, keys: Sequence[tuple[str, str]]) -> list[Cell | None]:
    """``get_cells`` for any number of keys (:data:`MAX_CELLS` per round trip)."""
    found: list[Cell | None] = []
    for start in range(0, len(keys), MAX_CELLS):
        answers: list[Cell | Unchanged | None] = client.get_cells(keys[start:start + MAX_CELLS])
        found.extend(a if isinstance(a, Cell) else None for a in answers)
    return found


def read_folders(client: KeyValueStore, user: str) -> tuple[dict[int, Folder], dict[str, Any], int]:
    """Every folder, and ``fseq`` (its value, {} when absent, and version, 0 when absent).

    One ``get_row``: the prefix "f" covers the ``f:`` cells and ``fseq`` alike, so the
    folders and the counter they were made under are one state of the row.
    """
    cells = client.get_row(mailbox_row(user), prefix="f")
    folders: dict[int, Folder] = {}
    fseq: dict[str, Any] = {}
    fseq_version = 0
    for column, cell in cells.items():
        if column == FSEQ_COL:
            value = unpack(cell.value)
            fseq, fseq_version = (value if isinstance(value, dict) else {}), cell.version
        elif column.startswith(FOLDER_PREFIX):
            folder = folder_from_cell(fid_of(column), cell.value, cell.version)
            if folder is not None:
                folders[folder.id] = folder
    return folders, fseq, fseq_version


def get_folder(client: KeyValueStore, user: str, fid: int) -> Folder | None:
    """One folder's cell (its status: counts, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ)."""
    cell = client.get(mailbox_row(user), folder_col(fid))
    return None if cell is None else folder_from_cell(fid, cell.value, cell.version)


def need_folder(client: KeyValueStore, user: str, fid: int) -> Folder:
    folder = get_folder(client, user, fid)
    if folder is None:
        raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
    return folder


def folder_and_records(client: KeyValueStore, user: str, fid: int, uids: Sequence[int],
                       extra: Sequence[str] = ()) -> tuple[Folder, dict[int, Record], list[Cell | None]]:
    """The folder, the records of ``uids`` that exist, and the cells of the ``extra``
    columns of the mailbox row: one round trip for a batch (<= :data:`MAX_CELLS` cells).

    :raises NoSuchFolder: the folder is gone.
    """
    row = mailbox_row(user)
    keys = [(row, folder_col(fid)), *((row, c) for c in extra),
            *((row, record_col(fid, uid)) for uid in uids)]
    cells = read_cells(client, keys)
    folder_cell = cells[0]
    folder = None if folder_cell is None else folder_from_cell(fid, folder_cell.value,
                                                               folder_cell.version)
    if folder is None:
        raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
    records: dict[int, Record] = {}
    for uid, cell in zip(uids, cells[1 + len(extra):], strict=True):
        record = None if cell is None else record_from_cell(fid, uid, cell.value, cell.version)
        if record is not None:
            records[uid] = record
    return folder, records, cells[1:1 + len(extra)]


def records_of(cells: dict[str, Cell], fid: int) -> list[Record]:
    """The records among ``u:`` cells of one folder (as ``get_row`` answered), in its order."""
    found = []
    for column, cell in cells.items():
        record = record_from_cell(fid, uid_of(column), cell.value, cell.version)
        if record is not None:
            found.append(record)
    return found


def locate_pointer(client: KeyValueStore, user: str, msg_id: str) -> tuple[int, int] | None:
    """``(fid, uid)`` where the message is now, from its ``m:`` pointer."""
    cell = client.get(mailbox_row(user), pointer_col(msg_id))
    return None if cell is None else unpack_pointer(cell.value)


def record_at(client: KeyValueStore, user: str, fid: int, uid: int) -> Record | None:
    cell = client.get(mailbox_row(user), record_col(fid, uid))
    return None if cell is None else record_from_cell(fid, uid, cell.value, cell.version)


def usage_of(client: KeyValueStore, user: str, cell: Cell | None) -> tuple[int, int]:
    """``(bytes used, version of the usage cell)`` given the cell as read.

    Without a cell (a new mailbox, one from before quotas) the count is the sum of
    every record's size; a write conditioned on version 0 (absent) then makes it
    the mailbox's counter from then on.
    """
    if cell is not None:
        value = unpack_int(cell.value)
        if value is not None:
            return value, cell.version
    records = client.get_row(mailbox_row(user), prefix=RECORD_PREFIX)
    total = 0
    for column, record_cell in records.items():
        data = unpack(record_cell.value)
        size = data.get("size", 0) if isinstance(data, dict) else 0
        if isinstance(size, int) and size > 0 and column.count(":") == 2:
            total += size
    return total, 0 if cell is None else cell.version


def is_clean(usage_cell: Cell | None) -> bool:
    """Whether the usage cell as read bears no old writer's mark (:mod:`.strays`): a write
    of it keeps the mark it found, so only a look for strays removes it."""
    return usage_clean(None if usage_cell is None else usage_cell.value)


def usage(client: KeyValueStore, user: str) -> tuple[int, int]:
    """``(bytes used by every message of every folder, version of the usage cell)``."""
    return usage_of(client, user, client.get(mailbox_row(user), USAGE_COL))


def uids_in(records: Iterable[Record]) -> list[int]:
    return [record.uid for record in records]

"""Reading the drive: items by id, paths to the root, folder listings, usage, file bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import NoSuchItem
from .records import (
    DATA_COL,
    FILE,
    FOLDER,
    MAX_DEPTH,
    ROOT,
    USAGE_COL,
    Item,
    Listing,
    content_row,
    drive_row,
    header_col,
    index_col,
    is_id,
    item_from_entry,
    item_from_index,
    root_item,
    unpack,
)

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

FOLDER_INDEX = index_col(FOLDER, "")  # the prefix of the folder index's columns


def get_file(client: KeyValueStore, user: str, file_id: str) -> Item | None:
    """The file ``file_id`` of ``user``, or None (also for ids of other users' files)."""
    if not is_id(file_id):
        return None
    cell = client.get(drive_row(user), index_col(FILE, file_id))
    return None if cell is None else item_from_index(FILE, file_id, cell)


def get_folder(client: KeyValueStore, user: str, folder_id: str) -> Item | None:
    """The folder ``folder_id`` of ``user`` (the root for :data:`ROOT`), or None."""
    if folder_id == ROOT:
        return root_item()
    if not is_id(folder_id):
        return None
    cell = client.get(drive_row(user), index_col(FOLDER, folder_id))
    return None if cell is None else item_from_index(FOLDER, folder_id, cell)


def folder_path(client: KeyValueStore, user: str, folder_id: str) -> list[Item]:
    """The folders from the root down to ``folder_id``, each with its version.

    One read whatever the depth: the folder index (``d:``), which holds every
    folder's parent, comes in one ``get_row``.

    :raises NoSuchItem: the folder does not exist, or hangs below a deleted one.
    """
    if folder_id == ROOT:
        return [root_item()]
    path = path_in(all_folders(client, user), folder_id) if is_id(folder_id) else None
    if path is None:
        raise NoSuchItem("There is no such folder in your drive.")
    return path


def folder_version(client: KeyValueStore, user: str, folder_id: str) -> int:
    """The version of the folder's header: equal versions mean an unchanged listing."""
    cell = client.get(drive_row(user), header_col(folder_id))
    return 0 if cell is None else cell.version


def list_folder(client: KeyValueStore, user: str, folder_id: str) -> Listing:
    """Every entry of one folder, with the header version they were read at.

    One ``get_row`` returns the header and the entries together, so a cache
    holding this listing is exactly as fresh as its version says.
    """
    header, items = _entries(client.get_row(drive_row(user), prefix=header_col(folder_id)),
                             folder_id)
    return Listing(folder_id, header.version if header else 0, tuple(items))


def _entries(cells: dict[str, Cell], folder_id: str) -> tuple[Cell | None, list[Item]]:
    """A folder's header (popped from ``cells``) and its entries among ``cells``."""
    header = cells.pop(header_col(folder_id), None)
    return header, [item for column, cell in cells.items()
                    if (item := item_from_entry(column, cell)) is not None]


def all_folders(client: KeyValueStore, user: str) -> dict[str, Item]:
    """Every folder of ``user`` by id, the root included (for move targets, paths)."""
    return folders_from(client.get_row(drive_row(user), prefix=FOLDER_INDEX))


def folders_from(cells: dict[str, Cell]) -> dict[str, Item]:
    """:func:`all_folders` from the folder index's cells, read already."""
    folders = {ROOT: root_item()}
    for column, cell in cells.items():
        folder = item_from_index(FOLDER, column[len(FOLDER_INDEX):], cell)
        if folder is not None:
            folders[folder.id] = folder
    return folders


def entries_page(client: KeyValueStore, user: str, folder_id: str, *, after: str = "",
                 reverse: bool = False, limit: int) -> tuple[int | None, list[Item], bool]:
    """Up to ``limit`` entries of one folder in name order (column order; descending if
    ``reverse``), those after the name ``after`` -- without reading the rest of the
    folder.  Returns ``(header version or None, entries, more)``: the version comes
    with the first page in name order only, from the same read as its entries
    (the header column sorts before every entry).
    """
    prefix = header_col(folder_id)
    with_header = not after and not reverse
    cells = client.get_row(drive_row(user), prefix=prefix,
                           after=prefix + after if after else "", reverse=reverse,
                           limit=limit + 1 + with_header)
    header, items = _entries(cells, folder_id)
    version = (header.version if header else 0) if with_header else None
    return version, items[:limit], len(items) > limit


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


def usage_cell(client: KeyValueStore, user: str) -> tuple[int, int]:
    cell = client.get(drive_row(user), USAGE_COL)
    return usage_of(cell), 0 if cell is None else cell.version


def usage_of(cell: Cell | None) -> int:
    """Bytes used, from the quota cell (``q:used``) read already."""
    used = None if cell is None else unpack(cell.value)
    return used if isinstance(used, int) else 0


def usage(client: KeyValueStore, user: str) -> int:
    """Bytes of file content ``user`` holds."""
    return usage_cell(client, user)[0]


def live_file(client: KeyValueStore, user: str, file_id: str) -> Item:
    """The file ``file_id`` if a path from the top folder reaches it: not below a folder
    in the Trash or deleted (whose files keep their index cells until clean-up).  One
    more read than :func:`get_file`: the folder index.

    :raises NoSuchItem: no such file, or none reachable.
    """
    item = get_file(client, user, file_id)
    if item is None or (item.parent != ROOT
                        and path_in(all_folders(client, user), item.parent) is None):
        raise NoSuchItem("There is no such file in your drive.")
    return item


def open_file(client: KeyValueStore, user: str, file_id: str, *, offset: int = 0
              ) -> tuple[Item, int, Iterator[bytes]]:
    """A file and its bytes, fetched lazily: ``(item, size, chunks)``, the chunks from
    byte ``offset`` on (nothing before it is read) and ``size`` the whole file's.

    :raises NoSuchItem: no such file, or its bytes are gone (deleted meanwhile).
    """
    item = get_file(client, user, file_id)
    if item is None:
        raise NoSuchItem("There is no such file in your drive.")
    found = client.get_stream(content_row(user, item.content_id), DATA_COL, offset=offset)
    if found is None:
        raise NoSuchItem("The file's contents are missing; it may have just been deleted.")
    return item, found[0], found[1]


def walk_files(client: KeyValueStore, user: str, folder_id: str) -> Iterator[tuple[str, Item]]:
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

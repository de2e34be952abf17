"""What a drive folder page shows, read in at most two sequential store round trips.

The cells the page needs on every visit -- the quota, the folder's header and
the folder index cells of its breadcrumb, as far as this worker knows them --
are confirmed with the session in the request's first round trip
(:mod:`.pagestore`).  What that leaves to read is read together in a second:

- the breadcrumb, when the cached chain of parents does not reach the root:
  the folder index (``d:``) in one row read, whatever the depth;
- the entries, a page at a time: ``get_row`` from a name on, with a limit,
  in name order -- the store's column order -- so a folder of 10,000 files
  costs a page's read, not 10,000 (sort "name", either direction).  The other
  sort orders (size, date) need every entry and read the whole folder;
- the subfolders, listed before the files on the first page: from the folder
  index too.

Each is kept per folder under the header version (:mod:`.cache`), so an
unchanged folder costs one round trip: the confirmation.  A cold worker reads
everything in the second round trip, all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from shards.model import drive, quota
from shards.model.drive import ROOT
from shards.model.drive.records import item_from_index, root_item

from .cache import FIRST_PAGE, LISTING, SUBFOLDERS
from .pagestore import Key, together

if TYPE_CHECKING:
    from raftkv.interface import Cell

    from .cache import ListingCache
    from .pagestore import PageStore

PAGE = 50  # entries per page of a folder in name order


@dataclass(frozen=True)
class FolderView:
    """One page of a folder, as the template shows it."""

    crumbs: list[drive.Item]
    items: list[drive.Item]     # subfolders (first page) then files, in the page's order
    used: int                   # bytes of the quota in use
    after: str | None           # the next page starts after this name (None: last page)
    before: str | None          # the previous page ends before this name (None: first page)
    restart: bool = False       # a "previous" page that reached the start: show the first
    # The folder header's version, confirmed in this request, when everything above
    # came from what this worker kept at that version (None otherwise): what is made
    # of the page may be kept under it too (portal.drive's rows).
    version: int | None = None


def breadcrumb_keys(store: PageStore, user: str, folder_id: str) -> list[Key]:
    """The folder index cells of the path to the root, as far as the cache knows it."""
    row, keys, current = drive.drive_row(user), [], folder_id
    for _ in range(drive.MAX_DEPTH + 1):
        if current == ROOT:
            break
        key = (row, drive.index_col(drive.FOLDER, current))
        keys.append(key)
        cell = store.cache.peek(key)
        current = _parent(cell) if cell is not None else ROOT
    return keys


def page_keys(store: PageStore, user: str, folder_id: str) -> list[Key]:
    """Every cell a folder page confirms: the quota (use and limit), the header, the breadcrumb."""
    row = drive.drive_row(user)
    return [(row, drive.USAGE_COL), quota.limit_key(user), (row, drive.header_col(folder_id)),
            *breadcrumb_keys(store, user, folder_id)]


def _parent(cell: Cell) -> str:
    try:
        record = msgpack.unpackb(cell.value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return ROOT
    parent = record.get("p") if isinstance(record, dict) else None
    return parent if isinstance(parent, str) and parent else ROOT


def _path_from(store: PageStore, user: str, folder_id: str) -> list[drive.Item] | None:
    """The breadcrumb from confirmed cells, or None if they do not make one."""
    row, current = drive.drive_row(user), folder_id
    path: list[drive.Item] = []
    while current != ROOT:
        key = (row, drive.index_col(drive.FOLDER, current))
        cell = store.found.get(key)
        if key not in store.found or cell is None or len(path) > drive.MAX_DEPTH:
            return None
        item = item_from_index(drive.FOLDER, current, cell)
        if item is None:
            return None
        path.append(item)
        current = item.parent or ROOT
    path.append(root_item())
    path.reverse()
    return path


def _name_key(item: drive.Item) -> tuple[str, str]:
    return item.name.casefold(), item.name


def read_folder(store: PageStore, listings: ListingCache, user: str, folder_id: str, *,
                sort: str, descending: bool, after: str = "", before: str = "") -> FolderView:
    """The page of ``folder_id`` asked for (see the module); NoSuchItem if there is no
    such folder.  ``after``/``before``: names from the previous page's links."""
    row = drive.drive_row(user)
    keys = page_keys(store, user, folder_id)
    header_key = (row, drive.header_col(folder_id))
    warm = all(key in store.found for key in keys)
    by_name = sort == "name"
    first = not after and not before
    path = _path_from(store, user, folder_id) if warm else None
    version = _version(store.found.get(header_key)) if warm else None

    # What the confirmed cells leave to read (cold: everything), sent together.
    subfolders = (listings.get(SUBFOLDERS, user, folder_id, version)
                  if version is not None and by_name and first else None)
    page = (listings.get(FIRST_PAGE, user, folder_id, version)
            if version is not None and by_name and first and not descending else None)
    listing = (listings.get(LISTING, user, folder_id, version)
               if version is not None and not by_name else None)
    want_index = path is None or (by_name and first and subfolders is None)
    want_page = by_name and page is None
    want_listing = not by_name and listing is None
    reverse = descending != bool(before)  # a "previous" page reads towards the start
    calls: list[Callable[[], Any]] = []
    if not warm:
        calls.append(lambda: store.confirm(keys))
    if want_index:
        calls.append(lambda: store.get_row(row, drive.FOLDER_INDEX))
    if want_page:
        calls.append(lambda: drive.entries_page(store, user, folder_id, after=after or before,
                                                reverse=reverse, limit=PAGE))
    if want_listing:
        calls.append(lambda: drive.list_folder(store, user, folder_id))
    results = iter(together(*calls)) if calls else iter(())
    if not warm:
        next(results)
    index: dict[str, Cell] | None = next(results) if want_index else None

    if index is not None:
        folders = drive.folders_from(index)
        path = drive.path_in(folders, folder_id)
        if path is None:
            raise drive.NoSuchItem("There is no such folder in your drive.")
        for item in path[1:]:  # the breadcrumb's cells, for the next visit's confirmation
            key = (row, drive.index_col(drive.FOLDER, item.id))
            store.remember(key, index[key[1]])
        if by_name and first:
            subfolders = tuple(sorted((f for f in folders.values() if f.parent == folder_id
                                       and f.id != ROOT), key=_name_key))
            if version is not None:  # read after the header was confirmed (warm)
                listings.put(SUBFOLDERS, user, folder_id, version, subfolders,
                             cost=len(subfolders))
    if path is None:  # the confirmed cells say the folder is gone
        raise drive.NoSuchItem("There is no such folder in your drive.")
    used = drive.usage_of(store.found.get((row, drive.USAGE_COL)))
    if not by_name:
        if want_listing:
            listing = next(results)
            listings.put(LISTING, user, folder_id, listing.version, listing,
                         cost=len(listing.items))
        assert listing is not None
        return FolderView(path, list(listing.items), used, None, None,
                          version=version if not want_listing else None)

    if want_page:
        page_version, entries, more = next(results)
        if page_version is not None:  # read with its header: true at that version
            listings.put(FIRST_PAGE, user, folder_id, page_version, (tuple(entries), more),
                         cost=len(entries))
    else:
        assert page is not None
        entries, more = list(page[0]), page[1]
    if before:
        entries.reverse()
        if not more:
            return FolderView(path, [], used, None, None, restart=True)
    files = [item for item in entries if not item.is_folder]
    shown = list(reversed(subfolders)) if descending and subfolders else list(subfolders or ())
    return FolderView(
        path, shown + files, used,
        after=entries[-1].name if entries and (more or before) else None,
        before=entries[0].name if entries and not first else None,
        version=version if not (want_index or want_page) else None)


def _version(cell: Cell | None) -> int:
    return 0 if cell is None else cell.version

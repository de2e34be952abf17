"""Finding files and folders by name across a whole drive.

Every name of a user is in the drive row's index cells (``i:`` files, ``d:``
folders), so a search is a scan of those cells -- no separate index to keep in
step with renames and moves.  The scan is bounded: at most :data:`SCAN_LIMIT`
index cells, read :data:`PAGE` at a time (a page is about 300 KB, well under a
store frame).  A drive with more items than that is searched in its first
:data:`SCAN_LIMIT` (in id order, which is random) and the answer says so; at
most :data:`RESULTS` matches are returned, and a query matching more is asked
to be refined.

A name matches when every word of the query is in it, ignoring case (so both
a substring and a word's beginning match); names that start with the query
come first, then those with a word starting with it, then the rest, each by
name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .reads import FOLDER_INDEX, folders_from, path_in
from .records import FILE, FOLDER, Item, drive_row, index_col, item_from_index

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

__all__ = ["PAGE", "RESULTS", "SCAN_LIMIT", "Found", "Match", "search"]

SCAN_LIMIT = 20_000   # index cells read per search (about 2 s of reads on the real store)
PAGE = 2_000          # cells per get_row
RESULTS = 100         # matches shown; more: "refine your search"
MAX_QUERY = 200       # characters of a query
_FILE_INDEX = index_col(FILE, "")
_WORD_START = re.compile(r"(?:^|[\s._\-()\[\]])(\w)", re.UNICODE)


@dataclass(frozen=True)
class Match:
    """A found item and the names of the folders from the root down to its parent."""

    item: Item
    path: tuple[str, ...]


@dataclass(frozen=True)
class Found:
    """What a search found."""

    matches: tuple[Match, ...]
    more: bool      # more than RESULTS matched: only the best RESULTS are here
    partial: bool   # the drive holds more than SCAN_LIMIT items: only those were searched


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _rank(name: str, query: str) -> int:
    if name.startswith(query):
        return 0
    starts = {m.start(1) for m in _WORD_START.finditer(name)}
    return 1 if any(name.startswith(query, i) for i in starts) else 2


def _scan(client: KeyValueStore, user: str, prefix: str, budget: int) -> tuple[dict[str, Cell], bool]:
    """Up to ``budget`` cells of the index starting ``prefix``; and whether more remain."""
    cells: dict[str, Cell] = {}
    after = ""
    while len(cells) < budget:
        want = min(PAGE, budget - len(cells))
        page = client.get_row(drive_row(user), prefix=prefix, after=after, limit=want)
        cells.update(page)
        if len(page) < want:
            return cells, False
        after = next(reversed(page))
    more = bool(client.get_row(drive_row(user), prefix=prefix, after=after, limit=1))
    return cells, more


def search(client: KeyValueStore, user: str, query: str, *, limit: int = RESULTS,
           scan: int = SCAN_LIMIT) -> Found:
    """Files and folders of ``user`` whose names hold every word of ``query``.

    An empty query finds nothing.
    """
    words = [_fold(w) for w in query[:MAX_QUERY].split()]
    if not words:
        return Found((), False, False)
    folder_cells, more_folders = _scan(client, user, FOLDER_INDEX, scan)
    file_cells, more_files = _scan(client, user, _FILE_INDEX, max(0, scan - len(folder_cells)))
    folders = folders_from(folder_cells)
    whole = " ".join(words)
    found: list[tuple[int, str, Item]] = []
    for kind, cells, skip in ((FOLDER, folder_cells, len(FOLDER_INDEX)),
                              (FILE, file_cells, len(_FILE_INDEX))):
        for column, cell in cells.items():
            item = folders.get(column[skip:]) if kind == FOLDER else item_from_index(
                FILE, column[skip:], cell)
            if item is None:
                continue
            name = _fold(item.name)
            if all(w in name for w in words):
                found.append((_rank(name, whole), name, item))
    found.sort(key=lambda f: (f[0], f[1], f[2].id))
    matches = []
    for _, _, item in found[:limit]:
        path = path_in(folders, item.parent)
        if path is None:
            continue  # below a folder deleted meanwhile (or beyond the scan)
        matches.append(Match(item, tuple(f.name for f in path[1:])))
    return Found(tuple(matches), len(found) > limit, more_folders or more_files)

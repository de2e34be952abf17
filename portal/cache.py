"""A worker's cache of what it read of folders, each used only while its folder's version holds.

Every change to a folder's entries -- create, rename, move in or out, delete --
writes the folder's header cell in the same ``mutate_row``, so the header's
version is the listing's version.  The page confirms the header with its other
cells in one round trip (:mod:`.pagestore`), and uses what is kept here only
if the version it was read at is the header's now: a listing changed by any
other frontend is noticed at once, never served stale.  Changes never start
from the cache: they condition on the versions of the cells they change (see
:mod:`shards.model.drive`), so a stale copy here could not overwrite anything.

What is kept, per (user, folder): the first page of entries in name order
(read with its header, in one ``get_row``), the folder's subfolders (from the
folder index, read after the header was confirmed, so they are at least as new
as the version they are kept under), and the whole listing that the other sort
orders need; and the rows of a page as rendered (portal.drive), kept with
everything else they show (the page's sort and cursors, the session's CSRF
token, the read-only state), used only for exactly those.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

FIRST_PAGE, SUBFOLDERS, LISTING = "page", "folders", "listing"
ROWS = "rows"  # a page's rendered rows, with what else they were rendered from (portal.drive)


class ListingCache:
    """Least recently used folder reads of this process, each kept under a header version."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, kind: str, user: str, folder_id: str, version: int) -> Any | None:
        """What was kept for the folder at ``version`` (the header's, confirmed), or None."""
        key = (kind, user, folder_id)
        with self._lock:
            kept = self._entries.get(key)
            if kept is None or kept[0] != version:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return kept[1]

    def put(self, kind: str, user: str, folder_id: str, version: int, value: Any) -> None:
        if not self.size:
            return
        key = (kind, user, folder_id)
        with self._lock:
            self._entries[key] = (version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

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

Bounded twice, like :mod:`.messageview`: in entries, and in a budget of what
they hold -- folder entries for the reads, characters for rendered rows --
since an entry's count says nothing of its size (zero-byte files cost no
quota, so a folder may list 100,000 of them).  An entry over a tenth of the
budget is served but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from shards.readonly import read_state

FIRST_PAGE, SUBFOLDERS, LISTING = "page", "folders", "listing"
ROWS = "rows"  # a page's rendered rows, with what else they were rendered from (portal.drive)
LISTING_ITEMS = 50_000          # folder entries a worker's listing cache holds in all
ROWS_CHARS = 16 * 1024 * 1024   # characters of rendered rows its rows cache holds in all


class VersionedCache:
    """Least recently used values of this process, each kept under the version of the
    cell it was made from, and bounded twice: in entries, and in a budget of what they
    hold (``cost``, in units the owner chooses).  A value over a tenth of the budget
    is not kept.  Used only at the version the store just confirmed."""

    def __init__(self, size: int, budget: int) -> None:
        self.size = size
        self.budget = budget
        self._entries: OrderedDict[tuple[str, ...], tuple[int, Any, int]] = OrderedDict()
        self._cost = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def kept_version(self, key: tuple[str, ...]) -> int:
        """The version a value is kept under for ``key`` (0: none)."""
        with self._lock:
            kept = self._entries.get(key)
            return kept[0] if kept is not None else 0

    def lookup(self, key: tuple[str, ...], version: int) -> Any | None:
        """The value kept for ``key`` at ``version``, or None."""
        with self._lock:
            kept = self._entries.get(key)
            if kept is None or kept[0] != version:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return kept[1]

    def keep(self, key: tuple[str, ...], version: int, value: Any, cost: int) -> None:
        """Keep ``value`` as ``key``'s at ``version``, replacing what was kept."""
        with self._lock:
            self._drop(key)
            if not self.size or cost > self.budget // 10:
                return
            self._entries[key] = (version, value, cost)
            self._cost += cost
            while len(self._entries) > self.size or self._cost > self.budget:
                self._drop(next(iter(self._entries)))

    def discard(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: tuple[str, ...]) -> None:
        kept = self._entries.pop(key, None)
        if kept is not None:
            self._cost -= kept[2]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def cost(self) -> int:
        """What the kept entries hold, in the budget's units."""
        with self._lock:
            return self._cost


class ListingCache(VersionedCache):
    """Folder reads of this process, each kept under the folder header's version."""

    def get(self, kind: str, user: str, folder_id: str, version: int) -> Any | None:
        """What was kept for the folder at ``version`` (the header's, confirmed), or None."""
        return self.lookup((kind, user, folder_id), version)

    def put(self, kind: str, user: str, folder_id: str, version: int, value: Any, *,
            cost: int) -> None:
        """Keep ``value`` as the folder's at ``version``; ``cost``: its size in the budget's
        units (entries, characters).  Over a tenth of the budget it is not kept.

        Nor is anything while the running request has read a group stale (read-only
        mode, :mod:`shards.readonly`): what it assembled may mix stale reads with a
        header version that, after recovery, would let it pass as current.
        """
        key = (kind, user, folder_id)
        state = read_state()
        if state is not None and state.stale_groups:
            self.discard(key)
            return
        self.keep(key, version, value, cost)

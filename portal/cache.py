"""A worker's cache of folder listings, each used only while its folder's version is unchanged.

Every change to a folder's entries -- create, rename, move in or out, delete --
writes the folder's header cell in the same ``mutate_row``, so the header's
version is the listing's version.  Serving a listing from the cache costs one
small read (the header) instead of the whole folder; a listing changed by any
other frontend is noticed at once, never served stale.  Changes never start
from the cache: they condition on the versions of the cells they change (see
:mod:`shards.model.drive`), so a stale copy here could not overwrite anything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from shards.model import drive

ONE_READ = 999  # entries that come with their header in a single get_row answer

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore


class ListingCache:
    """Least recently used folder listings of this process, validated by version."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], drive.Listing] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def listing(self, client: KeyValueStore, user: str, folder_id: str) -> drive.Listing:
        """The folder's entries: from the cache when its version still holds."""
        key = (user, folder_id)
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and drive.folder_version(client, user, folder_id) == cached.version:
            with self._lock:
                self.hits += 1
                if key in self._entries:
                    self._entries.move_to_end(key)
            return cached
        listing = drive.list_folder(client, user, folder_id)
        with self._lock:
            self.misses += 1
            # get_row answers up to 1000 cells at once; a longer listing came
            # in several reads, so its version may not describe all of it.
            if self.size and len(listing.items) < ONE_READ:
                self._entries[key] = listing
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return listing

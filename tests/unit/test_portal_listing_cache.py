"""What a worker keeps of folder listings and their rendered rows (portal.cache), in process.

Bounded by a budget of what the entries hold, not only by their count: a
folder of thousands of empty files (no quota spent) is served, not kept.  And
nothing read while part of the store answered only stale (read-only mode,
shards.readonly) is kept, since after recovery it would pass as current under
the header version it was read at.  The store is :class:`tests._memstore.MemClient`.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from portal.cache import LISTING, LISTING_ITEMS, ROWS_CHARS, ListingCache
from shards.model import accounts, drive
from shards.readonly import read_state

from .._memstore import MemClient
from .._portal import PASSWORD, file_names, logged_in

FILES = 40


class SometimesStale(MemClient):
    """A store whose reads, while :attr:`stale`, count as stale ones for the request
    (as :class:`shards.readonly.ReadOnlyFallback` marks a lost group's)."""

    stale = False

    def _apply(self, method: str, command: dict[str, Any], write: bool,
               touched: str | None = None) -> dict[str, Any]:
        state = read_state()
        if self.stale and not write and state is not None:
            state.stale_groups.add(1)
        return super()._apply(method, command, write, touched)


@pytest.fixture
def store() -> SometimesStale:
    store = SometimesStale()
    accounts.create_user(store, "bob", PASSWORD)
    for i in range(FILES):
        drive.store_file(store, "bob", drive.ROOT, f"f{i:03d}.txt", io.BytesIO(b""), quota=10)
    return store


def test_the_cache_keeps_within_its_budget_and_skips_an_entry_over_a_tenth():
    cache = ListingCache(512, 100)
    for i in range(20):
        cache.put(LISTING, "bob", f"d{i}", 1, f"listing {i}", cost=10)
    assert cache.cost <= 100 and len(cache) == 10  # the least recently used went
    assert cache.get(LISTING, "bob", "d19", 1) == "listing 19"
    assert cache.get(LISTING, "bob", "d0", 1) is None
    cache.put(LISTING, "bob", "d19", 2, "too big", cost=11)  # replaces the kept one: gone
    assert cache.get(LISTING, "bob", "d19", 2) is None
    assert cache.get(LISTING, "bob", "d19", 1) is None and cache.cost == 90
    # The defaults keep out the listing of 100,000 empty files and its rows.
    assert LISTING_ITEMS // 10 < 100_000 and ROWS_CHARS // 10 < 100_000 * 50


def test_a_huge_listing_is_served_but_neither_it_nor_its_rows_are_kept(app):
    # Budgets a tenth of which is below this folder's entries and rows.
    app.listings = ListingCache(512, 10 * (FILES - 1))
    app.rendered_rows = ListingCache(512, 10 * FILES * 50)  # rows are well over 50 characters
    http = logged_in(app, "bob")
    for _ in range(3):
        assert len(file_names(http.get("/drive?sort=size").text)) == FILES
    assert len(app.listings) == 0 and len(app.rendered_rows) == 0
    # A folder within budget is kept as before.
    app.listings = ListingCache(512, 10 * FILES)
    app.rendered_rows = ListingCache(512, ROWS_CHARS)
    for _ in range(3):
        assert len(file_names(http.get("/drive?sort=size").text)) == FILES
    assert len(app.listings) == 1 and len(app.rendered_rows) == 1


@pytest.mark.parametrize("sort", ["size", "name"])
def test_nothing_read_stale_is_kept(app, store, sort):
    http = logged_in(app, "bob")
    url = f"/drive?sort={sort}"
    for _ in range(3):  # current: the listing and (warm) its rows are kept
        http.get(url)
    assert len(app.listings) > 0 and len(app.rendered_rows) == 1
    app.listings = ListingCache(512, LISTING_ITEMS)
    app.rendered_rows = ListingCache(512, ROWS_CHARS)
    store.stale = True
    for _ in range(3):
        assert len(file_names(http.get(url).text)) == FILES
    assert len(app.listings) == 0 and len(app.rendered_rows) == 0
    store.stale = False  # recovered: kept again
    for _ in range(3):
        http.get(url)
    assert len(app.listings) > 0 and len(app.rendered_rows) == 1

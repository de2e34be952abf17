"""A drive folder of 10,000 files is shown a page at a time: no read returns more than a
page of it, the pages' links walk every name once in name order, forwards and back (the
portal on the in-memory store)."""

from __future__ import annotations

import html
import re
import time

from werkzeug.test import Client as HTTPClient

from portal.folders import PAGE
from shards.model import accounts, drive
from shards.model.drive.records import (
    FILE,
    Item,
    entry_col,
    entry_value,
    header_col,
    index_col,
    index_value,
    pack,
)

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in, unit_portal

FILES = 10_000
_LINK = re.compile(r'<a href="(\?[^"]*)" rel="(next|prev)">')
_NAME = re.compile(r'<a href="/drive/[0-9a-f]{24}">([^<]*)</a>')


class Sizes(MemClient):
    """Notes how many cells each get_row answered."""

    def __init__(self) -> None:
        super().__init__()
        self.row_sizes: list[int] = []

    def get_row(self, row: str, prefix: str = "", **kwargs):  # type: ignore[no-untyped-def]
        cells = super().get_row(row, prefix, **kwargs)
        self.row_sizes.append(len(cells))
        return cells


def _fill(store: MemClient, user: str, count: int) -> list[str]:
    """``count`` files in the root, written straight into the layout (as store_file would)."""
    now, names = time.time(), [f"file-{i:05d}.txt" for i in range(count)]
    for start in range(0, count, 500):
        mutations: list = [("put", header_col(drive.ROOT), pack({"modified": now}))]
        for name in names[start:start + 500]:
            item = Item(id=drive.new_id(), kind=FILE, name=name, parent=drive.ROOT, size=1,
                        created=now, modified=now)
            mutations += [("put", entry_col(drive.ROOT, name), entry_value(item)),
                          ("put", index_col(FILE, item.id), index_value(item))]
        store.mutate_row(drive.drive_row(user), [], mutations)
    return names


def _walk(http: HTTPClient, rel: str) -> tuple[list[str], list[str]]:
    """Follow the ``rel`` links from /drive; the names on every page, and the pages' URLs."""
    url, seen, urls = "/drive", [], []
    for _ in range(FILES // PAGE + 3):
        page = http.get(url)
        assert page.status_code == 200, page.text
        seen += [html.unescape(n) for n in _NAME.findall(page.text)]
        links = {r: html.unescape(href) for href, r in _LINK.findall(page.text)}
        if rel not in links:
            return seen, urls
        url = "/drive" + links[rel]
        urls.append(url)
    raise AssertionError("the links never ended")


def test_a_folder_of_ten_thousand_files_is_read_a_page_at_a_time() -> None:
    store = Sizes()
    accounts.create_user(store, "bob", PASSWORD)
    names = _fill(store, "bob", FILES)
    http = logged_in(unit_portal(store), "bob")
    store.row_sizes.clear()
    seen, urls = _walk(http, "next")
    assert seen == names, "every file once, in name order"
    assert len(urls) == FILES // PAGE - 1
    assert max(store.row_sizes) <= PAGE + 2, "no read took more than a page"
    # Back from the last page: "previous" links walk the same pages in reverse.
    last = http.get(urls[-1]).text
    assert _NAME.findall(last) and "rel=\"next\"" not in last
    prev = html.unescape(re.search(r'<a href="(\?[^"]*)" rel="prev">', last).group(1))
    shown = [html.unescape(n) for n in _NAME.findall(http.get("/drive" + prev).text)]
    assert shown == names[-2 * PAGE:-PAGE]


def test_descending_name_order_reads_backwards_a_page_at_a_time() -> None:
    store = Sizes()
    accounts.create_user(store, "bob", PASSWORD)
    names = _fill(store, "bob", 3 * PAGE + 7)
    http = logged_in(unit_portal(store), "bob")
    store.row_sizes.clear()
    first = http.get("/drive?sort=name&order=desc").text
    assert [html.unescape(n) for n in _NAME.findall(first)] == names[::-1][:PAGE]
    assert max(store.row_sizes) <= PAGE + 2

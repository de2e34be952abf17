"""A drive folder's rendered rows kept per worker (portal.drive's rows), in process.

Rows are rendered once for an unchanged folder and used again only for the
same page of the same folder version in the same session: a change made
elsewhere shows at once, and a session never gets rows (forms) rendered with
another session's CSRF token.  The store is :class:`tests._memstore.MemClient`.
"""

from __future__ import annotations

import io
import re

import pytest
from werkzeug.test import Client as HTTPClient

from portal.sessions import COOKIE, csrf_token
from shards.model import accounts, drive

from .._memstore import MemClient
from .._portal import PASSWORD, file_names, logged_in


@pytest.fixture
def store():
    store = MemClient()
    accounts.create_user(store, "bob", PASSWORD)
    for name in ("a.txt", "b.txt"):
        drive.store_file(store, "bob", drive.ROOT, name, io.BytesIO(b"x"), quota=10**9)
    return store


@pytest.fixture
def renders(app, monkeypatch):
    """Counts the renderings of the rows template."""
    count = [0]
    template = app.jinja.get_template("_drive_rows.html")
    real = template.render

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(template, "render", counting)
    return count


def _login(app) -> tuple[HTTPClient, str]:
    http = logged_in(app, "bob")
    return http, http.get_cookie(COOKIE).value


def test_an_unchanged_folder_renders_its_rows_once(app, renders):
    http, _ = _login(app)
    pages = [http.get("/drive").text for _ in range(3)]  # a worker's cold visits
    rendered = renders[0]
    pages += [http.get("/drive").text for _ in range(5)]
    assert file_names(pages[0]) == ["a.txt", "b.txt"]
    assert all(page == pages[0] for page in pages[1:])
    # The third visit found everything kept at the confirmed version and kept its rows.
    assert renders[0] == rendered


def test_a_change_elsewhere_shows_at_once(app, store):
    http, _ = _login(app)
    for _ in range(3):
        http.get("/drive")
    drive.store_file(store, "bob", drive.ROOT, "c.txt", io.BytesIO(b"y"), quota=10**9)
    for _ in range(4):  # the page read afresh, then kept again at the new version
        assert file_names(http.get("/drive").text) == ["a.txt", "b.txt", "c.txt"]


def test_each_session_gets_rows_with_its_own_csrf_token(app):
    first, first_sid = _login(app)
    second, second_sid = _login(app)
    for http, sid in ((first, first_sid), (second, second_sid), (first, first_sid),
                      (second, second_sid), (first, first_sid)):
        for _ in range(2):
            tokens = set(re.findall(r'name="csrf" value="([0-9a-f]+)"', http.get("/drive").text))
            assert tokens == {csrf_token(app.config.csrf_key, sid)}


def test_another_sort_or_page_is_rendered_afresh(app):
    http, _ = _login(app)
    for _ in range(3):
        http.get("/drive")
    for _ in range(4):  # its listing read, then kept: its rows kept under their own sort
        by_size = http.get("/drive?sort=size&order=desc").text
        assert file_names(by_size) == ["b.txt", "a.txt"]  # the same size: by name, descending
    for _ in range(4):
        assert file_names(http.get("/drive?sort=name&order=desc").text) == ["b.txt", "a.txt"]
        assert file_names(http.get("/drive").text) == ["a.txt", "b.txt"]

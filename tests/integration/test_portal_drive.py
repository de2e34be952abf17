"""The drive's pages against a real 3-replica store, through werkzeug's test client.

Folders, uploads and downloads, renames and moves, deletes with a question
first, the quota, version-validated listing caches shared by two frontends.
Hostile names, forged forms and malformed uploads: tests/hostile/.
"""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile

import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from shards.model import drive

from .._portal import (
    entries,
    file_ids,
    folder_page,
    logged_in,
    mkdir,
    new_folder,
    post,
    signed_up,
    upload,
)

pytestmark = pytest.mark.cluster

QUOTA = 12 * 1024 * 1024 + 512 * 1024


def make_app(kv_cluster, name: str, **settings):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend=name, background=False,
                          **{"quota": QUOTA, **settings})
    return create_app(config, client_factory=kv_cluster.client)


@pytest.fixture(scope="module")
def app(kv_cluster):
    portal = make_app(kv_cluster, "fe-drive")
    yield portal
    portal.close()


@pytest.fixture(scope="module")
def other_app(kv_cluster):
    """A second frontend: its own store client and its own listing cache."""
    portal = make_app(kv_cluster, "fe-drive-2")
    yield portal
    portal.close()


def names_in_order(http: HTTPClient, path: str) -> list[str]:
    page = http.get(path).text.split("<table", 1)[1]
    return re.findall(r'<a href="/drive/(?:d/)?[0-9a-f]{24}"[^>]*>([^<]*)</a>', page)


def test_nested_folders_breadcrumbs_sizes_and_sorting(app):
    http, _ = signed_up(app)
    docs = new_folder(http, "docs")
    work = new_folder(http, "work", docs)
    page = http.get(f"/drive/d/{work}").text
    crumbs = re.search(r'<nav class="crumbs".*?</nav>', page, re.S).group(0)
    assert re.findall(r'<(?:a href="[^"]+"|span class="here")>([^<]+)<', crumbs) == [
        "Drive", "docs", "work"]
    assert f'href="/drive/d/{docs}"' in crumbs and 'href="/drive"' in crumbs

    for name, size in (("b.bin", 3000), ("a.bin", 10), ("c.bin", 200_000)):
        assert upload(http, name, os.urandom(size), folder=work).status_code == 303
    new_folder(http, "zz-folder", work)
    base = f"/drive/d/{work}"
    assert names_in_order(http, base) == ["zz-folder", "a.bin", "b.bin", "c.bin"]
    assert names_in_order(http, base + "?sort=name&order=desc") == ["zz-folder", "c.bin",
                                                                     "b.bin", "a.bin"]
    assert names_in_order(http, base + "?sort=size") == ["zz-folder", "a.bin", "b.bin", "c.bin"]
    assert names_in_order(http, base + "?sort=size&order=desc")[1] == "c.bin"
    assert names_in_order(http, base + "?sort=date&order=desc")[1] == "c.bin"  # newest first
    listing = http.get(base).text
    assert "195 KB" in listing and "2.9 KB" in listing and "10 bytes" in listing
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", listing)
    assert "Using 198 KB of 13 MB" in listing


def test_ten_megabyte_text_and_binary_files_round_trip(app):
    http, _ = signed_up(app)
    text = ("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n"
                    for i in range(200_000))).encode()[:10 * 1024 * 1024 + 5]
    binary = os.urandom(512 * 1024 + 3)
    assert upload(http, "notes.txt", text, "text/plain").status_code == 303
    assert upload(http, "blob.dat", binary).status_code == 303
    ids = entries(http)
    for name, content, ctype in (("notes.txt", text, "text/plain"),
                                 ("blob.dat", binary, "application/octet-stream")):
        response = http.get(f"/drive/{ids[name]}")
        assert response.status_code == 200 and response.data == content
        assert response.headers["Content-Type"].startswith(ctype)
        assert response.headers["Content-Length"] == str(len(content))
        assert response.headers["Content-Disposition"] == (
            f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}")
        head = http.head(f"/drive/{ids[name]}")
        assert head.status_code == 200 and head.data == b""
        assert head.headers["Content-Length"] == str(len(content))
        assert head.headers["Content-Type"] == response.headers["Content-Type"]


def test_rename_and_move_change_names_only_never_the_bytes(app, kv_cluster):
    http, user = signed_up(app)
    inbox, archive = new_folder(http, "inbox"), new_folder(http, "archive")
    upload(http, "report.pdf", b"%PDF-1.4 pretend", "application/pdf", folder=inbox)
    [file_id] = file_ids(http, inbox)
    with kv_cluster.client() as client:
        before = client.get(drive.content_row(user, file_id), "data").version
        assert post(http, f"/drive/{file_id}/rename", {"name": "final.pdf"},
                    folder_page(inbox)).status_code == 303
        assert post(http, f"/drive/{file_id}/move", {"target": archive},
                    f"/drive/{file_id}/move").status_code == 303
        assert post(http, f"/drive/d/{inbox}/move", {"target": archive},
                    f"/drive/d/{inbox}/move").status_code == 303
        assert post(http, f"/drive/d/{inbox}/rename", {"name": "old-inbox"},
                    folder_page(archive)).status_code == 303
        # Same cell version: the bytes were never rewritten, let alone copied.
        assert client.get(drive.content_row(user, file_id), "data").version == before
    assert set(entries(http, archive)) == {"final.pdf", "old-inbox"}
    assert set(entries(http)) == {"archive"}
    assert http.get(f"/drive/{file_id}").data == b"%PDF-1.4 pretend"


def test_name_clashes_and_impossible_moves_are_refused_clearly(app):
    http, _ = signed_up(app)
    outer = new_folder(http, "outer")
    inner = new_folder(http, "inner", outer)
    upload(http, "a.txt", b"a")
    upload(http, "b.txt", b"b")
    ids = entries(http)
    clash = mkdir(http, "a.txt")
    assert clash.status_code == 409
    assert "There is already something named &#39;a.txt&#39; in this folder." in clash.text
    assert upload(http, "a.txt", b"again").status_code == 409
    assert post(http, f"/drive/{ids['b.txt']}/rename", {"name": "a.txt"}).status_code == 409
    assert post(http, f"/drive/d/{outer}/rename", {"name": "b.txt"}).status_code == 409
    into_child = post(http, f"/drive/d/{outer}/move", {"target": inner}, f"/drive/d/{outer}/move")
    assert into_child.status_code == 400 and "into itself" in into_child.text
    move_page = http.get(f"/drive/d/{outer}/move").text
    assert inner not in move_page and outer not in move_page  # not offered either
    assert http.get(f"/drive/{ids['a.txt']}").data == b"a"  # nothing was overwritten
    assert set(entries(http)) == {"outer", "a.txt", "b.txt"}


def test_a_non_empty_folder_asks_before_trashing_its_tree_and_empty_trash_frees_it(app,
                                                                                  kv_cluster):
    http, user = signed_up(app)
    top = new_folder(http, "top")
    sub = new_folder(http, "sub", top)
    upload(http, "x.bin", os.urandom(2000), folder=sub)
    upload(http, "y.bin", os.urandom(3000), folder=top)
    ids = {**entries(http, top), **entries(http, sub)}
    question = post(http, f"/drive/d/{top}/delete", {})
    assert question.status_code == 200 and "to Trash?" in question.text
    assert "1 file and 1 folder" in question.text
    assert "top" in entries(http)  # nothing deleted yet
    done = post(http, f"/drive/d/{top}/delete", {"confirm": "yes"})
    assert done.status_code == 303 and done.headers["Location"] == f"/drive?done=trashed&undo={top}"
    assert entries(http) == {}
    for path in (f"/drive/d/{top}", f"/drive/d/{sub}", f"/drive/{ids['x.bin']}",
                 f"/drive/{ids['y.bin']}"):  # in the Trash: reachable by no path
        assert http.get(path).status_code == 404
    with kv_cluster.client() as client:
        assert drive.usage(client, user) == 5000  # the Trash counts
    assert post(http, "/drive/trash/empty", {"confirm": "yes"}, "/drive/trash").status_code == 303
    with kv_cluster.client() as client:
        assert drive.usage(client, user) == 0
        assert client.get(drive.content_row(user, ids["x.bin"]), "data") is None
    empty = new_folder(http, "empty")
    asked = post(http, f"/drive/d/{empty}/delete", {})  # empty, and still asked
    assert asked.status_code == 200 and "This folder is empty." in asked.text
    assert post(http, f"/drive/d/{empty}/delete", {"confirm": "yes"}).status_code == 303
    assert entries(http) == {}


def test_another_users_ids_are_simply_not_found(app):
    alice, _ = signed_up(app)
    secret_folder = new_folder(alice, "private")
    upload(alice, "secret.txt", b"alice's secret", folder=secret_folder)
    [secret_file] = file_ids(alice, secret_folder)
    bob, _ = signed_up(app)
    bobs_folder = new_folder(bob, "mine")
    upload(bob, "mine.txt", b"bob's")
    [bobs_file] = file_ids(bob)
    for path in (f"/drive/{secret_file}", f"/drive/d/{secret_folder}",
                 f"/drive/d/{secret_folder}/zip", f"/drive/{secret_file}/move",
                 f"/drive/d/{secret_folder}/move"):
        assert bob.get(path).status_code == 404, path
        assert bob.head(path).status_code == 404, path
    for path, data in ((f"/drive/{secret_file}/rename", {"name": "x"}),
                       (f"/drive/{secret_file}/move", {"target": bobs_folder}),
                       (f"/drive/{secret_file}/delete", {}),
                       (f"/drive/d/{secret_folder}/rename", {"name": "x"}),
                       (f"/drive/d/{secret_folder}/delete", {"confirm": "yes"}),
                       (f"/drive/{bobs_file}/move", {"target": secret_folder}),
                       ("/drive/mkdir", {"name": "planted", "folder": secret_folder})):
        assert post(bob, path, data).status_code == 404, path
    assert upload(bob, "planted.txt", b"x", folder=secret_folder).status_code == 404
    assert set(entries(alice, secret_folder)) == {"secret.txt"}
    assert alice.get(f"/drive/{secret_file}").data == b"alice's secret"
    assert bob.get("/drive/not-an-id").status_code == 404
    assert bob.get("/drive/d/../../admin").status_code == 404


def test_an_upload_over_the_quota_is_refused(kv_cluster):
    portal = make_app(kv_cluster, "fe-quota", quota=100_000)
    try:
        http, _ = signed_up(portal)
        assert upload(http, "first.bin", os.urandom(60_000)).status_code == 303
        over = upload(http, "second.bin", os.urandom(50_000))
        assert over.status_code == 413
        assert "larger than what is left of your quota" in over.text or "does not fit" in over.text
        assert set(entries(http)) == {"first.bin"}
        page = http.get("/drive").text
        assert 'data-free="40000"' in page and "Using 59 KB of 98 KB" in page

        # A body announced bigger than the quota is refused before a byte of it is read.
        reads = []

        class Body(io.BytesIO):
            def read(self, size=-1) -> bytes:
                reads.append(size)
                return super().read(size)

            def readline(self, size=-1) -> bytes:
                reads.append(size)
                return super().readline(size)

        response = http.post(
            "/drive/upload", input_stream=Body(), content_type="multipart/form-data; boundary=x",
            environ_overrides={"CONTENT_LENGTH": str(50 * 1024 * 1024)})
        assert response.status_code == 413 and reads == []
        assert "larger than what is left of your quota (40,000 bytes)" in response.text
    finally:
        portal.close()


def test_a_folder_downloads_as_a_zip_streamed_without_a_length(app):
    http, _ = signed_up(app)
    top = new_folder(http, "photos")
    sub = new_folder(http, "2024", top)
    big = os.urandom(1_500_000)
    upload(http, "cat.jpg", big, "image/jpeg", folder=top)
    upload(http, "dog.txt", b"woof", "text/plain", folder=sub)
    response = http.get(f"/drive/d/{top}/zip")
    assert response.status_code == 200 and "Content-Length" not in response.headers
    assert response.headers["Content-Type"] == "application/zip"
    assert 'filename="photos.zip"' in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.namelist() == ["cat.jpg", "2024/dog.txt"]
    assert archive.read("cat.jpg") == big and archive.read("2024/dog.txt") == b"woof"
    assert http.head(f"/drive/d/{top}/zip").status_code == 200


def test_the_listing_cache_is_checked_against_the_folder_version(app, other_app):
    first, name = signed_up(app)
    second = logged_in(other_app, name)
    folder = new_folder(first, "shared")
    entries(first, folder), entries(second, folder)  # both caches hold the empty folder
    entries(first, folder)  # the subfolders too, read once the header was confirmed
    hits, misses = app.listings.hits, app.listings.misses
    assert entries(first, folder) == {}
    # Served from the cache (its first page and its subfolders): the version held.
    assert app.listings.hits == hits + 2 and app.listings.misses == misses
    upload(second, "new.txt", b"n", folder=folder)  # through the other frontend
    assert set(entries(first, folder)) == {"new.txt"}  # seen at once, never stale


def test_two_frontends_racing_in_one_folder_lose_nothing(app, other_app):
    first, name = signed_up(app)
    second = logged_in(other_app, name)
    folder = new_folder(first, "race")
    entries(first, folder), entries(second, folder)  # warm both caches
    errors: list[BaseException] = []

    def work(http: HTTPClient, tag: str) -> None:
        try:
            for i in range(6):
                assert mkdir(http, f"{tag}-dir-{i}", folder).status_code == 303
                assert upload(http, f"{tag}-{i}.txt", tag.encode(), folder=folder).status_code == 303
            for i in range(6):
                file_id = entries(http, folder)[f"{tag}-{i}.txt"]
                response = post(http, f"/drive/{file_id}/rename", {"name": f"{tag}-{i}-done.txt"},
                                folder_page(folder))
                assert response.status_code == 303
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(http, tag))
               for http, tag in ((first, "a"), (second, "b"), (logged_in(app, name), "c"),
                                 (logged_in(other_app, name), "d"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(90)
    assert not errors, errors
    expected = {f"{t}-dir-{i}" for t in "abcd" for i in range(6)} | {
        f"{t}-{i}-done.txt" for t in "abcd" for i in range(6)}
    assert set(entries(first, folder)) == expected
    assert set(entries(second, folder)) == expected


def test_head_works_on_every_page(app):
    http, _ = signed_up(app)
    folder = new_folder(http, "f")
    upload(http, "a.txt", b"abc", "text/plain")
    [file_id] = file_ids(http)
    pages = ["/", "/login", "/signup", "/drive", f"/drive/d/{folder}", f"/drive/{file_id}",
             f"/drive/{file_id}/move", f"/drive/d/{folder}/move", "/mail", "/password",
             "/static/style.css", "/static/drive.js", "/no/such/page"]
    for path in pages:
        with http.get(path) as got, http.head(path) as head:
            assert head.status_code == got.status_code, path
            assert head.data == b"", path
            assert head.headers.get("Content-Length") == got.headers.get("Content-Length"), path
            assert head.headers["Content-Type"] == got.headers["Content-Type"], path
    anonymous = HTTPClient(app)
    assert anonymous.head("/drive").status_code == 303
    assert anonymous.head("/healthz").status_code == 200


def test_only_our_script_runs_on_the_drive_page(app):
    http, _ = signed_up(app)
    drive_page = http.get("/drive")
    csp = drive_page.headers["Content-Security-Policy"]
    # The page script and the drive's own, each by its hash; not 'self'.
    assert "script-src 'sha256-" in csp and "connect-src 'self'" in csp
    assert "'self'" not in csp.split("script-src")[1].split(";")[0]
    assert "unsafe-inline" not in csp
    # Elsewhere only the page script runs, named by its hash (portal.pages): not 'self'.
    assert "script-src 'sha256-" in http.get("/").headers["Content-Security-Policy"]
    assert "'self'" not in http.get("/").headers["Content-Security-Policy"].split("script-src")[1]
    assert "<script>" not in drive_page.text  # no inline script at all
    with http.get("/static/drive.js") as script:
        assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
        assert b'upload.addEventListener("progress"' in script.data

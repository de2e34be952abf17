"""The drive's previews on the in-memory store: thumbnails made once and kept, the inline
URL's headers for every kind of file, its byte ranges, the viewer page, and the model's
conditioned write of a thumbnail (portal.previews, shards.model.drive.thumbs)."""

from __future__ import annotations

import io
import re

import pytest

from portal import previews, thumbjobs
from raftkv.errors import ReadOnly
from shards.model import accounts, drive

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in, unit_portal, upload

Image = pytest.importorskip("PIL.Image")
_ID = re.compile(r'href="/drive/([0-9a-f]{24})">([^<]*)</a>')


def _jpeg(width: int = 900, height: int = 600) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def portal():
    store = MemClient()
    accounts.create_user(store, "bob", PASSWORD)
    http = logged_in(unit_portal(store), "bob")
    return store, http


def _put(http, name: str, content: bytes, ctype: str = "application/octet-stream") -> str:
    assert upload(http, name, content, ctype).status_code == 303
    ids = {n: i for i, n in _ID.findall(http.get("/drive").text)}
    return ids[name]


@pytest.fixture
def runs(monkeypatch):
    """Counts the thumbnailer's runs (it still runs)."""
    made: list[int] = []
    real = thumbjobs.made_from

    def counted(chunks, **kwargs):
        made.append(1)
        return real(chunks, **kwargs)

    monkeypatch.setattr(thumbjobs, "made_from", counted)
    return made


def test_a_thumbnail_is_made_on_first_request_and_then_read(portal, runs):
    store, http = portal
    file_id = _put(http, "beach.jpg", _jpeg(), "image/jpeg")
    listing = http.get("/drive").text
    tag = re.search(rf'<img src="(/drive/{file_id}/thumb\?v=[^"]+)"[^>]*>', listing)
    assert tag and 'width="48" height="48"' in tag.group(0) and 'alt=""' in tag.group(0)
    first = http.get(tag.group(1).replace("&amp;", "&"))
    assert first.status_code == 200 and first.mimetype == "image/webp"
    assert "sandbox" in first.headers["Content-Security-Policy"]
    assert Image.open(io.BytesIO(first.data)).size == (256, 171)
    cell = store.get(drive.content_row("bob", file_id), drive.THUMB_COL)
    again = http.get(f"/drive/{file_id}/thumb")
    assert again.data == first.data and len(runs) == 1
    assert store.get(drive.content_row("bob", file_id), drive.THUMB_COL) == cell
    view = http.get(f"/drive/{file_id}/view").text  # the image keeps its room on the page
    assert f'src="/drive/{file_id}/inline"' in view and 'width="900" height="600"' in view


def test_a_hostile_or_false_image_gets_the_icon_once(portal, runs):
    store, http = portal
    fake = _put(http, "cat.png", b"<html><script>alert(1)</script>", "image/png")
    shot = http.get(f"/drive/{fake}/thumb")
    assert shot.status_code == 200 and shot.mimetype == "image/svg+xml"
    assert shot.data == previews.ICON
    http.get(f"/drive/{fake}/thumb")
    assert len(runs) == 1, "a failure is remembered, not decoded again"
    kept = drive.file_and_thumb(store, "bob", fake)[1]
    assert kept is not None and not kept.ok and "cannot be read" in kept.why


def test_files_without_thumbnails_get_none_in_the_listing(portal, runs):
    _, http = portal
    _put(http, "notes.txt", b"hello", "text/plain")
    _put(http, "drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")
    assert "/thumb" not in http.get("/drive").text and not runs


KINDS = [  # name, declared type, content, the Content-Type served inline (None: not inline)
    ("photo.jpg", "image/jpeg", _jpeg(40, 30), "image/jpeg"),
    ("scan.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf"),
    ("song.mp3", "audio/mpeg", b"ID3" + bytes(64), "audio/mpeg"),
    ("clip.webm", "video/webm", bytes(64), "video/webm"),
    ("clip.mp4", "application/octet-stream", bytes(64), "video/mp4"),  # from the name
    ("evil.txt", "text/plain", b"<script>alert(1)</script>", "text/plain; charset=utf-8"),
    ("evil.html", "text/html", b"<script>alert(1)</script>", "text/plain; charset=utf-8"),
    ("data.json", "application/json", b"{}", "text/plain; charset=utf-8"),
    ("evil.svg", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
    ("page.xhtml", "application/xhtml+xml", b"<html/>", None),
    ("tool.exe", "application/octet-stream", b"MZ", None),
]


@pytest.mark.parametrize(("name", "declared", "content", "served"), KINDS)
def test_inline_headers_for_every_kind(portal, name, declared, content, served):
    _, http = portal
    file_id = _put(http, name, content, declared)
    answer = http.get(f"/drive/{file_id}/inline")
    view = http.get(f"/drive/{file_id}/view")
    assert view.status_code == 200 and "frame-src 'self'" in view.headers["Content-Security-Policy"]
    if served is None:
        assert answer.status_code == 404
        assert "cannot be shown in the browser" in view.text and "/inline" not in view.text
        return
    assert answer.status_code == 200 and answer.data == content
    headers = answer.headers
    assert headers["Content-Type"] == served
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("sandbox;") and "allow-" not in policy and "script" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Content-Disposition"].startswith("inline; filename=")
    assert headers["Accept-Ranges"] == "bytes"


def test_ranges_on_the_inline_url(portal):
    _, http = portal
    content = bytes(range(256)) * 400  # 100 KiB: a blob in the store
    file_id = _put(http, "movie.mp4", content, "video/mp4")
    url = f"/drive/{file_id}/inline"
    etag = http.get(url).headers["ETag"]
    for asked, start, stop in (("bytes=10-19", 10, 20), ("bytes=-5", len(content) - 5,
                                                          len(content)),
                               ("bytes=100000-", 100000, len(content)),
                               ("bytes=0-999999", 0, len(content))):
        part = http.get(url, headers={"Range": asked})
        assert part.status_code == 206, asked
        assert part.data == content[start:stop], asked
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(content)}"
    assert http.get(url, headers={"Range": "bytes=999999-"}).status_code == 416
    assert http.get(url, headers={"Range": "bytes=0-1,5-6"}).status_code == 200
    assert http.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'}).status_code == 200
    same = http.get(url, headers={"Range": "bytes=0-1", "If-Range": etag})
    assert same.status_code == 206 and same.data == content[:2]
    head = http.head(url, headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["Content-Length"] == "10"


def test_another_users_file_is_not_found(portal):
    store, http = portal
    file_id = _put(http, "beach.jpg", _jpeg(), "image/jpeg")
    accounts.create_user(store, "eve", PASSWORD)
    eve = logged_in(unit_portal(store), "eve")
    for what in ("view", "inline", "thumb"):
        assert eve.get(f"/drive/{file_id}/{what}").status_code == 404


def test_two_makers_racing_store_one_thumbnail():
    store = MemClient()
    accounts.create_user(store, "bob", PASSWORD)
    item = drive.store_file(store, "bob", drive.ROOT, "a.jpg", io.BytesIO(b"x"), quota=1 << 20)
    first = drive.Thumb(size=item.size, modified=item.modified, data=b"one", width=1, height=1)
    second = drive.Thumb(size=item.size, modified=item.modified, data=b"two", width=1, height=1)
    kept = drive.save_thumb(store, "bob", item.id, first, 0)
    lost = drive.save_thumb(store, "bob", item.id, second, 0)  # both read "absent"
    assert kept.version and lost == kept and lost.data == b"one"
    stale = drive.Thumb(size=item.size + 1, modified=item.modified, data=b"three")
    assert drive.save_thumb(store, "bob", item.id, stale, 0).version == 0  # not stored
    newer = drive.save_thumb(store, "bob", item.id, stale, kept.version)  # replaces the old
    assert newer.version > kept.version and not newer.fits(item)


def test_a_broken_thumbnailer_is_not_held_against_the_file(portal, monkeypatch, tmp_path):
    store, http = portal
    file_id = _put(http, "beach.jpg", _jpeg(), "image/jpeg")
    failing = tmp_path / "failing.py"
    failing.write_text("raise SystemExit(3)\n")  # as Pillow missing would end it
    monkeypatch.setattr(thumbjobs, "SCRIPT", str(failing))
    icon = http.get(f"/drive/{file_id}/thumb")
    assert icon.mimetype == "image/svg+xml" and icon.headers["Cache-Control"] == "no-store"
    assert store.get(drive.content_row("bob", file_id), drive.THUMB_COL) is None
    monkeypatch.setattr(thumbjobs.sys, "executable", str(tmp_path / "no-such-python"))
    unstartable = http.get(f"/drive/{file_id}/thumb")
    assert unstartable.status_code == 200 and unstartable.headers["Cache-Control"] == "no-store"
    monkeypatch.undo()
    assert http.get(f"/drive/{file_id}/thumb").mimetype == "image/webp"  # fixed: made now


@pytest.mark.parametrize("asked", ["bytes=abc", "bytes=5-2", "lines=0-4", "bytes=" + "1" * 5000,
                                   "bytes=0-1," * 200, "bytes=\x00-\x01"])
def test_a_malformed_range_gets_the_whole_file(portal, asked):
    _, http = portal
    file_id = _put(http, "song.mp3", b"0123456789", "audio/mpeg")
    answer = http.get(f"/drive/{file_id}/inline", headers={"Range": asked})
    assert answer.status_code in (200, 416) and (answer.status_code == 416 or
                                                 answer.data == b"0123456789")


class _RefusingThumbs(MemClient):
    """A store whose user's group refuses writes of thumbnails (read-only mode)."""

    refuse = False

    def mutate_row(self, row, conditions, mutations, **kwargs):  # type: ignore[no-untyped-def]
        if self.refuse and any(m[1] == drive.THUMB_COL for m in mutations):
            raise ReadOnly("the group has lost its majority")
        return super().mutate_row(row, conditions, mutations, **kwargs)


def test_a_thumbnail_is_shown_but_not_kept_while_writes_are_refused(runs):
    store = _RefusingThumbs()
    accounts.create_user(store, "bob", PASSWORD)
    http = logged_in(unit_portal(store), "bob")
    file_id = _put(http, "beach.jpg", _jpeg(), "image/jpeg")
    store.refuse = True
    shown = http.get(f"/drive/{file_id}/thumb")
    assert shown.status_code == 200 and shown.mimetype == "image/webp"
    assert store.get(drive.content_row("bob", file_id), drive.THUMB_COL) is None
    store.refuse = False
    http.get(f"/drive/{file_id}/thumb")
    assert len(runs) == 2 and store.get(drive.content_row("bob", file_id), drive.THUMB_COL)


def test_an_overwritten_file_gets_a_new_thumbnail_and_its_new_bytes_inline(portal, runs):
    store, http = portal
    file_id = _put(http, "beach.jpg", _jpeg(900, 600), "image/jpeg")
    first = http.get(f"/drive/{file_id}/thumb").data
    newer = _jpeg(300, 600)
    content_id, size = drive.put_content(store, "bob", io.BytesIO(newer), size=len(newer),
                                         quota=1 << 30)
    drive.overwrite(store, "bob", file_id, drive.Content(content_id, size, "image/jpeg"),
                    quota=1 << 30)
    second = http.get(f"/drive/{file_id}/thumb").data
    assert second != first and Image.open(io.BytesIO(second)).size == (128, 256)
    assert len(runs) == 2
    assert http.get(f"/drive/{file_id}/inline").data == newer

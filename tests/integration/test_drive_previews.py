"""The drive's previews against a real 3-replica store, with two frontends (portal.previews).

A thumbnail is made once, by the first frontend asked, and read by the second; two
frontends racing to make the same one store one and both show that one; a bomb gets the
icon at once, and the failure is kept; the inline URL serves every kind with its headers,
and byte ranges that cross the store's 1 MiB chunks.  The browser's side (no script runs,
what Chromium shows): test_drive_previews_browser.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import time
import zlib

import pytest

from portal import thumbjobs
from shards.model import drive

from .._portal import signed_up, upload
from .test_portal_drive import make_app

Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.cluster
_ID = re.compile(r'href="/drive/([0-9a-f]{24})">([^<]*)</a>')


@pytest.fixture(scope="module")
def apps(kv_cluster):
    """Two frontends: each its own store client and caches."""
    first, second = make_app(kv_cluster, "fe-prev-1"), make_app(kv_cluster, "fe-prev-2")
    yield first, second
    first.close()
    second.close()


def _photo(width: int, height: int) -> bytes:
    out = io.BytesIO()
    noise = Image.effect_noise((width, height), 60).convert("RGB")
    Image.blend(Image.linear_gradient("L").resize((width, height)).convert("RGB"),
                noise, 0.3).save(out, "JPEG", quality=90)
    return out.getvalue()


def _put(http, name: str, content: bytes, ctype: str) -> str:
    assert upload(http, name, content, ctype).status_code == 303
    return {n: i for i, n in _ID.findall(http.get("/drive").text)}[name]


def _as(app, http):
    """The same signed-in browser, on another frontend (the session lives in the store)."""
    from werkzeug.test import Client
    other = Client(app)
    for cookie in http._cookies.values():
        other.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    return other


@pytest.fixture
def runs(monkeypatch):
    made: list[str] = []
    real = thumbjobs.made_from

    def counted(chunks, **kwargs):
        made.append(threading.current_thread().name)
        return real(chunks, **kwargs)

    monkeypatch.setattr(thumbjobs, "made_from", counted)
    return made


def test_a_thumbnail_is_made_once_and_read_by_the_other_frontend(apps, kv_cluster, runs):
    first, second = apps
    http, user = signed_up(first)
    file_id = _put(http, "photo.jpg", _photo(3000, 2000), "image/jpeg")
    made = http.get(f"/drive/{file_id}/thumb")
    assert made.status_code == 200 and made.mimetype == "image/webp"
    assert Image.open(io.BytesIO(made.data)).size == (256, 171)
    with kv_cluster.client() as client:
        cell = client.get(drive.content_row(user, file_id), drive.THUMB_COL)
    assert cell is not None and len(cell.value) < 16 * 1024  # inline, not a blob
    read = _as(second, http).get(f"/drive/{file_id}/thumb")
    assert read.data == made.data and len(runs) == 1
    with kv_cluster.client() as client:
        assert client.get(drive.content_row(user, file_id), drive.THUMB_COL) == cell


def test_two_frontends_racing_store_one_thumbnail(apps, kv_cluster, monkeypatch):
    first, second = apps
    http, user = signed_up(first)
    file_id = _put(http, "race.png", _photo(400, 300), "image/png")
    both_read = threading.Barrier(2, timeout=20)

    def made_from(chunks, **kwargs):  # each frontend makes a thumbnail of its own
        for _ in chunks:
            pass
        both_read.wait()  # both have read "no thumbnail" before either writes
        return {"ok": True, "w": 1, "h": 1, "t": "image/webp",
                "b": threading.current_thread().name.encode()}

    monkeypatch.setattr(thumbjobs, "made_from", made_from)
    answers: dict[str, bytes] = {}

    def view(name, app):
        answers[name] = _as(app, http).get(f"/drive/{file_id}/thumb").data

    threads = [threading.Thread(target=view, args=(n, a), name=n)
               for n, a in (("fe-one", first), ("fe-two", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with kv_cluster.client() as client:
        stored = drive.file_and_thumb(client, user, file_id)[1]
    assert stored is not None and stored.data in (b"fe-one", b"fe-two")
    assert answers == {"fe-one": stored.data, "fe-two": stored.data}, "the loser shows the winner's"


def _bomb() -> bytes:
    """A 300-byte PNG claiming 50,000 x 50,000 pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(4096))) + chunk(b"IEND", b""))


def test_a_bomb_gets_the_icon_at_once_and_is_not_decoded_again(apps, kv_cluster, runs):
    first, _ = apps
    http, user = signed_up(first)
    file_id = _put(http, "bomb.png", _bomb(), "image/png")
    began = time.monotonic()
    icon = http.get(f"/drive/{file_id}/thumb")
    assert icon.mimetype == "image/svg+xml" and time.monotonic() - began < 5
    http.get(f"/drive/{file_id}/thumb")
    assert len(runs) == 1
    with kv_cluster.client() as client:
        kept = drive.file_and_thumb(client, user, file_id)[1]
    assert kept is not None and not kept.ok and "pixels" in kept.why


KINDS = [("a.jpg", "image/jpeg", "image/jpeg"), ("a.pdf", "application/pdf", "application/pdf"),
         ("a.mp3", "audio/mpeg", "audio/mpeg"), ("a.webm", "video/webm", "video/webm"),
         ("a.txt", "text/plain", "text/plain; charset=utf-8"),
         ("a.html", "text/html", "text/plain; charset=utf-8"), ("a.svg", "image/svg+xml", None)]


def test_inline_headers_and_ranges_across_chunks(apps):
    first, second = apps
    http, _ = signed_up(first)
    content = bytes(range(256)) * (4096 + 700)  # 1.2 MiB: two chunks in the store
    for name, declared, served in KINDS:
        file_id = _put(http, name, content, declared)
        answer = http.get(f"/drive/{file_id}/inline", headers={"Range": "bytes=1048000-1049999"})
        if served is None:
            assert answer.status_code == 404, name
            continue
        assert answer.status_code == 206, name
        assert answer.data == content[1048000:1050000]  # across the first chunk's end
        assert answer.headers["Content-Type"] == served
        assert answer.headers["Content-Range"] == f"bytes 1048000-1049999/{len(content)}"
        assert answer.headers["Content-Security-Policy"].startswith("sandbox;")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    whole = _as(second, http).get(f"/drive/{file_id}/inline")  # the last, a.svg: refused
    assert whole.status_code == 404
    tail = http.get(f"/drive/{_put(http, 'b.webm', content, 'video/webm')}/inline",
                    headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.data == content[-100:]

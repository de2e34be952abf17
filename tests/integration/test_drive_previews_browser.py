"""The drive's previews in Chromium, on a real cloud (``raftcloud up``, gunicorn frontends).

No script from a user's file runs on our origin: HTML with a script named ``.txt`` and
``.html``, and an SVG with a script, viewed through the viewer page and opened straight
at their inline URL, raise no dialog, change nothing on our page, and the text frame's
document has an opaque origin.  What does show: the thumbnail in the listing (made by
the frontend's child process), an image, a sound with its length known (the media
element's range requests), a PDF in Chromium's viewer; and each viewer page fits the
screen and passes axe at both sizes (the walk of test_pages_layout has the rest).
"""

from __future__ import annotations

import io
import math
import os
import struct
import wave

import pytest

from .test_pages_layout import SIZES, _problems_of, _signup, _upload
from .test_portal_browser import artifacts, browser, cloud, row

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")
Image = pytest.importorskip("PIL.Image")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser", "cloud"]  # the fixtures, shared with test_portal_browser

# Each tries everything a script could: a dialog, our page's title, a request of its own.
SCRIPT = ("<script>alert('ran'); try { top.document.title = 'pwned' } catch (e) {}"
          " fetch('/drive?pwned=1'); document.title = 'pwned'</script>")
HOSTILE = {
    "script.txt": f"<!doctype html><html><body onload=\"alert('onload')\">{SCRIPT}</body></html>",
    "script.html": f"<!doctype html><html><body onload=\"alert('onload')\">{SCRIPT}</body></html>",
    "script.svg": ("<svg xmlns='http://www.w3.org/2000/svg' onload=\"alert('svg')\">"
                   f"{SCRIPT.replace('<script>', '<script><![CDATA[').replace('</script>', ']]></script>')}"
                   "<circle r='5'/></svg>"),
}


def _photo(path) -> None:
    Image.linear_gradient("L").resize((1200, 800)).convert("RGB").save(path, "JPEG")


def _tone(path, seconds: int = 2, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8)))
                                 for i in range(seconds * rate)))


def _pdf(path) -> None:
    page = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(page, "PDF")
    path.write_bytes(page.getvalue())


@pytest.fixture(scope="module")
def files(cloud, browser, tmp_path_factory):
    """A user with one of each kind: (their storage state, {name: file id})."""
    base, _ = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    _signup(page, f"pv{os.getpid()}")
    folder = tmp_path_factory.mktemp("previews")
    for name, text in HOSTILE.items():
        (folder / name).write_text(text)
    _photo(folder / "photo.jpg")
    _tone(folder / "tone.wav")
    _pdf(folder / "doc.pdf")
    page.goto("/drive")
    ids = {}
    for path in sorted(folder.iterdir()):
        _upload(page, path)
    for path in folder.iterdir():
        href = row(page, path.name).locator("td.name > a").get_attribute("href")
        ids[path.name] = href.rsplit("/", 1)[1]
    state = context.storage_state()
    context.close()
    return state, ids


@pytest.fixture
def page(cloud, browser, files):
    base, _ = cloud
    context = browser.new_context(base_url=base, storage_state=files[0])
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    yield page
    context.close()


def test_no_script_from_a_users_file_runs(page, files):
    _, ids = files
    for name in HOSTILE:
        file_id = ids[name]
        page.goto(f"/drive/{file_id}/view")
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)
        assert page.title() == f"{name} · raftcloud", name
        frames = [f for f in page.frames if f.url.endswith(f"/drive/{file_id}/inline")]
        if name == "script.svg":
            assert not frames and "cannot be shown in the browser" in page.content()
        else:
            (frame,) = frames
            # The text arrives as text, in a document with an origin of its own.
            assert "<script>" in frame.locator("body").inner_text()
            assert frame.evaluate("self.origin") == "null"
        # Straight at the bytes, in a tab of their own: still text, still nothing runs.
        answer = page.goto(f"/drive/{file_id}/inline")
        page.wait_for_timeout(300)
        if name == "script.svg":
            assert answer.status == 404
        else:
            assert answer.headers["content-type"] == "text/plain; charset=utf-8"
            assert page.evaluate("self.origin") == "null"
            assert page.title() != "pwned"
    assert page.dialogs == [], page.dialogs
    assert not [u for u in page.requested if "pwned" in u]


def test_the_thumbnail_image_sound_and_pdf_are_shown(page, files):
    _, ids = files
    page.goto("/drive")
    thumb = row(page, "photo.jpg").locator("span.thumb img")
    assert thumb.get_attribute("width") == "48" and thumb.get_attribute("height") == "48"
    playwright.expect(thumb).to_have_js_property("complete", True, timeout=20_000)
    assert thumb.evaluate("i => i.naturalWidth") == 256  # our WebP, not the icon (48)
    page.goto(f"/drive/{ids['photo.jpg']}/view")
    image = page.locator(".viewer img.shown")
    playwright.expect(image).to_have_js_property("complete", True)
    assert image.evaluate("i => i.naturalWidth") == 1200
    page.goto(f"/drive/{ids['tone.wav']}/view")
    duration = page.locator(".viewer audio").evaluate("""a => new Promise(done => {
        if (a.readyState >= 1) done(a.duration);
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1)); })""")
    assert abs(duration - 2) < 0.1
    page.goto(f"/drive/{ids['doc.pdf']}/view")
    page.wait_for_timeout(1500)
    assert any(f.url.startswith("chrome-extension://") for f in page.frames), "no PDF viewer"
    assert page.dialogs == []


@pytest.mark.parametrize("size", list(SIZES))
def test_the_viewer_pages_fit_the_screen_and_pass_axe(cloud, browser, files, size):
    base, _ = cloud
    state, ids = files
    context = browser.new_context(base_url=base, viewport=SIZES[size], storage_state=state)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    axe = axe_playwright.Axe()
    problems: list[str] = []
    try:
        for name in ("photo.jpg", "tone.wav", "doc.pdf", "script.txt", "script.svg"):
            page.goto(f"/drive/{ids[name]}/view")
            page.wait_for_load_state("load")
            problems += [f"{name}: {p}" for p in _problems_of(page, axe)]
            page.screenshot(path=str(artifacts() / f"drive-view-{name}-{size}.png"),
                            full_page=True)
        page.goto("/drive")
        problems += [f"listing: {p}" for p in _problems_of(page, axe)]
    finally:
        context.close()
    assert not problems, "\n".join(problems)
    assert not errors, errors

"""The drive page as people know it from Google Drive, in Chromium (static/drive.js).

One cloud (``raftcloud up``, as in test_portal_browser) and one Chromium.  Files
dropped on the page land in the folder shown, dropped on a folder's row in that
folder (the drop is a synthetic DragEvent carrying a DataTransfer built in the page);
several files go up each with its own bar, and the one cancelled leaves nothing
(the upload slowed down through the DevTools protocol); a name already taken asks
"Replace" or "Keep both", for drops and for the form without script; ticked rows move
and go together, deleting after a question; sizes read the same in the page script
as on the server.  The states the walk of test_pages_layout cannot reach by address
(uploads listed, a clash asked in the page, rows ticked) are checked the same way
here: no sideways scroll, axe clean, a screenshot each at both sizes.
"""

from __future__ import annotations

import os
import re

import pytest

from portal.sizes import human_size

from .test_pages_layout import SIZES, _problems_of, _signup
from .test_portal_browser import artifacts, browser, cloud, row, submit

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser", "cloud"]  # the fixtures, shared with test_portal_browser

# Builds the files in the page and drops them where the selector points (the page itself
# when it matches nothing): what a browser hands the page when files are dragged onto it.
DROP = """([selector, files]) => {
    const data = new DataTransfer();
    for (const [name, size, fill] of files) {
        data.items.add(new File([fill.repeat(size)], name, {type: "text/plain"}));
    }
    const target = document.querySelector(selector) || document.querySelector("main");
    const options = {bubbles: true, cancelable: true, dataTransfer: data};
    target.dispatchEvent(new DragEvent("dragenter", options));
    target.dispatchEvent(new DragEvent("dragover", options));
    return target.dispatchEvent(new DragEvent("drop", options));  // false: the page took it
}"""


def _drop(page, files: list[tuple[str, int, str]], selector: str = "main") -> None:
    assert page.evaluate(DROP, [selector, files]) is False, "the page ignored the drop"


def _notice(page) -> str:
    playwright.expect(page.locator("#notice")).not_to_be_empty(timeout=10_000)
    return page.locator("#notice").inner_text().strip()


def _names(page) -> set[str]:
    return set(page.locator("table.drive td.name > a").all_inner_texts())


def _content(page, name: str) -> bytes:
    href = row(page, name).locator("td.name > a").get_attribute("href")
    return page.request.get(href).body()


@pytest.fixture
def page(cloud, browser):
    base, _ = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _signup(page, f"dd{os.getpid()}{os.urandom(2).hex()}")
    page.goto("/drive")
    yield page
    context.close()
    assert not errors, errors


def test_files_dropped_on_the_page_or_a_folder_land_there(page):
    submit(page, 'form[action="/drive/mkdir"]', name="Inbox")
    with page.expect_navigation():
        _drop(page, [("one.txt", 10, "a"), ("two.txt", 20, "b")])
    assert _notice(page) == "Uploaded 2 files."
    assert _names(page) == {"Inbox", "one.txt", "two.txt"}
    with page.expect_navigation():
        _drop(page, [("three.txt", 30, "c")], 'tr[data-folder] td.size')  # onto Inbox's row
    assert _notice(page) == "Uploaded."
    assert _names(page) == {"Inbox", "one.txt", "two.txt"}
    page.click('td > a:text-is("Inbox")')
    assert _names(page) == {"three.txt"}
    assert _content(page, "three.txt") == b"c" * 30


def test_several_uploads_each_have_a_bar_and_a_cancel_that_leaves_nothing(page, tmp_path):
    sizes = {"small-1.bin": 200_000, "small-2.bin": 300_000, "big.bin": 3_000_000,
             "last.bin": 1_258_291}  # the fourth waits: three go at once
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    # About 1 MB/s up: the big file takes seconds, long enough to see its bar and cancel it.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20,
                                                  "downloadThroughput": -1,
                                                  "uploadThroughput": 1_000_000})
    page.set_input_files('#upload-form input[type="file"]', [str(tmp_path / n) for n in sizes])
    page.click("#upload-form button:text('Upload')")
    items = page.locator("#uploads li")
    playwright.expect(items).to_have_count(4)
    big = items.filter(has_text="big.bin")
    waiting = items.filter(has_text="last.bin")
    # The page script's sizes are the server's (portal/sizes.py).
    assert f"({human_size(1_258_291)})" in waiting.locator(".state").inner_text()
    assert human_size(1_258_291) == "1.2 MB"
    page.wait_for_function("""() => { const li = [...document.querySelectorAll('#uploads li')]
        .find(l => l.textContent.includes('big.bin'));
        const bar = li && li.querySelector('progress');
        if (!bar) return false;
        return bar.value > 0 && bar.value < bar.max; }""", timeout=20_000)
    assert re.search(r"of 2\.9 MB$", big.locator(".state").inner_text())
    assert items.locator("progress").count() == 4  # a bar each
    with page.expect_navigation(timeout=30_000):  # when the other three are in
        big.locator("button:text('Cancel')").click()
    assert _notice(page) == "Uploaded 3 files."
    assert _names(page) == {"small-1.bin", "small-2.bin", "last.bin"}
    # Nothing of the cancelled file counts: the quota line holds the three others.
    used = sum(v for k, v in sizes.items() if k != "big.bin")
    assert page.locator("p.quota").inner_text().startswith(f"Using {human_size(used)} of")
    assert f'value="{used}"' in page.locator("p.quota meter").evaluate("m => m.outerHTML")


def test_a_dropped_name_clash_asks_replace_or_keep_both(page):
    with page.expect_navigation():
        _drop(page, [("notes.txt", 5, "a")])
    # Keep both: the new one is "notes (1).txt"; the old one stays as it was.
    _drop(page, [("notes.txt", 7, "b")])
    asking = page.locator("#uploads li")
    playwright.expect(asking.locator(".state")).to_have_text("“notes.txt” is already there.")
    shots = artifacts()
    for size, viewport in SIZES.items():  # the question in the page, at both sizes
        page.set_viewport_size(viewport)
        problems = _problems_of(page, axe_playwright.Axe())
        page.screenshot(path=str(shots / f"drive-clash-asked-{size}.png"), full_page=True)
        assert not problems, problems
    with page.expect_navigation():
        asking.locator("button:text('Keep both')").click()
    assert _notice(page) == "Uploaded."
    assert _names(page) == {"notes.txt", "notes (1).txt"}
    assert _content(page, "notes.txt") == b"aaaaa" and _content(page, "notes (1).txt") == b"b" * 7
    # Replace: the one there now holds the new bytes, and there is still one of it.
    _drop(page, [("notes.txt", 9, "c")])
    with page.expect_navigation():
        page.locator("#uploads li button:text('Replace')").click()
    assert _names(page) == {"notes.txt", "notes (1).txt"}
    assert _content(page, "notes.txt") == b"c" * 9
    # Cancel: nothing changes.
    _drop(page, [("notes.txt", 3, "d")])
    page.locator("#uploads li button:text('Cancel')").click()
    playwright.expect(page.locator("#uploads li .state")).to_have_text(
        "Cancelled; nothing was stored.")
    page.reload()
    assert _content(page, "notes.txt") == b"c" * 9


def test_the_form_without_script_asks_too(cloud, browser, tmp_path):
    base, _ = cloud
    context = browser.new_context(base_url=base, java_script_enabled=False)
    page = context.new_page()
    _signup(page, f"ns{os.getpid()}")
    page.goto("/drive")
    source = tmp_path / "plan.txt"
    for content, choice in ((b"first", None), (b"second", "Keep both"), (b"third", "Replace")):
        source.write_bytes(content)
        page.set_input_files('#upload-form input[type="file"]', str(source))
        page.click("#upload-form button:text('Upload')")
        page.wait_for_load_state()
        if choice is None:
            continue
        assert page.locator("h1").inner_text() == "“plan.txt” is already here"
        page.check(f"label:has-text('{choice}') >> input")
        page.click("button:text('Continue')")
        page.wait_for_load_state()
        assert page.locator("#notice").inner_text() == "Uploaded."
    assert _names(page) == {"plan.txt", "plan (1).txt"}
    assert _content(page, "plan.txt") == b"third" and _content(page, "plan (1).txt") == b"second"
    context.close()


def test_ticked_rows_move_and_go_together(page):
    submit(page, 'form[action="/drive/mkdir"]', name="Archive")
    with page.expect_navigation():
        _drop(page, [("a.txt", 1, "a"), ("b.txt", 1, "b"), ("c.txt", 12, "c")])
    assert row(page, "c.txt").locator("td.size").inner_text() == "12 bytes"
    row(page, "a.txt").locator("input.pick").check()
    row(page, "b.txt").locator("input.pick").check()
    assert page.locator("#selected-count").inner_text() == "2 selected"
    shots = artifacts()
    for size, viewport in SIZES.items():  # rows ticked, at both sizes
        page.set_viewport_size(viewport)
        problems = _problems_of(page, axe_playwright.Axe())
        page.screenshot(path=str(shots / f"drive-ticked-{size}.png"), full_page=True)
        assert not problems, problems
    page.set_viewport_size(SIZES["1280x800"])
    page.click("button:text('Move selected')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Move 2 items"
    page.check("label.target:has-text('Drive / Archive') >> input")
    page.click("button:text('Move here')")
    page.wait_for_load_state()
    assert _notice(page) == "Moved 2 items."
    assert _names(page) == {"a.txt", "b.txt"}
    # Select all, then Delete: the question lists what goes; only the answer deletes.
    page.check("#select-all")
    assert page.locator("#selected-count").inner_text() == "2 selected"
    page.click("button:text('Delete selected')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Move 2 items to Trash?"
    assert page.locator("ul.going li").all_inner_texts() == ["“a.txt”, 1 byte", "“b.txt”, 1 byte"]
    page.click("button:text('Move 2 items to Trash')")
    page.wait_for_load_state()
    assert _notice(page) == "Moved 2 items to Trash."
    assert _names(page) == set()
    page.goto("/drive")
    assert _names(page) == {"Archive", "c.txt"}

"""The webmail's folders in Chromium: star a row, move ticked rows to a folder of one's
own, delete into Trash and undo from the notice, and a draft saved by static/mail.js
while the user writes (and replaced, not piled up, as the text changes; gone once sent).

One cloud (``raftcloud up``, as in test_portal_browser) and one Chromium.  The states
the walk of test_pages_layout cannot reach by address (rows ticked, the undo offered)
are checked the same way: no sideways scroll, axe clean, at both sizes.
"""

from __future__ import annotations

import os

import pytest

from .test_pages_layout import SIZES, _problems_of, _send, _signup
from .test_portal_browser import browser, cloud, submit

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser", "cloud"]  # the fixtures, shared with test_portal_browser


def _notice(page) -> str:
    playwright.expect(page.locator("#notice")).not_to_be_empty(timeout=10_000)
    return page.locator("#notice").inner_text().strip()


def _row(page, subject: str):
    return page.locator("table.mail tbody tr", has=page.locator(f'td.subject a:text-is("{subject}")'))


def _subjects(page) -> list[str]:
    return page.locator("table.mail td.subject a").all_inner_texts()


@pytest.fixture
def page(cloud, browser):
    base, _ = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _signup(page, f"wm{os.getpid()}{os.urandom(2).hex()}")
    yield page
    context.close()
    assert not errors, errors


def test_star_move_and_undo_a_delete(page):
    address = page.locator("header .who").inner_text()
    for subject in ("Keep this one", "Throw this away"):
        _send(page, address, subject, "some text")
    page.goto("/mail")
    _row(page, "Keep this one").locator("button.star").click()
    page.wait_for_load_state()
    assert _notice(page) == "Starred."
    star = _row(page, "Keep this one").locator("button.star")
    assert star.get_attribute("aria-pressed") == "true" and star.inner_text() == "★"

    page.click("details.new-folder summary")
    submit(page, 'form[action="/mail/folders/new"]', name="Saved")
    assert _notice(page) == "Folder created."
    saved = page.url.split("/mail/f/")[1].split("?")[0]
    page.goto("/mail")
    _row(page, "Keep this one").locator("input.pick").check()
    problems = {}
    for size, viewport in SIZES.items():  # the selection bar with a row ticked
        page.set_viewport_size(viewport)
        axe = axe_playwright.Axe()
        problems[size] = _problems_of(page, axe)
    assert not any(problems.values()), problems
    page.select_option("form.mail-bulk select[name=to]", saved)
    page.click("form.mail-bulk button:text-is('Move')")
    page.wait_for_load_state()
    assert _notice(page) == "The message has been moved."
    assert "Keep this one" not in _subjects(page)
    page.goto(f"/mail/f/{saved}")
    assert _subjects(page) == ["Keep this one"]

    page.goto("/mail")
    page.click('td.subject a:text-is("Throw this away")')
    page.click("nav.toolbar button:text-is('Delete')")
    page.wait_for_load_state()
    assert _notice(page) == "Moved to Trash."
    assert "Throw this away" not in _subjects(page)
    assert "undo=" not in page.url  # offered once: a reload does not offer it again
    for size, viewport in SIZES.items():  # the notice with its undo
        page.set_viewport_size(viewport)
        found = _problems_of(page, axe_playwright.Axe())
        assert not found, (size, found)
    page.click("form.undo button:text-is('Undo')")
    page.wait_for_load_state()
    assert _notice(page) == "The message is back where it was."
    assert "Throw this away" in _subjects(page)
    page.goto("/mail/f/4")
    assert _subjects(page) == []


def test_a_draft_saves_itself_while_writing_and_goes_once_sent(page):
    address = page.locator("header .who").inner_text()
    page.goto("/mail/compose")
    form = page.locator("form.compose")
    form.locator('[name="to"]').fill(address)
    form.locator('[name="subject"]').fill("Thinking aloud")
    form.locator('[name="body"]').fill("The first half of a thought")
    status = page.locator("#draft-status")
    playwright.expect(status).to_contain_text("Draft saved at", timeout=25_000)
    first = form.locator('[name="draft"]').get_attribute("value")
    assert first
    form.locator('[name="body"]').fill("The first half of a thought, and the second half")
    page.wait_for_function(
        "old => document.querySelector('input[name=draft]').value !== old", arg=first,
        timeout=25_000)
    second = form.locator('[name="draft"]').get_attribute("value")

    other = page.context.new_page()  # the Drafts folder meanwhile: one draft, the latest
    other.goto("/mail/f/3")
    assert _subjects(other) == ["Thinking aloud"]
    assert other.locator("td.subject a").get_attribute("href") == f"/mail/compose?draft={second}"
    other.click('td.subject a:text-is("Thinking aloud")')
    assert "and the second half" in other.locator('[name="body"]').input_value()
    other.close()

    form.locator("button:text-is('Send')").click()
    page.wait_for_load_state()
    assert _notice(page) == "Your message has been sent."
    page.goto("/mail/f/3")
    assert _subjects(page) == []
    page.goto("/mail")
    assert "Thinking aloud" in _subjects(page)

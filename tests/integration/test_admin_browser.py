"""The admin console in Chromium on a cloud with metrics on: the live charts, the raw data
across shards, and the questions and the one-time password at both sizes.

One ``raftcloud up`` whose cluster file has a ``[metrics]`` table, so every process
serves ``/metrics`` and the charts have something to draw; the browser is the one
test_portal_browser's fixture starts (on this module's cloud).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._procs import free_port
from ..cluster import launched
from .test_pages_layout import SIZES, _problems_of
from .test_portal_browser import CHROMIUM, PASSWORD, artifacts, browser, submit

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``raftcloud up`` with metrics on: (frontend URL, data directory)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    frontend = f"127.0.0.1:{free_port()}"
    extra = f"""
[[frontend]]
name = "web1"
listen = "{frontend}"
workers = 2
threads = 4

[metrics]
base_port = {free_port()}
"""
    with launched(tmp_path_factory.mktemp("charts"), extra) as (_launcher, _config, data):
        yield f"http://{frontend}", data


@pytest.fixture(scope="module")
def users(cloud, browser) -> list[str]:
    """A few signed-up users: rows (accounts, sessions, drives) in shards all over."""
    base, _ = cloud
    names = [f"u{os.getpid()}x{i}" for i in range(6)]
    for name in names:
        context = browser.new_context(base_url=base)
        page = context.new_page()
        page.goto("/signup")
        submit(page, "main form", username=name, password=PASSWORD, password2=PASSWORD)
        page.wait_for_load_state()
        context.close()
    return names


@pytest.fixture(scope="module")
def admin_state(cloud, browser) -> dict:
    base, data = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.goto("/login")
    submit(page, "main form", username="admin",
           password=(data / "admin.password").read_text().strip())
    page.wait_for_load_state()
    state = context.storage_state()
    context.close()
    return state


def test_the_charts_draw_each_process_from_its_metrics(cloud, browser, admin_state):
    base, _ = cloud
    context = browser.new_context(base_url=base, storage_state=admin_state,
                                  viewport=SIZES["1280x800"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    snapshot = page.request.get("/admin/charts.json").json()
    assert snapshot["enabled"] is True
    shown = {p["name"]: p for p in snapshot["processes"]}
    assert {"g1a", "g1b", "g1c", "web1"} <= set(shown)
    assert all(p["up"] for p in shown.values()), shown
    assert shown["web1"]["requests"] >= 1 and shown["web1"]["timed"] >= 1
    assert shown["g1a"]["requests"] >= 1 and shown["g1a"]["seconds"] > 0
    page.goto("/admin/charts")
    # Three rounds of the script (3 s apart): two rates, a line of two points per chart.
    line = page.locator('tr[data-process="web1"] td.rate svg polyline')
    page.wait_for_function(
        "l => l && (l.getAttribute('points') || '').trim().split(' ').length >= 2",
        arg=line.element_handle(timeout=10_000), timeout=15_000)
    assert page.locator('tr[data-process="web1"] td.state').inner_text() == "up"
    assert re.fullmatch(r"[\d.]+ /s", page.locator('tr[data-process="g1a"] td.rate .now')
                        .inner_text())
    assert re.fullmatch(r"[\d.]+ ms", page.locator('tr[data-process="web1"] td.latency .now')
                        .inner_text())
    assert not errors, errors  # the CSP let the script and its fetch through
    problems = []
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        problems += [f"{size}: {p}" for p in _problems_of(page, axe_playwright.Axe())]
        page.screenshot(path=str(artifacts() / f"admin-charts-on-{size}.png"), full_page=True)
    context.close()
    assert not problems, problems


def _rows(page) -> list[tuple[int, str]]:
    """(shard, row) of each row on a raw-data page, in the order shown."""
    found = []
    for heading in page.locator("h2.row").all():
        shard = int(re.search(r"shard (\d+)", heading.locator("small.where").inner_text()).group(1))
        found.append((shard, heading.locator("a").inner_text()))
    return found


def test_the_raw_data_pages_on_across_shards_and_shows_times_as_dates(cloud, browser, users,
                                                                       admin_state):
    base, _ = cloud
    context = browser.new_context(base_url=base, storage_state=admin_state, locale="en-US")
    page = context.new_page()
    page.goto("/admin/data")
    pages = [_rows(page)]
    for _ in range(30):  # the whole key space of a young cloud, a page at a time
        following = page.locator('a[rel="next"]').first
        if following.count() == 0:
            break
        following.click()
        page.wait_for_load_state()
        pages.append(_rows(page))
    seen = [row for shown in pages for row in shown]
    assert len(pages) >= 2 and all(len(shown) == 10 for shown in pages[:-1])
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # shard by shard, each once
    assert len({shard for shard, _ in seen}) > 3
    # Pages run on across shard ends: one page shows rows of two shards, each marked.
    assert any(len({shard for shard, _ in shown}) > 1 for shown in pages)
    # Previous goes back a page, across a shard boundary too.
    page.locator('a[rel="prev"]').first.click()
    page.wait_for_load_state()
    assert _rows(page) == pages[-2]
    # An account's creation time as a date in the reader's zone, not Unix seconds.
    page.goto("/admin/data?row=user/admin")
    when = page.locator("td.value .when time").first
    page.wait_for_function("t => !t.textContent.includes('UTC')", arg=when.element_handle(),
                           timeout=5_000)
    assert when.get_attribute("datetime").endswith("Z") and when.get_attribute("title")
    assert "created:" in page.locator("td.value .when").first.inner_text()
    context.close()


def test_the_questions_and_the_new_password_fit_both_sizes(cloud, browser, users,
                                                           admin_state):
    base, _ = cloud
    name = users[0]
    problems = []
    for size, viewport in SIZES.items():
        context = browser.new_context(base_url=base, storage_state=admin_state,
                                      viewport=viewport)
        page = context.new_page()

        def check(what: str, page=page, size=size) -> None:
            problems.extend(f"{what} {size}: {p}" for p in _problems_of(page, axe_playwright.Axe()))
            page.screenshot(path=str(artifacts() / f"admin-{what}-{size}.png"), full_page=True)

        page.goto(f"/admin/users/{name}")
        page.click("button:text('Disable…')")
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == f"Disable {name}?"
        check("user-disable-question")
        page.click("a:text('Cancel')")
        page.wait_for_load_state()
        page.click("button:text('Reset password…')")
        page.wait_for_load_state()
        check("user-reset-question")
        page.click("button:text('Reset the password')")
        page.wait_for_load_state()
        assert page.locator("#notice").inner_text() == "The password has been reset."
        assert len(page.locator("#new-password").inner_text().strip()) >= 16
        check("user-new-password")
        context.close()
    assert not problems, "\n".join(problems)

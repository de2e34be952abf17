"""A person's day with the portal, in Debian's Chromium driven by Playwright.

The cloud runs under the real supervisor (``raftcloud up``): three storage
replicas and a gunicorn frontend.  The browser signs up, logs in, builds
nested folders, uploads a 12 MB binary file through the page's progress-bar
script and downloads it byte for byte, renames, moves and deletes, changes the
password and logs in again; then an admin disables a storage replica and
starts it again from /admin while the drive keeps working.  Every page is
saved as a screenshot under ``$RAFTCLOUD_ARTIFACTS`` (default
``artifacts/screenshots/`` in the repository).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._procs import free_port, wait_for
from ..cluster import launched

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

CHROMIUM = "/usr/bin/chromium"
# As in docs/testing.md, "Browsers": headless, no sandbox (root in CI), nothing phoning home.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD, NEW_PASSWORD = "correct horse battery", "battery staple horse"


def artifacts() -> Path:
    path = Path(os.environ.get("RAFTCLOUD_ARTIFACTS") or ROOT / "artifacts" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``raftcloud up`` with a control API: (frontend URL, data directory)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("browser")
    frontend = f"127.0.0.1:{free_port()}"
    extra = f"""
[control]
local = "127.0.0.1:{free_port()}"

[[frontend]]
name = "web1"
listen = "{frontend}"
workers = 2
threads = 8
"""
    with launched(tmp, extra) as (_launcher, _config, data):
        yield f"http://{frontend}", data


@pytest.fixture(scope="module")
def browser(cloud):
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Numbered screenshots, one per page visited."""

    def __init__(self, prefix: str) -> None:
        self.dir = artifacts()
        self.prefix = prefix
        self.count = 0
        for old in self.dir.glob(f"{prefix}-*.png"):
            old.unlink()

    def __call__(self, page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.dir / f"{self.prefix}-{self.count:02}-{name}.png"),
                        full_page=True)


def row(page, name: str):
    """The listing row of the file or folder called ``name``."""
    return page.locator("tr", has=page.locator(f'td > a:text-is("{name}")'))


def submit(page, form_selector: str, **fields: str) -> None:
    form = page.locator(form_selector)
    for field, value in fields.items():
        form.locator(f'[name="{field}"]').fill(value)
    form.locator('button[type="submit"]').click()
    page.wait_for_load_state()


def test_a_users_day_in_a_real_browser(cloud, browser, tmp_path):
    base, _ = cloud
    shot = Shots("user")
    context = browser.new_context(base_url=base, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto("/")
    shot(page, "start")
    page.click("text=Sign up")
    name = f"pw{os.getpid()}"
    submit(page, "main form", username=name, password=PASSWORD, password2=PASSWORD)
    assert page.locator("h1").inner_text() == f"Hello, {name}"
    shot(page, "signed-up")
    page.click("button:text('Log out')")
    page.wait_for_load_state()
    submit(page, "main form", username=name, password="not my password")
    assert "Wrong user name or password" in page.content()
    shot(page, "wrong-password")
    submit(page, "main form", username=name, password=PASSWORD)
    assert page.locator("h1").inner_text() == f"Hello, {name}"

    # Nested folders.
    page.click("nav >> text=Drive")
    shot(page, "empty-drive")
    submit(page, 'form[action="/drive/mkdir"]', name="projects")
    page.click('td > a:text-is("projects")')
    submit(page, 'form[action="/drive/mkdir"]', name="2024")
    page.click('td > a:text-is("2024")')
    assert page.locator("nav.crumbs").inner_text().replace(" ", "") == "Drive/projects/2024"
    shot(page, "nested-folder")

    # A 12 MB binary file up through the progress bar's script, and down again.
    content = os.urandom(12 * 1024 * 1024 + 7)
    source = tmp_path / "data.bin"
    source.write_bytes(content)
    page.set_input_files('input[type="file"]', str(source))
    with page.expect_response(lambda r: r.url.endswith("/drive/upload")) as upload:
        page.click("button:text('Upload')")
        page.wait_for_selector("#uploads li progress:not([hidden])")
        shot(page, "uploading")
    assert upload.value.request.resource_type == "xhr"  # the script sent it, not the form
    page.wait_for_selector('td > a:text-is("data.bin")')
    assert "12 MB" in row(page, "data.bin").inner_text()
    shot(page, "uploaded")
    with page.expect_download() as download:
        page.click('td > a:text-is("data.bin")')
    saved = tmp_path / "downloaded.bin"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "data.bin"
    assert saved.read_bytes() == content

    # Rename, then move up into "projects".
    row(page, "data.bin").locator("summary").click()
    row(page, "data.bin").locator('input[name="name"]').fill("renamed.bin")
    row(page, "data.bin").locator("button:text('Rename')").click()
    page.wait_for_selector('td > a:text-is("renamed.bin")')
    shot(page, "renamed")
    row(page, "renamed.bin").locator("text=Move").click()
    page.check("label.target:has-text('Drive / projects') >> input:not([disabled])")
    shot(page, "move-page")
    page.click("button:text('Move here')")
    page.wait_for_load_state()
    assert page.locator("nav.crumbs").inner_text().replace(" ", "") == "Drive/projects"
    assert row(page, "renamed.bin").count() == 1 and row(page, "2024").count() == 1

    # Delete: a non-empty folder asks first.
    page.click('td > a:text-is("2024")')
    note = tmp_path / "note.txt"
    note.write_text("remember the milk\n")
    page.set_input_files('input[type="file"]', str(note))
    page.click("button:text('Upload')")
    page.wait_for_selector('td > a:text-is("note.txt")')
    page.click("nav.crumbs >> text=projects")
    row(page, "2024").locator("a:text('Delete')").click()
    page.wait_for_load_state()
    assert "1 file and 0 folders" in page.content()
    shot(page, "delete-question")
    page.click("button:text('Move the folder and its contents to Trash')")
    page.wait_for_load_state()
    assert row(page, "2024").count() == 0
    row(page, "renamed.bin").locator("a:text('Delete')").click()
    page.click("button:text('Move the file to Trash')")
    page.wait_for_load_state()
    assert "This folder is empty" in page.content()
    shot(page, "after-deletes")

    # A new password; then log in with it.
    page.click("nav >> text=Password")
    submit(page, "main form", old=PASSWORD, new=NEW_PASSWORD, new2=NEW_PASSWORD)
    assert "has been changed" in page.content()
    shot(page, "password-changed")
    page.click("button:text('Log out')")
    page.wait_for_load_state()
    submit(page, "main form", username=name, password=NEW_PASSWORD)
    assert page.locator("h1").inner_text() == f"Hello, {name}"
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    context.close()


def test_an_admin_disables_and_restarts_a_replica_while_the_drive_works(cloud, browser,
                                                                          tmp_path):
    base, data = cloud
    shot = Shots("admin")
    user = browser.new_context(base_url=base, accept_downloads=True)
    page = user.new_page()
    page.goto("/signup")
    submit(page, "main form", username=f"dw{os.getpid()}", password=PASSWORD, password2=PASSWORD)

    admin = browser.new_context(base_url=base).new_page()
    admin.goto("/login")
    submit(admin, "main form", username="admin",
           password=(data / "admin.password").read_text().strip())
    admin.goto("/admin")
    shot(admin, "console")
    victim = "g1b"
    replica = admin.locator(f"#replica-{victim}")
    assert replica.locator("text=alive").count() == 1
    replica.locator("button:text('Disable')").click()
    admin.wait_for_load_state()
    assert admin.locator(f"#replica-{victim} >> text=disabled").count() == 1
    shot(admin, "replica-disabled")

    # Two of three replicas carry on: the drive works all along.
    for i in range(3):
        content = os.urandom(300_000 + i)
        path = tmp_path / f"while-down-{i}.bin"
        path.write_bytes(content)
        page.goto("/drive")
        page.set_input_files('input[type="file"]', str(path))
        page.click("button:text('Upload')")
        page.wait_for_selector(f'td > a:text-is("{path.name}")')
        with page.expect_download() as download:
            page.click(f'td > a:text-is("{path.name}")')
        download.value.save_as(tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == content
    shot(page, "drive-while-a-replica-is-down")

    admin.locator(f"#replica-{victim}").locator("button:text('Start')").click()
    admin.wait_for_load_state()

    def alive_again() -> bool:
        admin.goto("/admin")
        return admin.locator(f"#replica-{victim} >> text=alive").count() == 1
    wait_for(alive_again, 30, f"{victim} to come back", interval=0.5)
    shot(admin, "replica-back")
    assert re.search(r"(leader|follower)", admin.locator(f"#replica-{victim}").inner_text())

    admin.click("nav.admin-tabs >> text=Raw data")
    admin.wait_for_load_state()
    shot(admin, "data-browser")
    assert admin.locator("h1").inner_text().startswith("Raw data")
    for context in (user, admin.context):
        context.close()


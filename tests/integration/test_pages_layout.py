"""Every page at a desktop's and a phone's size, the notices, the delete question, dates, keys.

One cloud (``raftcloud up``, as in test_portal_browser) and one Chromium.  A user
with a folder, a long-named file and a message, and the admin, walk every page
they can reach at 1280x800 and at 390x844: no page scrolls sideways, axe-core
finds no serious or critical violation, and each page is saved as
``artifacts/screenshots/<page>-<size>.png`` for a reviewer.  Then every action
is shown to leave its notice, every delete asks first, times appear in the
reader's zone, and the keyboard reaches the main actions with a visible focus
(docs/architecture.md, "Pages").
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

import shards
from raftkv.cluster import load_cluster
from shards.model import accounts, drive
from shards.model.drive import FILE, FOLDER, ROOT, grants, shares

from .._mail import inprocess_smtpd, send_html
from .test_portal_browser import PASSWORD, artifacts, browser, cloud, row, submit

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser", "cloud"]  # the fixtures, shared with test_portal_browser

SIZES = {"1280x800": {"width": 1280, "height": 800}, "390x844": {"width": 390, "height": 844}}
# No break opportunity in 60 characters: it must wrap inside its column, never widen the page.
LONG_NAME = "quarterly-report-for-the-northern-region-final-version-2.pdf"
SUBJECT = "Lunch on Thursday at the usual place?"
HTML_SUBJECT = "The December newsletter"
# Mail's usual HTML: a table laid out with inline styles, a link, an inline image; nothing
# remote (a blocked image would be a console error in the walk: test_mail_sandbox has those).
HTML_MAIL = ('<table width="600" style="border-collapse:collapse"><tr><td style="padding:16px;'
             'background-color:#f0f4ff"><h1 style="color:#2350b8">December news</h1><p>Our '
             '<b>winter opening hours</b> start on the 15th. <a href="https://example.org/">'
             'Read more</a></p><img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAA'
             'ABCAYAAAAfFcSJAAAADUlEQVR4nGNQDtjxHwAD8AIrr78oGwAAAABJRU5ErkJggg==" alt="" '
             'width="24" height="24"></td></tr></table>')
HEAVY = ("serious", "critical")  # the axe impacts that fail a page


@dataclass
class Walker:
    """Who walks the pages, and the ids their pages need."""

    base: str
    user: str
    user_state: dict
    admin_state: dict
    file_id: str
    folder_id: str
    message_id: str
    held_id: str  # an upload held on a name clash (the drive's question)
    html_message_id: str  # HTML with a plain part: the sandboxed frame and its switch
    mail_folder_id: str  # a mail folder of the user's own, "Projects"
    draft_id: str  # a saved draft
    shares: dict[str, str]  # share links' paths: the whole drive, the file, one with a password
    trashed_id: str  # a file in the drive's Trash
    versioned_id: str  # a file replaced once: one earlier version
    image_id: str = ""  # a photo: its thumbnail in the listing, its viewer page
    shared_with: dict[str, str] = field(default_factory=dict)  # the "Shared with me" pages


def _href_id(page, selector: str) -> str:
    href = (page.locator(selector).first.get_attribute("href") or "").split("?")[0]
    return href.rstrip("/").split("/")[-1]


def _signup(page, name: str) -> None:
    page.goto("/signup")
    submit(page, "main form", username=name, password=PASSWORD, password2=PASSWORD)


def _send(page, to: str, subject: str, body: str) -> None:
    page.goto("/mail/compose")
    form = page.locator("form.compose")
    form.locator('[name="to"]').fill(to)
    form.locator('[name="subject"]').fill(subject)
    form.locator('[name="body"]').fill(body)
    form.locator("button:text('Send')").click()
    page.wait_for_load_state()


def _upload(page, path: Path) -> None:
    page.set_input_files('#upload-form input[type="file"]', str(path))
    page.click("#upload-form button:text('Upload')")
    page.wait_for_selector(f'td > a:text-is("{path.name}")')


@pytest.fixture(scope="module")
def walker(cloud, browser, tmp_path_factory) -> Walker:
    base, data = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    name = f"lay{os.getpid()}"
    _signup(page, name)
    page.goto("/drive")
    submit(page, 'form[action="/drive/mkdir"]', name="Holiday photos")
    source = tmp_path_factory.mktemp("files") / LONG_NAME
    source.write_bytes(os.urandom(150_000))
    _upload(page, source)
    file_id = _href_id(page, f'td > a:text-is("{LONG_NAME}")')
    photo = source.with_name("beach.jpg")
    photo.write_bytes(_photo_bytes())
    _upload(page, photo)
    image_id = _href_id(page, 'td > a:text-is("beach.jpg")')
    folder_id = _href_id(page, 'td > a:text-is("Holiday photos")')
    held_id = page.evaluate("""async name => {  // the same name again: held, and asked about
        const form = new FormData(document.getElementById("upload-form"));
        form.set("file", new File(["again"], name));
        const answer = await fetch("/drive/upload", {method: "POST", body: form,
                                                     headers: {Accept: "application/json"}});
        return (await answer.json()).clashes[0].held; }""", LONG_NAME)
    # A file replaced once (its versions page) and one in the Trash (the Trash's pages).
    page.evaluate("""async () => {
        const send = async (name, body) => {
            const form = new FormData(document.getElementById("upload-form"));
            form.set("file", new File([body], name));
            const answer = await fetch("/drive/upload", {method: "POST", body: form,
                                                         headers: {Accept: "application/json"}});
            return answer.json(); };
        await send("old notes.txt", "old");
        await send("plan.txt", "first plan");
        const held = (await send("plan.txt", "second plan")).clashes[0].held;
        const form = new FormData();
        form.set("csrf", document.querySelector("#upload-form [name=csrf]").value);
        form.set("folder", "root");
        form.set("held", held);
        form.set("choice-" + held, "replace");
        await fetch("/drive/held", {method: "POST", body: form,
                                    headers: {Accept: "application/json"}}); }""")
    page.goto("/drive")
    versioned_id = _href_id(page, 'td > a:text-is("plan.txt")')
    trashed_id = _href_id(page, 'td > a:text-is("old notes.txt")')
    page.goto(f"/drive/{trashed_id}/delete")
    page.click("button:text('Move the file to Trash')")
    page.wait_for_load_state()
    address = page.locator("header .who").inner_text()
    _send(page, address, SUBJECT, "Shall we meet at noon?\n\nThere is a new place by the river "
          "that does soup and bread, and they open early.")
    cluster = load_cluster(data.parent / "cfg" / "cluster.toml")  # as tests.cluster.launched
    with shards.Client(cluster) as client, inprocess_smtpd(cluster, client) as smtpd:
        send_html(smtpd.inbound, address, HTML_SUBJECT, HTML_MAIL,
                  plain="December news: our winter opening hours start on the 15th.")
        links = {"share-drive": (FOLDER, ROOT, ""), "share-file": (FILE, file_id, ""),
                 "share-password": (FOLDER, folder_id, "a password")}
        share_paths = {page: "/s/" + shares.create_share(client, name, kind, item,
                                                         password=password)[0]
                       for page, (kind, item, password) in links.items()}
        shared_with = _share_with(client, name, folder_id)
    page.goto("/mail")
    message_id = _href_id(page, f'td > a:text-is("{SUBJECT}")')
    html_message_id = _href_id(page, f'td > a:text-is("{HTML_SUBJECT}")')
    # A folder of the user's own, a draft, and a message in Trash: their pages are walked.
    page.click("details.new-folder summary")
    submit(page, 'form[action="/mail/folders/new"]', name="Projects")
    mail_folder_id = page.url.split("/mail/f/")[1].split("?")[0]
    _send(page, address, "Old news", "Nothing to see.")
    page.goto("/mail")
    page.click('td > a:text-is("Old news")')
    page.click("nav.toolbar button:text-is('Delete')")
    page.wait_for_load_state()
    page.goto("/mail/compose")
    page.locator('form.compose [name="to"]').fill(address)
    page.locator('form.compose [name="subject"]').fill("Half a thought")
    page.click("button:text('Save draft')")
    page.wait_for_load_state()
    draft_id = page.locator('input[name="draft"]').get_attribute("value")
    user_state = context.storage_state()
    context.close()

    admin = browser.new_context(base_url=base)
    page = admin.new_page()
    page.goto("/login")
    submit(page, "main form", username="admin",
           password=(data / "admin.password").read_text().strip())
    admin_state = admin.storage_state()
    admin.close()
    return Walker(base, name, user_state, admin_state, file_id, folder_id, message_id, held_id,
                  html_message_id, mail_folder_id, draft_id, share_paths, trashed_id,
                  versioned_id, image_id, shared_with)


def _photo_bytes() -> bytes:
    out = BytesIO()
    Image.linear_gradient("L").resize((900, 600)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def _share_with(client, name: str, folder_id: str) -> dict[str, str]:
    """Another account shares a folder with the walker, read-write (every action shows),
    and the walker shares "Holiday photos" with it (the Sharing page has a row)."""
    other = f"{name}o"
    accounts.create_user(client, other, PASSWORD)
    team = drive.create_folder(client, other, ROOT, "Team plans")
    drive.create_folder(client, other, team.id, "Budgets")
    drive.store_file(client, other, team.id, "A long and descriptive name for a plan.txt",
                     io.BytesIO(b"the plan"), size=8, quota=1 << 20)
    grants.grant(client, other, team.id, name, grants.WRITE)
    grants.grant(client, name, folder_id, other, grants.READ)
    return {"drive-sharing": f"/drive/d/{folder_id}/sharing", "drive-with": "/drive/with",
            "drive-with-folder": f"/drive/with/{other}/{team.id}"}


def _pages(w: Walker) -> list[tuple[str, str | None, str]]:
    """(page name, who is signed in, path): every page a user and the admin can reach."""
    return [
        ("start", None, "/"), ("login", None, "/login"), ("signup", None, "/signup"),
        ("home", "user", "/"), ("inbox", "user", "/mail"), ("sent", "user", "/mail?folder=sent"),
        ("message", "user", f"/mail/{w.message_id}"), ("compose", "user", "/mail/compose"),
        ("message-html", "user", f"/mail/{w.html_message_id}"),
        ("message-html-plain", "user", f"/mail/{w.html_message_id}?view=plain"),
        ("reply", "user", f"/mail/{w.message_id}/reply"),
        ("message-delete", "user", f"/mail/{w.message_id}/delete"),
        ("mail-folder", "user", f"/mail/f/{w.mail_folder_id}"),
        ("mail-folder-delete", "user", f"/mail/f/{w.mail_folder_id}/delete"),
        ("drafts", "user", "/mail/f/3"), ("draft", "user", f"/mail/compose?draft={w.draft_id}"),
        ("trash", "user", "/mail/f/4"), ("empty-trash", "user", "/mail/trash/empty"),
        ("mail-search", "user", "/mail/search?q=lunch"),
        ("drive", "user", "/drive"), ("drive-folder", "user", f"/drive/d/{w.folder_id}"),
        ("drive-move", "user", f"/drive/{w.file_id}/move"),
        ("drive-view-image", "user", f"/drive/{w.image_id}/view"),
        ("drive-delete-file", "user", f"/drive/{w.file_id}/delete"),
        ("drive-delete-folder", "user", f"/drive/d/{w.folder_id}/delete"),
        ("drive-clash", "user", f"/drive/held?folder=root&held={w.held_id}"),
        ("drive-delete-many", "user",
         f"/drive/select?action=delete&item=file:{w.file_id}&item=folder:{w.folder_id}"),
        ("drive-move-many", "user",
         f"/drive/select?action=move&item=file:{w.file_id}&item=folder:{w.folder_id}"),
        ("drive-search", "user", "/drive/search?q=holiday"),
        ("drive-shares", "user", "/drive/shares"),
        ("drive-share-new", "user", f"/drive/shares/new?item=f:{w.file_id}"),
        *((page, "user", path) for page, path in w.shared_with.items()),
        *((page, None, path) for page, path in w.shares.items()),
        ("not-found-share", None, "/s/" + "A" * 43),
        ("drive-trash", "user", "/drive/trash"),
        ("drive-trash-delete", "user", f"/drive/trash/delete?item={w.trashed_id}"),
        ("drive-trash-empty", "user", "/drive/trash/empty"),
        ("drive-versions", "user", f"/drive/{w.versioned_id}/versions"),
        ("password", "user", "/password"), ("security", "user", "/account"),
        ("account-delete", "user", "/account/delete"),
        ("not-found", "user", "/no/such/page"), ("not-found-anonymous", None, "/no/such/page"),
        ("admin", "admin", "/admin"), ("admin-data", "admin", "/admin/data"),
        ("admin-users", "admin", "/admin/users"), ("admin-user", "admin", f"/admin/users/{w.user}"),
        ("admin-queue", "admin", "/admin/queue"), ("admin-charts", "admin", "/admin/charts"),
    ]


def _problems_of(page, axe) -> list[str]:
    """What is wrong with the page shown: a sideways scroll, axe's serious or critical findings."""
    found = []
    scroll, client = page.evaluate("[document.documentElement.scrollWidth,"
                                   " document.documentElement.clientWidth]")
    if scroll > client:
        wide = page.evaluate("""w => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > w)
            .slice(-3).map(e => e.tagName + '.' + e.className)""", client)
        found.append(f"scrolls sideways ({scroll} px wide in {client}: {wide})")
    for violation in axe.run(page).response["violations"]:
        if violation["impact"] in HEAVY:
            targets = [n["target"] for n in violation["nodes"]][:3]
            found.append(f"axe {violation['impact']}: {violation['id']} at {targets}")
    return found


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_fits_the_screen_and_passes_axe(walker, browser, size):
    axe = axe_playwright.Axe()
    shots = artifacts()
    contexts = {who: browser.new_context(base_url=walker.base, viewport=SIZES[size],
                                         storage_state=state)
                for who, state in (("user", walker.user_state), ("admin", walker.admin_state),
                                   (None, None))}
    problems: list[str] = []
    try:
        pages = {who: context.new_page() for who, context in contexts.items()}
        for who, page in pages.items():
            page.on("console", lambda m, who=who: problems.append(f"{who} console: {m.text}")
                    if m.type == "error" and "404" not in m.text else None)
        for name, who, path in _pages(walker):
            page = pages[who]
            response = page.goto(path)
            assert response is not None and response.status == (
                404 if name.startswith("not-found") else 200), (name, response and response.status)
            page.wait_for_load_state("load")
            if who == "user":  # the header: who is signed in, and Log out, on the screen
                for label, part in (("the address", page.locator("header .who")),
                                    ("Log out", page.locator("header button:text('Log out')"))):
                    box = part.bounding_box()
                    if box is None or box["x"] < 0 or box["x"] + box["width"] > SIZES[size]["width"]:
                        problems.append(f"{name}: {label} is not on the screen ({box})")
            problems += [f"{name}: {p}" for p in _problems_of(page, axe)]
            page.screenshot(path=str(shots / f"{name}-{size}.png"), full_page=True)
    finally:
        for context in contexts.values():
            context.close()
    assert not problems, "\n".join(problems)


def _notice(page) -> str:
    playwright.expect(page.locator("#notice")).not_to_be_empty(timeout=5_000)
    return page.locator("#notice").inner_text().strip()


def test_every_action_says_what_it_did(cloud, browser, tmp_path):
    base, _ = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    name = f"fb{os.getpid()}"
    said: dict[str, str] = {}

    def note(action: str) -> None:
        try:
            said[action] = _notice(page)
        except AssertionError:  # the notice stayed empty
            said[action] = ""

    _signup(page, name)
    note("signed up")
    address = page.locator("header .who").inner_text()
    assert page.locator("p.welcome").inner_text().count(address) == 1  # the welcome names it
    assert "done=" not in page.url  # the script took the key out of the address bar
    page.goto("/drive")
    submit(page, 'form[action="/drive/mkdir"]', name="letters")
    note("folder created")
    source = tmp_path / "note.txt"
    source.write_text("milk\n")
    _upload(page, source)
    note("uploaded")
    row(page, "note.txt").locator("summary").click()
    row(page, "note.txt").locator('input[name="name"]').fill("list.txt")
    row(page, "note.txt").locator("button:text('Rename')").click()
    page.wait_for_load_state()
    note("renamed")
    row(page, "list.txt").locator("text=Move").click()
    page.check("label.target:has-text('Drive / letters') >> input")
    page.click("button:text('Move here')")
    page.wait_for_load_state()
    note("moved")
    row(page, "list.txt").locator("a:text('Delete')").click()
    page.click("button:text('Move the file to Trash')")
    page.wait_for_load_state()
    note("trashed")
    page.click("form.undo button:text-is('Undo')")  # the notice's undo puts it back
    page.wait_for_load_state()
    note("restored")
    row(page, "list.txt").locator("a:text('Delete')").click()
    page.click("button:text('Move the file to Trash')")
    page.wait_for_load_state()
    page.goto("/drive/trash")
    page.click("a:text('Empty trash')")
    page.click("button:text('Empty trash')")
    page.wait_for_load_state()
    note("trash emptied")
    _send(page, address, "to myself", "hello")
    note("sent")
    page.goto("/mail")
    page.click('td > a:text-is("to myself")')
    page.click("nav.toolbar button:text-is('Delete')")  # into Trash: the notice offers an undo
    page.wait_for_load_state()
    note("mail trashed")
    page.click("form.undo button:text-is('Undo')")
    page.wait_for_load_state()
    note("mail restored")
    page.goto("/password")
    submit(page, "main form", old=PASSWORD, new=PASSWORD + "!", new2=PASSWORD + "!")
    note("password changed")
    page.click("button:text('Log out')")
    page.wait_for_load_state()
    note("logged out")
    context.close()

    expected = {"signed up": "Welcome! Your account is ready.", "folder created": "Folder created.",
                "uploaded": "Uploaded.", "renamed": "Renamed.", "moved": "Moved.",
                "trashed": "Moved to Trash.", "restored": "Restored.",
                "trash emptied": "The Trash is empty; everything in it was deleted for good.",
                "sent": "Your message has been sent.",
                "mail trashed": "Moved to Trash.",
                "mail restored": "The message is back where it was.",
                "password changed": "Your password has been changed.",
                "logged out": "You have been logged out."}
    wrong = {action: said.get(action) for action, text in expected.items()
             if said.get(action) != text}
    assert not wrong, f"these actions did not say what they did: {wrong}"


def test_nothing_is_deleted_for_good_without_a_question(walker, browser, tmp_path):
    context = browser.new_context(base_url=walker.base, storage_state=walker.user_state)
    page = context.new_page()
    page.goto("/drive")
    page.click('td > a:text-is("Holiday photos")')
    source = tmp_path / "keep-me.txt"
    source.write_text("precious\n")
    _upload(page, source)
    page.goto("/drive")
    # A folder with something in it: the question says what goes; Cancel keeps it all.
    row(page, "Holiday photos").locator("a:text('Delete')").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Move “Holiday photos” to Trash?"
    assert "1 file and 0 folders" in page.locator(".question").inner_text()
    assert "restore it from the Trash" in page.locator(".question").inner_text()
    page.click("a:text('Cancel')")
    page.wait_for_load_state()
    assert row(page, "Holiday photos").count() == 1
    # A file, and a form posted without the answer (an old page): the question again.
    page.goto(f"/drive/{walker.file_id}/delete")
    assert page.locator("h1").inner_text() == f"Move “{LONG_NAME}” to Trash?"
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.evaluate("""() => { const f = document.querySelector('.question form');
                                 f.querySelector('[name=confirm]').remove(); f.submit(); }""")
    assert posted.value.status == 200
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == f"Move “{LONG_NAME}” to Trash?"
    page.goto("/drive")
    assert row(page, LONG_NAME).count() == 1
    # In the drive's Trash, for good only after the question, which Cancel leaves.
    page.goto("/drive/trash")
    page.locator("tr", has_text="old notes.txt").locator("a:text('Delete forever')").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Delete “old notes.txt” forever?"
    assert "cannot be undone" in page.locator(".question").inner_text()
    page.click("a:text('Cancel')")
    page.wait_for_load_state()
    assert page.locator("tr", has_text="old notes.txt").count() == 1
    page.click("a:text('Empty trash')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Empty the Trash?"
    page.click("a:text('Cancel')")
    page.wait_for_load_state()
    assert page.locator("tr", has_text="old notes.txt").count() == 1
    # A message: into Trash at once (the notice offers an undo); for good only after the
    # question, which Cancel leaves; then restored, as the walk found it.
    page.goto(f"/mail/{walker.message_id}")
    page.click("nav.toolbar button:text-is('Delete')")
    page.wait_for_load_state()
    page.goto(f"/mail/{walker.message_id}")
    page.click("nav.toolbar a:text-is('Delete forever')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Delete this message for good?"
    assert "cannot be undone" in page.locator(".question").inner_text()
    page.click("a:text('Cancel')")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == SUBJECT
    page.click("nav.toolbar button:text-is('Restore')")
    page.wait_for_load_state()
    page.goto("/mail")
    assert page.locator(f'td > a:text-is("{SUBJECT}")').count() == 1
    context.close()


def _expected_time(when: datetime, now: datetime) -> str:
    """What the page script should show for ``when`` at ``now`` (both in the reader's zone)."""
    if when.date() == now.date():
        return when.strftime("%I:%M %p").lstrip("0")  # en-US: "4:09 PM"
    if when.year == now.year:
        return f"{when.strftime('%b')} {when.day}"  # "Dec 2"
    return when.strftime("%Y-%m-%d")


def test_times_are_shown_in_the_readers_zone(walker, browser):
    zone = ZoneInfo("Asia/Kolkata")  # +05:30: no UTC text or whole-hour shift passes by accident
    context = browser.new_context(base_url=walker.base, storage_state=walker.user_state,
                                  timezone_id=zone.key, locale="en-US")
    page = context.new_page()
    page.goto("/drive")
    stamp = row(page, "Holiday photos").locator("time").get_attribute("datetime") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(zone)
    other_day = when.replace(month=1, day=2 if (when.month, when.day) == (1, 1) else 1, hour=12)
    context.close()
    seen = {}
    for label, now in (("today", None), ("this year", other_day),
                       ("an earlier year", when + timedelta(days=400))):
        context = browser.new_context(base_url=walker.base, storage_state=walker.user_state,
                                      timezone_id=zone.key, locale="en-US")
        page = context.new_page()
        if now is not None:  # the browser's clock, set before the page loads
            page.clock.install(time=now)
        page.goto("/drive")
        tag = row(page, "Holiday photos").locator("time")
        page.wait_for_function("t => !t.textContent.includes('UTC')", arg=tag.element_handle(),
                               timeout=5_000)
        reader_now = (now or datetime.now(UTC)).astimezone(zone)
        seen[label] = (tag.inner_text(), _expected_time(when, reader_now))
        assert tag.get_attribute("title")  # the full local time on hover
        context.close()
    assert all(got == want for got, want in seen.values()), seen


def test_the_keyboard_reaches_the_main_actions_with_a_visible_focus(walker, browser):
    context = browser.new_context(base_url=walker.base, storage_state=walker.user_state,
                                  viewport=SIZES["1280x800"])
    page = context.new_page()
    for path, wanted in (("/drive", {"Skip to the content", "Drive", "Log out", "Upload",
                                     "Create folder", "Rename", "Move", "Delete"}),
                         ("/mail", {"Compose", "Inbox", "Sent", SUBJECT})):
        page.goto(path)
        reached: set[str] = set()
        for _ in range(40):
            page.keyboard.press("Tab")
            focused = page.evaluate("""() => { const e = document.activeElement;
                const s = getComputedStyle(e);
                return [e.innerText || e.value || e.getAttribute('aria-label') || '',
                        s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2]; }""")
            text, visible = focused
            if text.strip() in wanted:
                assert visible, f"{text!r} on {path} has no visible focus"
                reached.add(text.strip())
        assert reached == wanted, f"Tab on {path} never reached {wanted - reached}"
    context.close()

"""HTML mail in a real browser: a script in it never runs, remote images wait for the click.

One cloud (``raftcloud up``: storage, one frontend, smtpd) and Debian's Chromium.
Mail arrives as any mail does, over SMTP to the cloud's smtpd.  A small HTTP
listener on loopback stands for the internet: a script in a mail would call it,
a remote image is fetched from it, and it notes every request.  So "nothing ran"
is seen from outside the browser, and the image test shows the listener is
reachable from the frame once the reader asks (docs/security.md, "HTML mail").
Then the mail pages' Compose button and folder tabs, at a desktop's and a
phone's size, and the message page's dates in the reader's zone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from raftkv.cluster import load_cluster
from smtpd.settings import SmtpdSettings

from .._mail import send_html
from .._procs import NO_DNS, free_port, wait_for
from ..cluster import launched
from .test_pages_layout import SIZES, _expected_time, _problems_of, _signup
from .test_portal_browser import CHROMIUM, Shots, artifacts, browser

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]
__all__ = ["browser"]  # the fixture, run on this module's cloud

# A 1x1 transparent PNG: what the "remote" image server answers.
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                      "0000000d49444154789c63500ed8f11f0003f0022bafbf281b0000000049454e44ae426082")
SETTLE = 1.5  # seconds a page is given to do what a script in it would do


class Listener:
    """An HTTP server on loopback that notes the path of every request it gets."""

    def __init__(self) -> None:
        seen = self.paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen.append(self.path)
                image = self.path.startswith("/pixel")
                self.send_response(200 if image else 204)
                self.send_header("Access-Control-Allow-Origin", "*")
                if image:
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Cache-Control", "no-store")
                    self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                if image:
                    self.wfile.write(PIXEL)

            do_POST = do_GET  # noqa: N815 - a script's beacon or form

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hits(self, prefix: str) -> list[str]:
        return [p for p in self.paths if p.startswith(prefix)]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """``raftcloud up`` with one frontend and smtpd: (frontend URL, smtpd's inbound address)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    frontend = f"127.0.0.1:{free_port()}"
    extra = f"""
[control]
local = "127.0.0.1:{free_port()}"

[[frontend]]
name = "web1"
listen = "{frontend}"
workers = 1
threads = 8

[smtpd]
name = "smtpd"
inbound = "127.0.0.1:{free_port()}"
resolver = "{NO_DNS}"
"""
    with launched(tmp_path_factory.mktemp("mail-sandbox"), extra) as (_launcher, config, _data):
        inbound = SmtpdSettings.from_cluster(load_cluster(config)).inbound
        yield f"http://{frontend}", inbound


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    found = Listener()
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


@pytest.fixture(scope="module")
def reader(cloud, browser) -> tuple[dict, str]:
    """A signed-up user: (their browser storage state, their address)."""
    base, _ = cloud
    context = browser.new_context(base_url=base)
    page = context.new_page()
    _signup(page, f"sb{os.getpid()}")
    address = page.locator("header .who").inner_text()
    state = context.storage_state()
    context.close()
    return state, address


def _deliver(cloud, address: str, subject: str, html: str, plain: str | None = None) -> None:
    send_html(cloud[1], address, subject, html, plain)


def _open(browser, cloud, reader, subject: str, **context_args):
    """A new page on the reader's inbox with the message ``subject`` opened."""
    context = browser.new_context(base_url=cloud[0], storage_state=reader[0], **context_args)
    page = context.new_page()
    page.goto("/mail")
    page.click(f'td > a:text-is("{subject}")')
    page.wait_for_load_state("load")
    return context, page


def test_a_script_in_html_mail_never_runs(cloud, browser, reader, listener):
    probe = f"{listener.base}/never"
    subject = "Your order has shipped"
    _deliver(cloud, reader[1], subject, f"""
<p>Hello, <b>your parcel</b> is on its way.</p>
<script>document.title = "script ran"; fetch("{probe}/script");</script>
<img src="data:image/png;base64,AAAA" alt="" onerror="fetch('{probe}/onerror')">
<svg onload="fetch('{probe}/svg')"></svg>
<p><a href="javascript:fetch('{probe}/javascript-link')">Track it</a></p>
<meta http-equiv="refresh" content="0;url={probe}/refresh">
<iframe src="{probe}/iframe"></iframe>
<form action="{probe}/form" method="post"><button>Confirm</button></form>
""")
    context, page = _open(browser, cloud, reader, subject)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    time.sleep(SETTLE)  # the page and its frame have loaded (_open): anything would have run
    assert not listener.hits("/never/"), f"the mail reached the listener: {listener.paths}"
    frame = page.frame_locator("iframe.mail-html")
    playwright.expect(frame.locator("body")).to_contain_text("your parcel is on its way")
    frame.locator("a", has_text="Track it").click()  # a javascript: link does nothing
    time.sleep(SETTLE)
    assert not listener.hits("/never/"), f"the mail reached the listener: {listener.paths}"
    assert page.title() == f"{subject} · raftcloud"
    inner = next(f for f in page.frames if f.url.endswith("/html"))
    assert inner.title() == "Message"  # as we wrote it: the mail's script did not set it
    assert not errors
    Shots("mail-sandbox")(page, "script-never-ran")
    context.close()


def test_remote_images_load_only_after_the_click(cloud, browser, reader, listener):
    subject = "Photos from the weekend"
    _deliver(cloud, reader[1], subject,
             f'<p>Look at this:</p><img src="{listener.base}/pixel.png?weekend" alt="a photo" '
             'width="40" height="40"><p>Lovely, no?</p>',
             plain="Look at the photo (HTML only). Lovely, no?")
    context, page = _open(browser, cloud, reader, subject)
    frame = page.frame_locator("iframe.mail-html")
    playwright.expect(frame.locator("body")).to_contain_text("Lovely, no?")
    time.sleep(SETTLE)
    assert not listener.hits("/pixel.png?weekend"), "fetched before the reader asked"
    shots = Shots("mail-images")
    shots(page, "blocked")
    page.click("a:text('Show remote images')")
    page.wait_for_load_state("load")
    wait_for(lambda: listener.hits("/pixel.png?weekend"), 10, "the image to be fetched")
    playwright.expect(page.frame_locator("iframe.mail-html").locator("body")).to_contain_text(
        "Lovely, no?")
    assert page.locator("a:text('Show remote images')").count() == 0
    shots(page, "shown")
    # The choice was for that one view: the message opened again blocks them again.
    page.goto(page.url.split("?")[0])
    assert page.locator("a:text('Show remote images')").count() == 1
    # A message with a plain part too: a switch to it, and back.
    page.click("a:text('Plain text')")
    page.wait_for_load_state("load")
    assert page.locator("iframe.mail-html").count() == 0
    assert "Look at the photo (HTML only)" in page.locator("pre.body").inner_text()
    page.click("a:text('Formatted (HTML)')")
    page.wait_for_load_state("load")
    assert page.locator("iframe.mail-html").count() == 1
    context.close()


@pytest.mark.parametrize("size", list(SIZES))
def test_compose_and_the_folder_tabs_at_both_sizes(cloud, browser, reader, listener, size):
    subject = f"Tabs at {size}"
    _deliver(cloud, reader[1], subject,
             f'<p>Newsletter</p><img src="{listener.base}/pixel.png?tabs" alt="banner">',
             plain="Newsletter")
    context = browser.new_context(base_url=cloud[0], storage_state=reader[0],
                                  viewport=SIZES[size])
    page = context.new_page()
    width = SIZES[size]["width"]
    axe = axe_playwright.Axe()
    shots = artifacts()
    problems: list[str] = []

    def on_screen(locator, what: str) -> None:
        box = locator.bounding_box()
        if box is None or box["x"] < 0 or box["x"] + box["width"] > width:
            problems.append(f"{what} is not on the screen at {size} ({box})")

    def check(name: str) -> None:
        on_screen(page.locator("nav.folders a:text-is('Compose')"), f"{name}: Compose")
        problems.extend(f"{name}: {p}" for p in _problems_of(page, axe))
        page.screenshot(path=str(shots / f"{name}-{size}.png"), full_page=True)

    page.goto("/mail")
    current = page.locator("nav.folders [aria-current=page]")
    assert current.inner_text() == "Inbox"
    page.click(f'td > a:text-is("{subject}")')  # remote images blocked: the bar shows
    page.wait_for_load_state("load")
    frame = page.locator("iframe.mail-html")
    on_screen(frame, "the message's frame")
    on_screen(page.locator("a:text('Show remote images')"), "Show remote images")
    check("message-remote-images")
    page.click("nav.folders a:text-is('Compose')")
    page.wait_for_load_state("load")
    # The form takes the whole of the page's column beside the folder list.
    form = page.locator("form.compose").bounding_box()
    main = page.locator(".mail-main").bounding_box()
    assert form and main and form["width"] >= main["width"] - 1, (form, main)
    font = page.locator("form.compose textarea").evaluate("e => getComputedStyle(e).fontSize")
    assert float(font.removesuffix("px")) >= 16, font
    page.locator('form.compose [name="to"]').fill(reader[1])
    page.locator('form.compose [name="subject"]').fill(f"Sent at {size}")
    page.locator('form.compose [name="body"]').fill("hello")
    page.click("form.compose button:text('Send')")
    page.wait_for_load_state("load")
    assert current.inner_text() == "Sent"
    assert page.locator("table.mail th.who").inner_text() == "To"
    sent = page.locator("tr", has=page.locator(f'td > a:text-is("Sent at {size}")'))
    assert sent.locator("td.sender").inner_text() == reader[1]
    on_screen(page.locator("nav.folders a:text-is('Inbox')"), "the Inbox tab")
    check("sent-with-to")
    context.close()
    assert not listener.hits("/pixel.png?tabs")
    assert not problems, "\n".join(problems)


def test_the_message_and_its_row_show_times_in_the_readers_zone(cloud, browser, reader):
    zone = ZoneInfo("Asia/Kolkata")  # +05:30: neither UTC text nor a whole-hour shift passes
    subject = "What time is it there?"
    _deliver(cloud, reader[1], subject, "<p>Just wondering.</p>")
    context, page = _open(browser, cloud, reader, subject, timezone_id=zone.key, locale="en-US")
    tag = page.locator("dl.headers time")
    page.wait_for_function("t => !t.textContent.includes('UTC')", arg=tag.element_handle(),
                           timeout=5_000)
    stamp = tag.get_attribute("datetime") or ""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(zone)
    assert tag.inner_text() == _expected_time(when, datetime.now(zone))
    page.goto("/mail")  # and its row in the inbox (the arrival time)
    tag = page.locator("tr", has=page.locator(f'td > a:text-is("{subject}")')).locator("time")
    page.wait_for_function("t => !t.textContent.includes('UTC')", arg=tag.element_handle(),
                           timeout=5_000)
    stamp = tag.get_attribute("datetime") or ""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(zone)
    assert tag.inner_text() == _expected_time(when, datetime.now(zone))
    context.close()

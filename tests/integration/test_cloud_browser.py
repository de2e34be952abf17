"""The whole cloud in Debian's Chromium, entered through the balancer.

`raftcloud up` runs storage, two frontends, smtpd and the balancer.  Alice and
Bob arrive at the balancer's address, sign up, upload a file and mail each
other through the webmail: compose with an attachment, read, reply, forward
with the attachment, delete, look at Sent; then the admin opens /admin and sees
every kind of process.  Screenshots land beside the portal's (``cloud-*.png``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from balancer.settings import BalancerSettings
from raftkv.cluster import load_cluster

from .._procs import wait_for
from ..cluster import launched, whole_cloud_extra
from .test_portal_browser import CHROMIUM, CHROMIUM_ARGS, Shots, submit

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("cloud-browser")
    with launched(tmp, whole_cloud_extra()) as (_launcher, config, data):
        yield f"http://{BalancerSettings.from_cluster(load_cluster(config)).listen}", data


def _enter(browser, balancer: str, name: str, shot, *, signup: bool):
    """A new browser session that arrives at the balancer and logs in."""
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()

    def landed() -> bool:
        page.goto(balancer + "/")
        return page.url != balancer + "/" and "Log in" in page.content()
    wait_for(landed, 30, "the balancer to hand us to a frontend", interval=0.5)
    if signup:
        page.click("text=Sign up")
        submit(page, "main form", username=name, password=PASSWORD, password2=PASSWORD)
        shot(page, f"{name}-signed-up")
        page.click("button:text('Log out')")
        page.wait_for_load_state()
    submit(page, "main form", username=name, password=PASSWORD)
    assert page.locator("h1").inner_text() == f"Hello, {name}"
    return page


def _compose(page, to: str, subject: str, body: str, attachment: Path | None = None) -> None:
    page.click("nav >> text=Mail")
    page.click("text=Compose")
    form = page.locator("form.compose")
    form.locator('[name="to"]').fill(to)
    form.locator('[name="subject"]').fill(subject)
    form.locator('[name="body"]').fill(body)
    if attachment is not None:
        form.locator('[name="attachment"]').set_input_files(str(attachment))
    form.locator("button:text('Send')").click()
    page.wait_for_load_state()


def _open(page, subject: str) -> None:
    page.click("nav >> text=Mail")
    page.click(f'td > a:text-is("{subject}")')
    page.wait_for_load_state()


def test_mail_and_drive_through_the_balancer_in_a_real_browser(cloud, tmp_path):
    balancer, data = cloud
    shot = Shots("cloud")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4\n" + os.urandom(40_000))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            alice = _enter(browser, balancer, "alice", shot, signup=True)
            bob = _enter(browser, balancer, "bob", shot, signup=True)

            # Alice uploads a file, then mails Bob with an attachment.
            alice.click("nav >> text=Drive")
            alice.set_input_files('#upload-form input[type="file"]', str(report))
            alice.click("button:text('Upload')")
            alice.wait_for_selector('td > a:text-is("report.pdf")')
            shot(alice, "alice-drive")
            _compose(alice, "bob@raftcloud.test", "Quarterly report", "Numbers inside.", report)
            assert "Quarterly report" in alice.content()  # the Sent folder
            shot(alice, "alice-sent")

            # Bob reads it, downloads the attachment, replies and forwards it back.
            _open(bob, "Quarterly report")
            assert "Numbers inside." in bob.content()
            shot(bob, "bob-reads")
            with bob.expect_download() as download:
                bob.click("ul.attachments >> text=report.pdf")
            saved = tmp_path / "got.pdf"
            download.value.save_as(saved)
            assert saved.read_bytes() == report.read_bytes()
            bob.click("text=Reply")
            assert bob.locator('[name="subject"]').input_value() == "Re: Quarterly report"
            bob.locator('[name="body"]').fill("Thanks, looks good.")
            shot(bob, "bob-replies")
            bob.locator("form.compose button:text('Send')").click()
            bob.wait_for_load_state()
            _open(bob, "Quarterly report")
            bob.click("text=Forward")
            assert "report.pdf" in bob.content()  # the attachment goes along
            bob.locator('[name="to"]').fill("alice@raftcloud.test")
            bob.locator("form.compose button:text('Send')").click()
            bob.wait_for_load_state()

            # Alice finds both, the forward with its attachment; deletes the reply.
            alice.click("nav >> text=Mail")
            inbox = alice.content()
            assert "Re: Quarterly report" in inbox and "Fwd: Quarterly report" in inbox
            shot(alice, "alice-inbox")
            _open(alice, "Fwd: Quarterly report")
            assert alice.locator("ul.attachments >> text=report.pdf").count() == 1
            _open(alice, "Re: Quarterly report")
            assert "Thanks, looks good." in alice.content()
            alice.click("nav.toolbar >> button:text('Delete')")  # into Trash, undoable
            alice.wait_for_load_state()
            assert "Moved to Trash" in alice.content()
            assert "Re: Quarterly report" not in alice.content()
            alice.click("text=Sent")
            assert "Quarterly report" in alice.content()
            shot(alice, "alice-sent-after")

            # The admin sees every kind of process, registered by itself.
            admin_password = (data / "admin.password").read_text().strip()
            context = browser.new_context()
            admin = context.new_page()
            wait_for(lambda: admin.goto(balancer + "/login") and "Log in" in admin.content(),
                     30, "a frontend", interval=0.5)
            submit(admin, "main form", username="admin", password=admin_password)
            console_url = re.sub(r"/[^/]*$", "/admin", admin.url)
            names = ("g1a", "g1b", "g1c", "web1", "web2", "smtpd", "imapd", "balancer")

            def everyone_listed() -> bool:  # each registers with its first heartbeat
                admin.goto(console_url)
                return all(name in admin.content() for name in names)
            wait_for(everyone_listed, 30, "every process in /admin", interval=1.0)
            shot(admin, "admin")
        finally:
            browser.close()

"""neomutt, in a tmux of the test's own, against raftcloud-imapd on the real store (issue 19).

A person's terminal client: neomutt opens the inbox over STARTTLS (the test's
self-signed certificate pre-trusted in its certificate file, so no question is ever
left on the screen), a message is read, flagged and saved to another folder with
the keys a person would press, and the webmail then shows the same mailbox.  Every
wait reads the screen (``capture-pane``) until what is expected is on it, with a
deadline; a failure prints the last screen.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal import PortalConfig, create_app
from shards.model import accounts, mail

from .._imap import hostport, inprocess_imapd, sample_message
from .._portal import PASSWORD, logged_in

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("neomutt") is None or shutil.which("tmux") is None,
                                 reason="neomutt or tmux is not installed: make system-deps")]

SCREEN_TIMEOUT = 30  # seconds for one expected screen (a login, a folder's headers)


class Tmux:
    """One tmux server on a socket of the test's own, running one program in one pane."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                              text=True, timeout=10, env=self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, command: list[str]) -> None:
        self.run("new-session", "-d", "-x", "160", "-y", "40", "-s", "test", *command)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", "test", *(["-l"] if literal else []), *keys)

    def type(self, text: str) -> None:
        """Type ``text`` and Enter (at a prompt)."""
        self.keys(text, literal=True)
        self.keys("Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "test")

    def wait(self, pattern: str, timeout: float = SCREEN_TIMEOUT) -> str:
        """The screen once ``pattern`` (a regular expression) is on it."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not on the screen within {timeout}s:\n{screen}")

    def stop(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True,
                       timeout=10, env=self.env)


@pytest.fixture(scope="module")
def imapd(kv_cluster, client, tmp_path_factory):
    certs = tmp_path_factory.mktemp("imap-tls")
    with inprocess_imapd(kv_cluster.cluster, client, certs,
                         plaintext_login_on_loopback=False) as settings:  # TLS or nothing
        yield settings, certs / "cert.pem"


@pytest.fixture(scope="module")
def portal(kv_cluster):
    config = PortalConfig(cluster=kv_cluster.cluster, frontend="fe-neomutt",
                          addr="127.0.0.1:9", background=False)
    app = create_app(config, client_factory=kv_cluster.client)
    yield app
    app.close()


@pytest.fixture
def tmux(tmp_path) -> Iterator[Tmux]:
    # A short socket path: tmux's must fit in a sockaddr_un (108 bytes), pytest's may not.
    socket = Path(f"/tmp/rc-tmux-{secrets.token_hex(4)}")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm-256color",
           "LANG": "C.UTF-8", "TMUX_TMPDIR": str(tmp_path)}
    session = Tmux(socket, env)
    try:
        yield session
    finally:
        session.stop()
        socket.unlink(missing_ok=True)


def neomuttrc(path: Path, user: str, listen: str, cert: Path) -> Path:
    host, port = hostport(listen)
    path.write_text(f"""\
set folder = "imap://{user}@{host}:{port}/"
set spoolfile = "+INBOX"
set imap_user = "{user}"
set imap_pass = "{PASSWORD}"
# STARTTLS always; the server's certificate is trusted because it is in this file
set ssl_starttls = yes
set ssl_force_tls = yes
set certificate_file = "{cert}"
set ssl_verify_host = no
set header_cache = ""
set message_cachedir = ""
set sort = date
set mail_check = 1
set timeout = 2
set confirmappend = no
set confirmcreate = no
set delete = yes
set quit = yes
set move = no
set mark_old = no
set wait_key = no
set beep = no
set pager_stop = yes
""")
    return path


def test_read_flag_and_save_to_another_folder_shows_in_the_webmail(imapd, portal, client,
                                                                   tmux, tmp_path):
    settings, cert = imapd
    user = f"mutt{secrets.token_hex(3)}"
    accounts.create_user(client, user, PASSWORD)
    archive = mail.create_folder(client, user, "Archive")
    raws = {subject: sample_message(subject, f"the body of {subject}")
            for subject in ("first untouched", "second to keep", "third to archive")}
    for raw in raws.values():
        mail.deliver(client, user, raw)
        time.sleep(0.01)  # distinct arrival times: neomutt sorts by date
    ids = {subject: mail.parse_headers(raw).message_id for subject, raw in raws.items()}

    tmux.start(["neomutt", "-n", "-F", str(neomuttrc(tmp_path / "neomuttrc", user,
                                                     settings.listen, cert))])
    tmux.wait(r"third to archive")
    # read and flag the one to keep, then read, flag and save the third elsewhere
    for subject, save in (("second to keep", False), ("third to archive", True)):
        tmux.keys("/")
        tmux.wait(r"Search for:")
        tmux.type(subject)
        tmux.keys("Enter")  # open it: the pager shows the body
        tmux.wait(f"the body of {subject}")
        tmux.keys("q")
        tmux.wait(r"first untouched")
        tmux.keys("F")  # flag it
        if save:
            tmux.keys("s")
            tmux.wait(r"Save to mailbox")
            tmux.keys("C-u")  # neomutt offers a name of its own
            tmux.type("=Archive")
            tmux.wait(r"Saving|Copying|Archive")
    tmux.keys("$")  # sync: flags and the expunge reach the server
    tmux.wait(r"2 kept, 1 deleted")  # saving marked the third deleted here; now expunged

    def state() -> dict[str, tuple[int, set[str]]]:
        found = {}
        for folder in (mail.INBOX, archive.id):
            for record in mail.list_folder(client, user, folder):
                found[record.message_id] = (folder, set(record.flags))
        return found
    deadline = time.monotonic() + SCREEN_TIMEOUT
    wanted = {ids["first untouched"]: (mail.INBOX, set()),
              ids["second to keep"]: (mail.INBOX, {"\\Seen", "\\Flagged"}),
              ids["third to archive"]: (archive.id, {"\\Seen", "\\Flagged"})}
    while state() != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state() == wanted, tmux.screen()
    tmux.keys("q")

    # The webmail shows the same: the one kept is read, the untouched one unread, the
    # archived one gone from the inbox but still there to read (its page, in Archive).
    http = logged_in(portal, user)
    inbox = http.get("/mail")
    assert inbox.status_code == 200
    rows = re.findall(r"<tr( class=\"unread\")?>\s*<td class=\"pick-cell\">.*?"
                      r"<td class=\"subject\"><a href=\"/mail/([^\"?]+)[^\"]*\">([^<]*)</a>",
                      inbox.text, re.S)
    assert {subject: bool(unread) for unread, _id, subject in rows} == \
        {"first untouched": True, "second to keep": False}
    [archived] = mail.list_folder(client, user, archive.id)
    page = http.get(f"/mail/{archived.id}")
    assert page.status_code == 200 and "the body of third to archive" in page.text

"""One whole cloud (`raftcloud up`) for the hostile-input suite, and the witnesses every probe uses.

Starting processes is the slow part, so the suite starts one cloud per session
and every door is probed on it.  Each probe is one test id; around it, two
fixtures check what every probe must leave behind:

* ``nothing_stored_or_lost`` (autouse): the victim's drive and mailbox rows,
  the store's canary cell and the supervisor's processes are exactly as before;
* each module's ``still_answering`` (autouse): after the probe, an ordinary
  request through the same door succeeds.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import smtplib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import shards
from balancer.settings import BalancerSettings
from imapd.settings import ImapdSettings
from portal.config import frontend_entry
from raftkv.cluster import ClusterConfig, load_cluster
from shards.control import control_addresses, control_token
from shards.model import accounts, mailbox, outbound
from shards.model.drive.records import drive_row
from smtpd.settings import SmtpdSettings

from .._http import Browser
from .._procs import Proc, wait_for
from ..cluster import launched, whole_cloud_extra

PASSWORD = "correct horse battery"
CANARY = ("{hostile}/canary", "cell")


@dataclass
class Cloud:
    """Where each door of the running cloud is, and a store client for the witnesses."""

    launcher: Proc
    cluster: ClusterConfig
    data: Path
    store: shards.Client

    @property
    def frontend(self) -> str:
        return frontend_entry(self.cluster, "")["listen"]

    @property
    def balancer(self) -> str:
        return BalancerSettings.from_cluster(self.cluster).listen

    @property
    def inbound(self) -> str:
        return SmtpdSettings.from_cluster(self.cluster).inbound

    @property
    def submission(self) -> str:
        return SmtpdSettings.from_cluster(self.cluster).submission

    @property
    def imap(self) -> str:
        return ImapdSettings.from_cluster(self.cluster).listen

    @property
    def imap_tls(self) -> str:
        return ImapdSettings.from_cluster(self.cluster).listen_tls

    @property
    def control(self) -> str:
        return control_addresses(self.cluster)["local"]

    @property
    def token(self) -> str:
        return control_token(self.cluster.secret)

    def processes(self) -> dict[str, tuple[int, bool]]:
        """The supervisor's view: name -> pid (a restarted process has a new pid)."""
        request = urllib.request.Request(f"http://{self.control}/processes",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return {p["name"]: (p["pid"], p["alive"]) for p in json.load(response)}


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    root = tmp_path_factory.mktemp("hostile")
    extra = whole_cloud_extra(frontends=1, workers=1, threads=4)
    with launched(root, extra) as (launcher, config, data):
        cluster = load_cluster(config)
        with shards.Client(cluster, timeout=10) as store:
            store.put(*CANARY, b"untouched")
            cloud = Cloud(launcher, cluster, data, store)
            wait_for(lambda: _balancer_redirects(cloud), 30, "the balancer to see the frontend")
            yield cloud


def _balancer_redirects(cloud: Cloud) -> bool:
    host, port = cloud.balancer.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status == 307
    finally:
        connection.close()


def new_account(cloud: Cloud, prefix: str) -> str:
    """An account made in the store directly: sign-up limits per address stay out of the way."""
    name = f"{prefix}{secrets.token_hex(3)}"
    accounts.create_user(cloud.store, name, PASSWORD)
    return name


def signed_in(cloud: Cloud, name: str) -> Browser:
    browser = Browser(f"http://{cloud.frontend}")
    csrf = browser.get("/login").csrf()
    page = browser.post("/login", {"csrf": csrf, "username": name, "password": PASSWORD})
    assert page.status == 200 and "/login" not in page.url, page.text[:500]
    return browser


def sid_of(browser: Browser) -> str:
    return next(c.value for c in browser.cookies if c.name == "sid")


@dataclass
class Victim:
    """A signed-in user with one file, one folder and one mail: what no probe may change."""

    name: str
    browser: Browser
    file_id: str
    folder_id: str

    @property
    def sid(self) -> str:
        return sid_of(self.browser)


@pytest.fixture(scope="session")
def victim(cloud: Cloud) -> Victim:
    name = new_account(cloud, "victim")
    browser = signed_in(cloud, name)
    page = browser.upload("/drive/upload", {"csrf": browser.get("/drive").csrf(),
                                            "folder": "root"},
                          "file", "keep.txt", b"the victim's file")
    assert page.status == 200, page.text[:500]
    page = browser.post("/drive/mkdir", {"csrf": browser.get("/drive").csrf(),
                                         "folder": "root", "name": "keep-folder"})
    file_id = re.search(r'href="/drive/([0-9a-f]{24})"[^>]*>keep.txt<', page.text).group(1)
    folder_id = re.search(r'href="/drive/d/([0-9a-f]{24})"[^>]*>keep-folder<',
                          page.text).group(1)
    host, port = cloud.inbound.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.sendmail("friend@example.org", [f"{name}@raftcloud.test"],
                      b"Subject: keep me\r\n\r\nthe victim's mail\r\n")
    assert len(mailbox.list_messages(cloud.store, name)) == 1
    return Victim(name, browser, file_id, folder_id)


def _witness(cloud: Cloud, victim: Victim) -> tuple:
    def row(name: str) -> dict:
        return {col: (cell.value, cell.version)
                for col, cell in cloud.store.get_row(name).items()}
    return (row(drive_row(victim.name)), row(mailbox.mailbox_row(victim.name)),
            row(outbound.QUEUE_ROW), cloud.store.get(*CANARY), cloud.processes())


@pytest.fixture(autouse=True)
def nothing_stored_or_lost(request: pytest.FixtureRequest) -> Iterator[None]:
    """The victim's drive and mailbox, the outbound queue, the canary cell and every
    process's pid are as they were before the probe."""
    if "cloud" not in request.fixturenames:
        yield
        return
    cloud, victim = request.getfixturevalue("cloud"), request.getfixturevalue("victim")
    before = _witness(cloud, victim)
    yield
    assert _witness(cloud, victim) == before

"""The walking skeleton end to end: `raftcloud up`, then a user's day through HTTP and SMTP."""

from __future__ import annotations

import json
import os
import re
import smtplib
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

import shards
from deploy.launcher import control_token
from raftkv import Client
from raftkv.cluster import load_cluster
from shards.control import control_addresses
from smtpd.settings import SmtpdSettings

from .._http import Browser
from .._procs import wait_for
from ..cluster import launched, whole_cloud_extra

pytestmark = pytest.mark.cluster


@pytest.fixture
def cloud(tmp_path: Path):
    extra = whole_cloud_extra()
    with launched(tmp_path, extra, config_group=True) as (launcher, config, data):
        smtp_port = int(SmtpdSettings.from_cluster(load_cluster(config)).inbound.rsplit(":", 1)[1])
        yield launcher, config, data, smtp_port


def test_a_users_day_through_the_whole_cloud(cloud) -> None:
    launcher, config, data, smtp_port = cloud
    balancer = re.search(r"web:\s+(http://\S+)", launcher.log()).group(1)

    # The balancer learns the frontends from the registry within a heartbeat or two.
    wait_for(lambda: Browser(balancer).get("/healthz").status == 200, 30, "a live frontend")
    alice = Browser(balancer)
    page = alice.get("/signup")
    assert page.status == 200 and alice.base != balancer.rstrip("/"), "the balancer redirects"
    page = alice.post("/signup", {"csrf": page.csrf(), "username": "alice",
                                  "password": "correct horse battery", "password2": "correct horse battery"})
    assert page.status == 200, page.text
    page = alice.get("/login")
    page = alice.post("/login", {"csrf": page.csrf(), "username": "alice",
                                 "password": "correct horse battery"})
    assert page.status == 200 and "/drive" in page.text and "/mail" in page.text

    content = os.urandom(2 * 1024 * 1024 + 123)
    page = alice.get("/drive")
    page = alice.upload("/drive/upload", {"csrf": page.csrf()}, "file", "photo.bin", content)
    assert page.status == 200 and "photo.bin" in page.text, page.text
    file_link = re.search(r'href="(/drive/[^"/]+)">photo.bin<', page.text).group(1)
    download = alice.get(file_link)
    assert download.status == 200 and download.body == content

    message = EmailMessage()
    message["From"] = "bob@example.test"
    message["To"] = "alice@raftcloud.test"
    message["Subject"] = "Lunch on Friday?"
    message["Message-ID"] = "<lunch-1@example.test>"
    message.set_content("Shall we?")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.send_message(message)
    inbox = alice.get("/mail")
    assert "Lunch on Friday?" in inbox.text and "bob@example.test" in inbox.text
    message_link = re.search(r'href="(/mail/[^"/]+)">Lunch on Friday\?<', inbox.text).group(1)
    assert "Shall we?" in alice.get(message_link).text

    admin = Browser(balancer)
    page = admin.get("/login")
    page = admin.post("/login", {"csrf": page.csrf(), "username": "admin",
                                 "password": (data / "admin.password").read_text().strip()})
    assert page.status == 200
    console = admin.get("/admin")
    assert console.status == 200
    for name in ("web1", "web2", "g1a", "g1b", "g1c", "ca", "cb", "cc"):
        assert name in console.text, f"{name} missing from /admin"
    assert alice.get("/admin").status == 403


def _control(config: Path, method: str, path: str):
    cluster = load_cluster(config)
    request = urllib.request.Request(f"http://{control_addresses(cluster)['local']}{path}",
                                     method=method,
                                     headers={"Authorization":
                                              f"Bearer {control_token(cluster.secret)}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def test_the_supervisor_crashes_and_restarts_a_replica(cloud) -> None:
    launcher, config, data, smtp_port = cloud
    cluster = load_cluster(config)
    with shards.Client(cluster, timeout=15) as client:
        victim = next(s["name"] for s in client.status()
                      if s["group"] == 1 and s.get("role") == "leader")
        assert _control(config, "POST", f"/processes/{victim}/stop")["did"] == "stop"
        alive = {p["name"]: p["alive"] for p in _control(config, "GET", "/processes")}
        assert alive[victim] is False
        for i in range(50):   # the other two carry on without it
            client.put(f"sup{i}", "c", b"%d" % i)
        assert _control(config, "POST", f"/processes/{victim}/start")["did"] == "start"
        target = max(s.get("applied_index", 0) for s in client.status() if s["group"] == 1)
        addr = cluster.replica(victim).client

        def recovered() -> bool:
            mine = next(s for s in client.status() if s.get("addr") == addr)
            return mine.get("applied_index", 0) >= target
        wait_for(recovered, 30, f"{victim} to recover")
    with Client([addr], cluster.secret, timeout=5) as only_victim:
        for i in range(50):
            assert only_victim.get(f"sup{i}", "c", consistency="stale").value == b"%d" % i

"""The whole cloud across six hosts, one launcher per host, faults one at a time.

Hosts are network namespaces on a private bridge (docs/testing.md): three storage
hosts (a replica of each group on each), two frontend hosts, and an edge host
with smtpd and the balancer.  An HTTP client follows the balancer, signs up,
uploads and sends mail while, one at a time, a storage host is cut off and
healed, a frontend host dies (the client goes back to the balancer and lands
on the live frontend), and a storage node is disabled and restarted from the
admin console (which goes through its host's supervisor), and the leader of
the config group (which keeps the node registry) is killed.  Afterwards every acknowledged upload and mail is
there, byte for byte.  Where namespaces are refused, the hosts are loopback
addresses and the cut-off host is paused instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

import shards
from deploy.launcher import control_token
from raftkv.cluster import load_cluster
from shards.control import control_addresses

from .._http import Browser
from .._procs import NO_DNS, SECRET, wait_for
from ..cluster import Hosts
from ..netns import NetnsLab

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HOSTS = ["store1", "store2", "store3", "web1", "web2", "edge"]
PASSWORD = "correct horse battery"


def _cluster_file(ip: dict[str, str]) -> str:
    lines = ['[cluster]', 'name = "hosts"', 'secret_file = "secret"',
             'domains = ["raftcloud.test"]', "", "[control]"]
    lines += [f'{h} = "{ip[h]}:7000"' for h in HOSTS]
    lines += ["", "[config_group]", "replica = ["]
    for r, host in zip("abc", HOSTS[:3], strict=True):
        lines.append(f'  {{name = "c{r}", raft = "{ip[host]}:7101", '
                     f'client = "{ip[host]}:7201", host = "{host}"}},')
    lines.append("]")
    for g, (raft, client) in enumerate([(7111, 7211), (7121, 7221)], start=1):
        lines += ["", "[[group]]", f"id = {g}", "replica = ["]
        for r, host in zip("abc", HOSTS[:3], strict=True):
            lines.append(f'  {{name = "g{g}{r}", raft = "{ip[host]}:{raft}", '
                         f'client = "{ip[host]}:{client}", host = "{host}"}},')
        lines.append("]")
    for web in ("web1", "web2"):
        lines += ["", "[[frontend]]", f'name = "{web}"', f'listen = "{ip[web]}:8001"',
                  "workers = 1", "threads = 4", f'host = "{web}"']
    lines += ["", "[smtpd]", 'name = "smtpd"', f'inbound = "{ip["edge"]}:2525"',
              f'submission = "{ip["edge"]}:2587"', f'resolver = "{NO_DNS}"', 'host = "edge"',
              "", "[balancer]", 'name = "balancer"', f'listen = "{ip["edge"]}:8000"',
              'host = "edge"', ""]
    return "\n".join(lines)


class Cloud(Hosts):
    def __init__(self, root: Path, lab: NetnsLab | None) -> None:
        self.lab = lab
        if lab is not None:
            self.ns = dict(zip(HOSTS, lab.hosts, strict=True))
            self.ip = {h: lab.address(self.ns[h]) for h in HOSTS}
        else:
            self.ip = {h: f"127.0.{os.getpid() % 200 + 20}.{i}" for i, h in enumerate(HOSTS, 1)}
        root.mkdir(parents=True, exist_ok=True)
        (root / "secret").write_bytes(SECRET)
        self.config = root / "cluster.toml"
        self.config.write_text(_cluster_file(self.ip))
        self.cluster = load_cluster(self.config)
        super().__init__(root, self.config, HOSTS,
                         lambda host: lab.exec_prefix(self.ns[host]) if lab else [])

    def kill_host(self, host: str) -> None:
        """The machine dies: every process on it, at once."""
        if self.lab is not None:
            pids = subprocess.run(["ip", "netns", "pids", self.ns[host]], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.split()
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
        else:
            for proc in self._host_processes(host):
                os.killpg(proc, signal.SIGKILL)
            self.launchers[host].kill()

    def _host_processes(self, host: str) -> list[int]:
        return [p["pid"] for p in self.control(host, "GET", "/processes") if p.get("alive")]

    def control(self, host: str, method: str, path: str):
        request = urllib.request.Request(
            f"http://{control_addresses(self.cluster)[host]}{path}", method=method,
            headers={"Authorization": f"Bearer {control_token(self.cluster.secret)}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def cut_off(self, host: str) -> None:
        if self.lab is not None:
            self.lab.isolate(self.ns[host])
        else:
            for pid in self._host_processes(host):
                os.killpg(pid, signal.SIGSTOP)

    def heal(self, host: str) -> None:
        if self.lab is not None:
            self.lab.heal()
        else:
            for pid in self._host_processes(host):
                os.killpg(pid, signal.SIGCONT)



@pytest.fixture
def cloud(tmp_path):
    lab = NetnsLab(len(HOSTS)) if NetnsLab.available() else None
    if lab is not None:
        lab.up()
    cloud = Cloud(tmp_path / "cloud", lab)
    try:
        cloud.start()
        yield cloud
    except BaseException:
        print(cloud.logs())
        raise
    finally:
        cloud.stop()
        if lab is not None:
            lab.down()


class User:
    """A person with an HTTP client, who enters through the balancer."""

    def __init__(self, cloud: Cloud, name: str, password: str = PASSWORD) -> None:
        self.cloud, self.name, self.password = cloud, name, password
        self.balancer = f"http://{cloud.ip['edge']}:8000"
        self.browser: Browser | None = None

    def enter(self, *, signup: bool = False) -> str:
        """Follow the balancer to a live frontend and log in; the frontend's address."""
        def landed() -> Browser | None:
            browser = Browser(self.balancer)
            page = browser.get("/login")
            return browser if page.status == 200 else None
        self.browser = wait_for(landed, 60, "the balancer to send us to a live frontend",
                                interval=0.5)
        if signup:
            page = self.browser.get("/signup")
            page = self.browser.post("/signup", {"csrf": page.csrf(), "username": self.name,
                                                 "password": self.password,
                                                 "password2": self.password})
            assert page.status == 200, page.text
        page = self.browser.get("/login")
        page = self.browser.post("/login", {"csrf": page.csrf(), "username": self.name,
                                            "password": self.password})
        assert page.status == 200 and "/drive" in page.text, page.text
        return self.browser.base

    def upload(self, filename: str, content: bytes) -> None:
        assert self.browser is not None
        page = self.browser.get("/drive")
        page = self.browser.upload("/drive/upload", {"csrf": page.csrf()}, "file", filename,
                                   content)
        assert page.status == 200 and filename in page.text, page.text

    def download(self, filename: str) -> bytes:
        assert self.browser is not None
        listing = self.browser.get("/drive").text
        link = re.search(rf'href="(/drive/[^"]+)"[^>]*>\s*{re.escape(filename)}\s*<', listing)
        assert link, f"{filename} is not listed"
        page = self.browser.get(link.group(1))
        assert page.status == 200
        return page.body

    def admin_action(self, replica: str, action: str) -> None:
        """Press a replica's Disable or Restart button in /admin."""
        assert self.browser is not None
        console = self.browser.get("/admin")
        assert console.status == 200 and replica in console.text
        page = self.browser.post(f"/admin/nodes/{replica}/{action}", {"csrf": console.csrf()})
        assert page.status == 200, page.text  # back on /admin after the redirect

    def inbox(self) -> str:
        assert self.browser is not None
        return self.browser.get("/mail").text


def _alive(cloud: Cloud, host: str, name: str) -> bool:
    return any(p["name"] == name and p["alive"] for p in cloud.control(host, "GET", "/processes"))


def _mail(cloud: Cloud, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "bob@example.test"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.test>"
    message.set_content(f"body of {subject}")
    with smtplib.SMTP(cloud.ip["edge"], 2525, timeout=30) as smtp:
        smtp.send_message(message)


def test_a_users_work_survives_one_fault_after_another(cloud) -> None:
    alice = User(cloud, "alice")
    alice.enter(signup=True)
    acked: dict[str, bytes] = {}
    mails: list[str] = []

    def work(step: str) -> None:
        content = os.urandom(300_000) + step.encode()
        alice.upload(f"{step}.bin", content)
        acked[f"{step}.bin"] = content
        _mail(cloud, "alice@raftcloud.test", f"mail {step}")
        mails.append(f"mail {step}")

    work("before")

    # A storage host is cut off (its two replicas with it), then healed.
    cloud.cut_off("store1")
    work("store1-cut")
    cloud.heal("store1")
    work("store1-healed")

    # A frontend host dies: the client goes back to the balancer.
    first = alice.browser.base
    dead = "web1" if cloud.ip["web1"] in first else "web2"
    cloud.kill_host(dead)
    landed = alice.enter()
    assert cloud.ip[dead] not in landed, "the balancer sent us to the dead frontend"
    work("frontend-dead")

    # A storage node disabled (kill -9) and restarted from the admin console,
    # which asks the node's host supervisor.
    admin = User(cloud, "admin", password="admin-password-1")
    admin.enter()
    admin.admin_action("g1b", "disable")
    assert not _alive(cloud, "store2", "g1b")
    work("g1b-disabled")
    admin.admin_action("g1b", "restart")
    wait_for(lambda: _alive(cloud, "store2", "g1b"), 30, "g1b to run again")
    work("g1b-restarted")

    # The config group's leader (it keeps the node registry) dies and comes back.
    with shards.Client(cloud.cluster) as client:
        leader = next(s["name"] for s in client.status()
                      if s["group"] == 0 and s.get("role") == "leader")
    host = cloud.cluster.replica(leader).host
    cloud.control(host, "POST", f"/processes/{leader}/stop")
    work("config-leader-dead")
    alice.enter()  # the balancer still finds the frontends in the registry
    work("config-leader-dead-again")
    cloud.control(host, "POST", f"/processes/{leader}/start")

    for filename, content in acked.items():
        assert alice.download(filename) == content, filename
    inbox = alice.inbox()
    for subject in mails:
        assert subject in inbox, subject

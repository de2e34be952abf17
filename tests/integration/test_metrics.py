"""Metrics of a live cloud (`raftcloud up --metrics`): every process kind's exposition
passes Debian's promtool, Debian's prometheus scrapes them all with the configuration
the launcher wrote, and no label or help text names a user, a file or a path."""

from __future__ import annotations

import json
import random
import re
import secrets
import shutil
import smtplib
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from email.message import EmailMessage
from pathlib import Path

import pytest

from raftkv.cluster import load_cluster
from raftkv.metrics import SCRAPE_FILE
from smtpd.settings import SmtpdSettings

from .._http import Browser
from .._procs import Proc, free_port, wait_for
from ..cluster import launched, whole_cloud_extra

pytestmark = pytest.mark.cluster

PROCESSES = 10  # config group 3, group 1 3, one frontend, smtpd, imapd, balancer
KINDS = {"config", "storage", "frontend", "smtpd", "imapd", "balancer"}
# Series each kind must show once the cloud has served a user (see the test below).
EXPECTED = {
    "config": ["raftkv_raft_role", "raftkv_commit_index", "raftkv_applied_index",
               "raftkv_fsync_seconds_bucket"],
    "storage": ["raftkv_raft_role", "raftkv_term", "raftkv_commit_index",
                "raftkv_fsync_seconds_bucket", "raftkv_apply_seconds_bucket",
                "raftkv_batch_commands_bucket", "raftkv_requests_total",
                "raftkv_tick_gap_seconds_bucket", "raftkv_blob_keeper_blob_bytes",
                "raftkv_blob_gc_rounds_total", "raftkv_config_num", "raftkv_shards_incoming"],
    "frontend": ["portal_http_requests_total", "portal_http_request_seconds_bucket"],
    "smtpd": ["smtpd_sessions_total", "smtpd_received_messages_total"],
    "imapd": ["imapd_sessions_open", "imapd_command_seconds_bucket"],
    "balancer": ["balancer_answers_total", "balancer_live_frontends"],
}


def _free_range(count: int) -> int:
    """A base port with ``count`` free ports from it, below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(20_000, 32_768 - count)
        try:
            for port in range(base, base + count):
                with closing(socket.socket()) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports in a row")


def _targets(data: Path) -> list[tuple[str, str, str]]:
    """(name, kind, address) of every process in the scrape configuration written by up."""
    text = (data / SCRAPE_FILE).read_text()
    return [(name, kind, addr) for addr, name, kind in re.findall(
        r'targets: \["([^"]+)"\]\s+labels: \{process: "([^"]+)", kind: "([^"]+)"\}', text)]


def _scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as response:
        return response.read().decode()


def _series(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
            if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """A whole cloud with metrics on, and a user with a distinctive name who has uploaded
    a file with a distinctive name and received a mail: (data dir, the names to hide)."""
    tmp = tmp_path_factory.mktemp("metrics")
    extra = whole_cloud_extra(frontends=1) + f"\n[metrics]\nbase_port = {_free_range(PROCESSES)}\n"
    with launched(tmp, extra, config_group=True, args=["--metrics"]) as (launcher, config, data):
        balancer = re.search(r"web:\s+(http://\S+)", launcher.log()).group(1)
        assert f"scrape configuration in {data / SCRAPE_FILE}" in launcher.log()
        user = f"quokka{secrets.token_hex(4)}"
        file_name = f"treasuremap{secrets.token_hex(4)}.txt"
        wait_for(lambda: Browser(balancer).get("/healthz").status == 200, 30, "a live frontend")
        browser = Browser(balancer)
        page = browser.get("/signup")
        page = browser.post("/signup", {"csrf": page.csrf(), "username": user,
                                        "password": "correct horse battery",
                                        "password2": "correct horse battery"})
        assert page.status == 200, page.text
        page = browser.get("/drive")
        page = browser.upload("/drive/upload", {"csrf": page.csrf()}, "file", file_name,
                              b"x" * 70_000)
        assert page.status == 200 and file_name in page.text
        file_link = re.search(rf'href="(/drive/[^"/]+)">{file_name}<', page.text).group(1)
        assert browser.get(file_link).status == 200
        message = EmailMessage()
        message["From"] = "bob@example.test"
        message["To"] = f"{user}@raftcloud.test"
        message["Subject"] = f"About {file_name}"
        message.set_content("See the map.")
        smtp_addr = SmtpdSettings.from_cluster(load_cluster(config)).inbound.rsplit(":", 1)
        with smtplib.SMTP(smtp_addr[0], int(smtp_addr[1]), timeout=30) as smtp:
            smtp.send_message(message)
        yield data, (user, file_name, file_link.rsplit("/", 1)[1])


def test_promtool_passes_every_process_kinds_exposition(cloud) -> None:
    data, _ = cloud
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian package prometheus)")
    targets = _targets(data)
    assert len(targets) == PROCESSES and {kind for _, kind, _ in targets} == KINDS
    seen: dict[str, set[str]] = {}
    for name, kind, addr in targets:
        exposition = _scrape(addr)
        done = subprocess.run([promtool, "check", "metrics"], input=exposition,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        missing = [s for s in EXPECTED[kind] if s not in _series(exposition)]
        assert not missing, f"{name} ({kind}) lacks {missing}"
        seen.setdefault(kind, set()).update(_series(exposition))
    # A request histogram has a series once a request was timed: a config replica no
    # client happened to ask has none, so the kind must show it, not every replica.
    assert "raftkv_request_seconds_bucket" in seen["config"]
    leaders = [addr for _, kind, addr in targets if kind == "storage"
               if 'raftkv_raft_role{group="1",role="leader"} 1.0' in _scrape(addr)]
    assert len(leaders) == 1


def test_prometheus_scrapes_the_cloud_with_the_written_configuration(cloud, tmp_path) -> None:
    data, _ = cloud
    server = shutil.which("prometheus")
    if server is None:
        pytest.fail("prometheus is missing (Debian package prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text((data / SCRAPE_FILE).read_text().replace("15s", "1s"))
    addr = f"127.0.0.1:{free_port()}"
    prometheus = Proc("prometheus", [server, f"--config.file={config}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address={addr}"], tmp_path).start()

    def query(expr: str) -> list[dict]:
        url = f"http://{addr}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            response = urllib.request.urlopen(url, timeout=10)
        except urllib.error.HTTPError as err:  # 503 while it starts: close its socket now
            with err:
                raise AssertionError(f"prometheus answered {err.code}") from None
        with response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    try:
        wait_for(lambda: len(query("up == 1")) == PROCESSES, 60, "every target up")
        leaders = query('sum by (group) (raftkv_raft_role{role="leader"})')
        assert {r["metric"]["group"]: r["value"][1] for r in leaders} == {"0": "1", "1": "1"}
        commits = query("raftkv_commit_index > 0")
        assert len(commits) == 6 and {r["metric"]["kind"] for r in commits} == {"config",
                                                                             "storage"}
        routes = {r["metric"]["route"] for r in query("portal_http_requests_total")}
        assert {"signup", "drive_upload", "drive_download", "healthz"} <= routes
        assert len(query('raftkv_fsync_seconds_count{kind="storage"} > 0')) == 3
        # group 1's leader began configuration 1 (the cluster file's map) when the cloud started
        assert query('sum(shards_reconfig_steps_total{step="began"}) >= 1')
    except BaseException:
        print(prometheus.log())
        raise
    finally:
        prometheus.stop()


def test_no_exposition_names_a_user_or_a_file(cloud) -> None:
    data, secrets_ = cloud
    for name, _, addr in _targets(data):
        exposition = _scrape(addr).lower()
        for secret in secrets_:
            assert secret.lower() not in exposition, f"{name} shows {secret!r}"
        assert "/drive" not in exposition and "/mail" not in exposition

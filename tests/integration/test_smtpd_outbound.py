"""Mail out: submission over STARTTLS, MX lookups, retries, bounces, a killed smtpd.

Everything stays on loopback: dnsmasq on 127.0.0.1 answers MX and A records
for ``*.test`` (docs/testing.md), and aiosmtpd servers on 127.0.0.25-28 play the
remote exchangers, all on one port that smtpd is told is "port 25".
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from deploy.tls import ensure_certificate
from shards.model import accounts, mailbox, outbound
from smtpd.server import SmtpServer

from .._mail import local_dns, with_tables
from .._procs import NO_DNS, Proc, free_port, port_open, python_cmd, wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
DOWN_MX = "127.0.0.29"   # an exchanger nobody listens on


class Remote:
    """A remote exchanger: records what it accepts; may greylist or refuse."""

    def __init__(self, mode: str = "accept") -> None:
        self.mode = mode
        self.received: list[tuple[str, list[str], bytes, str]] = []
        self.attempts = 0
        self._greylisted: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.attempts += 1
        if self.mode == "reject":
            return "550 5.1.1 No such mailbox here"
        if self.mode == "greylist" and address not in self._greylisted:
            self._greylisted.add(address)
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.mode == "slow":
            await asyncio.sleep(1.0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content, session.host_name))
        return "250 OK: queued remotely"

    def message_ids(self) -> list[str]:
        return [mailbox.parse_headers(raw).message_id for _, _, raw, _ in self.received]


@pytest.fixture(scope="module")
def remotes():
    port = free_port()
    servers = {"127.0.0.25": Remote(), "127.0.0.26": Remote(), "127.0.0.27": Remote("greylist"),
               "127.0.0.28": Remote("reject"), "127.0.0.30": Remote("slow")}
    controllers = [Controller(handler, hostname=ip, port=port) for ip, handler in servers.items()]
    for controller in controllers:
        controller.start()
    try:
        yield port, servers
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    records = [
        "--mx-host=example.test,mx1.example.test,10", "--mx-host=example.test,mx2.example.test,20",
        "--host-record=mx1.example.test,127.0.0.25", "--host-record=mx2.example.test,127.0.0.26",
        # the first exchanger is down: the second one must get the mail
        "--mx-host=fallback.test,mx1.fallback.test,10", "--mx-host=fallback.test,mx2.fallback.test,20",
        f"--host-record=mx1.fallback.test,{DOWN_MX}", "--host-record=mx2.fallback.test,127.0.0.26",
        "--mx-host=grey.test,mx.grey.test,10", "--host-record=mx.grey.test,127.0.0.27",
        "--mx-host=reject.test,mx.reject.test,10", "--host-record=mx.reject.test,127.0.0.28",
        "--mx-host=slow.test,mx.slow.test,10", "--host-record=mx.slow.test,127.0.0.30",
        # no MX at all: the A record is the implicit exchanger (RFC 5321 5.1)
        "--host-record=plain.test,127.0.0.25",
    ]
    with local_dns(tmp_path_factory.mktemp("dns"), records) as address:
        yield address


class Smtpd:
    """smtpd as a real process, with its own cluster file beside the shared store's."""

    def __init__(self, kv_cluster, root: Path, resolver: str, remote_port: int) -> None:
        self.inbound = f"127.0.0.1:{free_port()}"
        self.submission = f"127.0.0.1:{free_port()}"
        self.cert, key = ensure_certificate(root / "tls", "mx.raftcloud.test")
        config = root / "cluster.toml"
        config.write_text(kv_cluster.path.read_text() + f"""
[smtpd]
name = "smtpd-out"
inbound = "{self.inbound}"
submission = "{self.submission}"
hostname = "mx.raftcloud.test"
resolver = "{resolver}"
remote_port = {remote_port}
queue_poll = 0.2
queue_lease = 2.0
retry_base = 0.3
max_attempts = 3
greeting_timeout = 10
allow_private_exchangers = true  # the "remote" exchangers are on 127.0.0.25+

[mail]
new_account_send_per_hour = 1000  # these tests' accounts are minutes old and send a lot
""")
        (root / "secret").write_bytes((kv_cluster.path.parent / "secret").read_bytes())
        self.proc = Proc("smtpd", python_cmd("smtpd.server", "--config", str(config),
                                             "--tls-cert", str(self.cert), "--tls-key", str(key)),
                         root)

    def start(self) -> None:
        self.proc.start()
        wait_for(lambda: port_open(self.submission), 20, "smtpd to listen")

    def connect(self, user: str, password: str = PASSWORD) -> smtplib.SMTP:
        host, port = self.submission.rsplit(":", 1)
        smtp = smtplib.SMTP(host, int(port), timeout=30)
        try:
            smtp.starttls(context=ssl.create_default_context(cafile=str(self.cert)))
            smtp.login(user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp


@pytest.fixture(scope="module")
def users(client):
    names = [f"{who}{secrets.token_hex(3)}" for who in ("alice", "bob")]
    for name in names:
        accounts.create_user(client, name, PASSWORD)
    return names


@pytest.fixture(scope="module")
def smtpd(kv_cluster, tmp_path_factory, dns_server, remotes):
    server = Smtpd(kv_cluster, tmp_path_factory.mktemp("smtpd"), dns_server, remotes[0])
    server.start()
    try:
        yield server
    except BaseException:
        print(server.proc.log())
        raise
    finally:
        server.proc.stop()


def _message(sender: str, to: list[str], subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="raftcloud.test")
    msg.set_content(f"body of {subject}\n")
    return msg


def _in_folder(client, user: str, subject: str, folder: str = "inbox") -> list:
    return [m for m in mailbox.list_messages(client, user, folder) if subject in m.subject]


def _one_copy_here_and_delivered(client, sender: str, local: str, msg: EmailMessage,
                                 remote) -> None:
    """One copy in the local recipient's inbox and the sender's Sent; the remote got it."""
    subject = msg["Subject"]
    assert len(_in_folder(client, local, subject)) == 1
    assert len(_in_folder(client, sender, subject, "sent")) == 1
    wait_for(lambda: msg["Message-ID"] in remote.message_ids(), 20, "the remote delivery")


def test_submission_over_starttls_reaches_local_and_remote_users(client, users, smtpd, remotes):
    alice, bob = users
    subject = f"plans {secrets.token_hex(3)}"
    msg = _message(f"{alice}@raftcloud.test", [f"{bob}@raftcloud.test", "carol@example.test"],
                   subject)
    with smtpd.connect(alice) as smtp:
        smtp.send_message(msg)
    mx1 = remotes[1]["127.0.0.25"]
    _one_copy_here_and_delivered(client, alice, bob, msg, mx1)
    mail_from, rcpts, raw, ehlo = next(r for r in mx1.received
                                       if msg["Message-ID"].encode() in r[2])
    assert (mail_from, rcpts, ehlo) == (f"{alice}@raftcloud.test", ["carol@example.test"],
                                        "mx.raftcloud.test")
    assert b"Received: from" in raw and subject.encode() in raw


@pytest.mark.parametrize("domain, exchanger", [("fallback.test", "127.0.0.26"),
                                               ("plain.test", "127.0.0.25")])
def test_the_right_exchanger_gets_the_mail(client, users, smtpd, remotes, domain, exchanger):
    alice = users[0]
    msg = _message(f"{alice}@raftcloud.test", [f"dave@{domain}"], f"via {domain}")
    with smtpd.connect(alice) as smtp:
        smtp.send_message(msg)
    server = remotes[1][exchanger]
    wait_for(lambda: msg["Message-ID"] in server.message_ids(), 20, f"delivery via {exchanger}")


def test_a_greylisting_remote_gets_the_mail_on_a_retry(users, smtpd, remotes):
    alice = users[0]
    grey = remotes[1]["127.0.0.27"]
    msg = _message(f"{alice}@raftcloud.test", ["erin@grey.test"], "greylisted")
    with smtpd.connect(alice) as smtp:
        smtp.send_message(msg)
    wait_for(lambda: msg["Message-ID"] in grey.message_ids(), 20, "the retried delivery")
    assert grey.attempts >= 2 and grey.message_ids().count(msg["Message-ID"]) == 1


@pytest.mark.parametrize("rcpt", ["frank@reject.test", "gina@nonexistent.test"])
def test_an_undeliverable_message_bounces_to_the_sender(client, users, smtpd, rcpt):
    alice = users[0]
    subject = f"doomed {secrets.token_hex(3)}"
    with smtpd.connect(alice) as smtp:
        smtp.send_message(_message(f"{alice}@raftcloud.test", [rcpt], subject))

    def bounced():
        return [m for m in _in_folder(client, alice, "Undelivered Mail")
                if rcpt.encode() in (mailbox.get_message(client, alice, m.id) or b"")]
    found = wait_for(bounced, 20, "the bounce")
    raw = mailbox.get_message(client, alice, found[0].id)
    assert subject.encode() in raw and b"MAILER-DAEMON" in raw


def test_a_retried_submission_leaves_one_copy_in_each_of_our_mailboxes(client, users, smtpd,
                                                                        remotes):
    alice, bob = users
    subject = f"twice {secrets.token_hex(3)}"
    msg = _message(f"{alice}@raftcloud.test", [f"{bob}@raftcloud.test", "hal@example.test"],
                   subject)
    for _ in range(2):   # a client that never saw the first 250 sends again
        with smtpd.connect(alice) as smtp:
            smtp.send_message(msg)
    mx1 = remotes[1]["127.0.0.25"]
    _one_copy_here_and_delivered(client, alice, bob, msg, mx1)


def test_killing_smtpd_mid_queue_loses_nothing(client, users, smtpd, remotes):
    alice = users[0]
    slow = remotes[1]["127.0.0.30"]
    ids = []
    for i in range(4):
        msg = _message(f"{alice}@raftcloud.test", [f"ivy{i}@slow.test"], f"queued {i}")
        with smtpd.connect(alice) as smtp:
            smtp.send_message(msg)
        ids.append(msg["Message-ID"])
    wait_for(lambda: slow.received, 20, "the first slow delivery")
    smtpd.proc.kill()                    # mid-queue: one delivery is likely in flight
    smtpd.start()                        # a new worker; leases of the dead one expire
    wait_for(lambda: set(ids) <= set(slow.message_ids()), 60, "every queued message")
    wait_for(lambda: not [e for e in outbound.pending(client) if "slow.test" in
                          " ".join(e.recipients)], 20, "the queue to drain")


def test_swaks_delivers_to_a_local_user(client, users, smtpd):
    if shutil.which("swaks") is None:
        pytest.fail("swaks is missing: `make test` installs it")
    bob = users[1]
    subject = f"swaks {secrets.token_hex(3)}"
    host, port = smtpd.inbound.rsplit(":", 1)
    done = subprocess.run(["swaks", "--server", host, "--port", port, "--from", "x@example.org",
                           "--to", f"{bob}@raftcloud.test", "--header", f"Subject: {subject}",
                           "--body", "sent by swaks"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_in_folder(client, bob, subject)) == 1


def test_plaintext_auth_only_on_loopback_and_only_when_configured(kv_cluster, client, users):
    alice, bob = users
    settings = {"name": f"smtpd-plain-{secrets.token_hex(2)}", "resolver": NO_DNS,
                "inbound": f"127.0.0.1:{free_port()}",
                "submission": f"127.0.0.1:{free_port()}", "plaintext_auth_on_loopback": True}
    # alice has sent more this hour than a young account may: lift the cap, as the file above does.
    cluster = with_tables(kv_cluster.cluster, smtpd=settings,
                          mail={"new_account_send_per_hour": 1000})
    # Not on a loopback address, and no certificate: the port stays closed.
    public = {**settings, "submission": f"0.0.0.0:{free_port()}"}
    unstarted = SmtpServer(with_tables(kv_cluster.cluster, smtpd=public), client)
    assert unstarted.submission is None
    unstarted.inbound.loop.close()  # aiosmtpd makes its loop up front; this one never ran
    server = SmtpServer(cluster, client, hostname="mx.raftcloud.test")
    server.start()
    try:
        host, port = settings["submission"].rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.login(alice, PASSWORD)  # no STARTTLS: allowed here only
            smtp.send_message(_message(f"{alice}@raftcloud.test", [f"{bob}@raftcloud.test"],
                                       "over loopback"))
    finally:
        server.stop()
    assert _in_folder(client, bob, "over loopback")

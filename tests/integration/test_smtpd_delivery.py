"""Inbound SMTP against the real store: smtplib in, mailbox.list_messages out."""

from __future__ import annotations

import secrets
import signal
import smtplib
import sys
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from shards.model import accounts, mailbox
from shards.model.registry import list_nodes
from smtpd.settings import SmtpdSettings

from .._mail import inprocess_smtpd
from .._procs import NO_DNS, Proc, free_port, port_open, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def users(client):
    """Two fresh accounts; names are unique because the store is shared by the session."""
    names = [f"{who}{secrets.token_hex(3)}" for who in ("alice", "bob")]
    for name in names:
        accounts.create_user(client, name, "correct horse battery")
    return names


@pytest.fixture(scope="module")
def smtp_addr(kv_cluster, client):
    with inprocess_smtpd(kv_cluster.cluster, client) as settings:
        yield settings


def _message(to: str, subject: str, message_id: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(f"body of {subject}\n")
    return msg


def _send(settings: SmtpdSettings, msg: EmailMessage, rcpts: list[str]) -> dict:
    host, port = settings.inbound.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        return smtp.send_message(msg, from_addr="sender@example.org", to_addrs=rcpts)


def test_mail_to_a_local_user_lands_in_the_inbox(client, users, smtp_addr):
    alice = users[0]
    subject = f"hello {secrets.token_hex(4)}"
    _send(smtp_addr, _message(f"{alice}@raftcloud.test", subject, make_msgid()),
          [f"{alice}@raftcloud.test"])
    found = [m for m in mailbox.list_messages(client, alice) if m.subject == subject]
    assert len(found) == 1
    summary = found[0]
    assert summary.sender == "Sender <sender@example.org>"
    assert summary.unread and summary.folder == "inbox"
    raw = mailbox.get_message(client, alice, summary.id)
    assert raw is not None and summary.size == len(raw)
    assert raw.startswith(b"Return-Path: <sender@example.org>\r\nReceived: from ")
    assert f"for <{alice}@raftcloud.test>".encode() in raw
    assert f"body of {subject}".encode() in raw


def test_a_duplicate_message_id_is_stored_once(client, users, smtp_addr):
    alice = users[0]
    subject, msgid = f"dup {secrets.token_hex(4)}", make_msgid()
    for _ in range(2):  # a sender retrying after a lost 250, say
        _send(smtp_addr, _message(f"{alice}@raftcloud.test", subject, msgid),
              [f"{alice}@raftcloud.test"])
    assert len([m for m in mailbox.list_messages(client, alice) if m.subject == subject]) == 1


def test_each_account_gets_one_copy_however_it_is_addressed(client, users, smtp_addr):
    alice, bob = users
    subject = f"multi {secrets.token_hex(4)}"
    rcpts = [f"{alice}@raftcloud.test", f"{alice.upper()}@RaftCloud.test", f"{bob}@raftcloud.test"]
    _send(smtp_addr, _message(", ".join(rcpts), subject), rcpts)  # no Message-ID: no dedup help
    for user in users:
        assert len([m for m in mailbox.list_messages(client, user) if m.subject == subject]) == 1


def test_smtpd_registers_itself(client, smtp_addr):
    def registered():
        return [n for n in list_nodes(client, "smtpd") if n.name == smtp_addr.name and n.alive]
    node = wait_for(registered, 10, "the smtpd heartbeat")[0]
    assert node.addr == smtp_addr.inbound


def test_entry_point_serves_and_stops_on_sigterm(kv_cluster, client, users, tmp_path):
    """raftcloud-smtpd as a real process, configured by a cluster file."""
    name, inbound = f"smtpd-{secrets.token_hex(3)}", f"127.0.0.1:{free_port()}"
    # Beside the fixture's file, so that its relative secret_file still resolves.
    path = kv_cluster.path.with_name(f"{name}.toml")
    path.write_text(kv_cluster.path.read_text()
                    + f'\n[smtpd]\nname = "{name}"\ninbound = "{inbound}"\nresolver = "{NO_DNS}"\n')
    proc = Proc(name, [sys.executable, "-m", "smtpd.server", "--config", str(path),
                       "--hostname", "mx.raftcloud.test"], tmp_path).start()
    try:
        wait_for(lambda: port_open(inbound), 20, "raftcloud-smtpd to listen")
        subject = f"via process {secrets.token_hex(4)}"
        _send(SmtpdSettings(name=name, inbound=inbound),
              _message(f"{users[1]}@raftcloud.test", subject), [f"{users[1]}@raftcloud.test"])
        assert [m.subject for m in mailbox.list_messages(client, users[1])].count(subject) == 1
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0, proc.log()
        assert not port_open(inbound)
    finally:
        proc.stop()
    assert f"smtpd {name} stopped" in proc.log()

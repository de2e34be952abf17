"""Mail authentication against real DNS and real SMTP, all on loopback.

dnsmasq publishes a test sender's SPF, DKIM key and DMARC policy, and the
record ``raftkv-ctl dkim-record`` prints for our own domain; strangers send
from 127.0.0.3 (which the sender's SPF allows) and 127.0.0.4 (which nothing
allows); an aiosmtpd on 127.0.0.25 plays a remote exchanger for outbound mail.
"""

from __future__ import annotations

import json
import os
import secrets
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import dkim
import dns.resolver
import pytest
from aiosmtpd.controller import Controller

from shards.model import accounts, dkimkeys, mailbox

from .._mail import inprocess_smtpd, local_dns
from .._procs import free_port, wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
ALLOWED, FORGER = "127.0.0.3", "127.0.0.4"   # strangers: not among the cluster's hosts
SELECTOR = "t2025"
# A tool run from another directory still imports this checkout's code.
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


class Remote:
    """A remote exchanger that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
        self.received.append(envelope.original_content)
        return "250 OK"


def ctl(kv_cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shards.cli", "--config", str(kv_cluster.path),
                           *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def sender_key() -> dkimkeys.DkimKey:
    """The test sender's own key (a stranger's: not the cluster's)."""
    return dkimkeys.DkimKey("sender.test", SELECTOR, dkimkeys._new_pem(), 0.0)


@pytest.fixture(scope="module")
def our_record(kv_cluster) -> dict:
    result = ctl(kv_cluster, "--json", "dkim-record")
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    return record


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory, sender_key, our_record):
    key_name, key_text = dkimkeys.dns_record(sender_key)
    records = [
        f"--txt-record=sender.test,v=spf1 ip4:{ALLOWED} -all",
        f"--txt-record={key_name.rstrip('.')},{key_text}",
        "--txt-record=_dmarc.sender.test,v=DMARC1; p=reject",
        "--txt-record=_dmarc.bank.test,v=DMARC1; p=reject; rua=mailto:d@bank.test",
        "--txt-record=forger.test,v=spf1 -all",
        f"--txt-record={our_record['name'].rstrip('.')},{our_record['value']}",
        "--mx-host=far.test,mx.far.test,10", "--host-record=mx.far.test,127.0.0.25",
    ]
    with local_dns(tmp_path_factory.mktemp("dns"), records) as address:
        yield address


@pytest.fixture(scope="module")
def remote():
    port, handler = free_port(), Remote()
    controller = Controller(handler, hostname="127.0.0.25", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def smtpd(kv_cluster, client, dns_server, remote):
    with inprocess_smtpd(kv_cluster.cluster, client, resolver=dns_server,
                         submission=f"127.0.0.1:{free_port()}", plaintext_auth_on_loopback=True,
                         remote_port=remote[0], queue_poll=0.2, dns_timeout=2.0) as settings:
        yield settings


@pytest.fixture(scope="module")
def bob(client) -> str:
    name = f"bob{secrets.token_hex(3)}"
    accounts.create_user(client, name, PASSWORD)
    return name


def _send_from(source: str, inbound: str, mail_from: str, raw: bytes, rcpt: str) -> None:
    host, port = inbound.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=60, local_hostname="mail.sender.test",
                      source_address=(source, 0)) as smtp:
        smtp.sendmail(mail_from, [rcpt], raw)


def _raw(sender: str, to: str, subject: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"], message["Message-ID"] = formatdate(), make_msgid(domain="sender.test")
    message.set_content("Dear Bob,\n\nthe figures are attached.\n")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def _stored(client, user: str, subject: str, folder: str) -> bytes:
    [found] = [m for m in mailbox.list_messages(client, user, folder) if m.subject == subject]
    return mailbox.get_message(client, user, found.id) or b""


def test_signed_mail_from_an_allowed_host_passes_and_lands_in_the_inbox(
        client, smtpd, bob, sender_key):
    subject = f"figures {secrets.token_hex(3)}"
    raw = _raw("Ann <ann@sender.test>", f"{bob}@raftcloud.test", subject)
    signed = dkim.sign(raw, SELECTOR.encode(), b"sender.test", sender_key.private_pem,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    _send_from(ALLOWED, smtpd.inbound, "ann@sender.test", signed + raw, f"{bob}@raftcloud.test")
    stored = _stored(client, bob, subject, "inbox")
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert head.count("Authentication-Results:") == 1
    assert "Authentication-Results: mx.raftcloud.test;\r\n\tspf=pass smtp.mailfrom=sender.test;" \
        "\r\n\tdkim=pass header.d=sender.test header.s=t2025;" \
        "\r\n\tdmarc=pass (p=reject dis=none) header.from=sender.test\r\n" in head
    assert not [m for m in mailbox.list_messages(client, bob, "junk") if m.subject == subject]


def test_a_forged_from_of_a_reject_domain_lands_in_junk(client, smtpd, bob):
    subject = f"urgent wire {secrets.token_hex(3)}"
    raw = (b"Authentication-Results: mx.raftcloud.test; dmarc=pass header.from=bank.test\r\n"
           + _raw("Bank <ceo@bank.test>", f"{bob}@raftcloud.test", subject))
    _send_from(FORGER, smtpd.inbound, "x@forger.test", raw, f"{bob}@raftcloud.test")
    assert not [m for m in mailbox.list_messages(client, bob) if m.subject == subject]
    stored = _stored(client, bob, subject, "junk")
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert head.count("Authentication-Results:") == 1  # the forged one is gone
    assert "spf=fail smtp.mailfrom=forger.test" in head and "dkim=none" in head
    assert "dmarc=fail (p=reject dis=reject) header.from=bank.test" in head


def test_outbound_mail_is_signed_and_verifies_against_the_published_record(
        client, smtpd, bob, remote, dns_server, our_record):
    subject = f"to the far side {secrets.token_hex(3)}"
    message = EmailMessage()
    message["From"], message["To"] = f"{bob}@raftcloud.test", "zed@far.test"
    message["Subject"], message["Message-ID"] = subject, make_msgid(domain="raftcloud.test")
    message.set_content("Signed, sealed, delivered.\n")
    host, port = smtpd.submission.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.login(bob, PASSWORD)
        smtp.send_message(message)
    received = remote[1].received
    wait_for(lambda: any(message["Message-ID"].encode() in r for r in received), 30,
             "the remote delivery")
    raw = next(r for r in received if message["Message-ID"].encode() in r)
    assert raw.startswith(b"DKIM-Signature: ")
    resolver = dns.resolver.Resolver(configure=False)
    dns_host, dns_port = dns_server.rsplit(":", 1)
    resolver.nameservers, resolver.port = [dns_host], int(dns_port)

    def published(name: bytes, timeout: float = 5) -> bytes:
        return b"".join(resolver.resolve(name.decode(), "TXT")[0].strings)
    verifier = dkim.DKIM(raw)
    assert verifier.verify(dnsfunc=published)
    assert verifier.signature_fields[b"d"] == b"raftcloud.test"
    assert verifier.signature_fields[b"s"] == our_record["selector"].encode()
    assert not dkim.verify(raw.replace(b"Signed, sealed", b"Forged, sealed"), dnsfunc=published)


def test_dkim_record_says_what_to_publish_and_refuses_strangers(kv_cluster, our_record, tmp_path):
    human = ctl(kv_cluster, "dkim-record")
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"{our_record['name']} IN TXT \"v=DKIM1; k=rsa; p=")
    # made once: asked again, the same key
    assert json.loads(ctl(kv_cluster, "--json", "dkim-record").stdout)[0] == our_record
    unknown = ctl(kv_cluster, "dkim-record", "elsewhere.test")
    assert unknown.returncode == 2 and "not a mail domain" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    help_alone = subprocess.run([sys.executable, "-m", "shards.cli", "dkim-record", "--help"],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path,
                                env=CHECKOUT_ENV)
    assert help_alone.returncode == 0 and "TXT record" in help_alone.stdout
    nowhere = subprocess.run([sys.executable, "-m", "shards.cli", "--config",
                              str(tmp_path / "none.toml"), "dkim-record"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=CHECKOUT_ENV)
    assert nowhere.returncode == 3 and nowhere.stderr.startswith("error: ")
    assert nowhere.stderr.count("\n") == 1

"""Issue 13, smtpd: what a stranger cannot do with our SMTP ports.

The real smtpd runs in this process (tests/_mail.py) against the session's
store; clients are smtplib and raw sockets.  A "stranger" is a client bound to
another loopback address (127.0.0.2 and up): by default only 127.0.0.1, ::1
and the cluster file's hosts count as our own.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import secrets
import smtplib
import socket
import time
from contextlib import ExitStack, contextmanager
from email.message import EmailMessage
from email.utils import make_msgid

import msgpack
import pytest
from werkzeug.test import Client as HTTPClient

from portal import PortalConfig, create_app
from shards.model import accounts, mailbox, outbound

from .._mail import ConnectionRecorder, inprocess_smtpd, local_dns, with_tables
from .._portal import ADMIN_PASSWORD, csrf_of, logged_in
from .._procs import free_port, wait_for

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
DOMAIN = "raftcloud.test"


def _user(client, prefix: str, *, age: float = 0.0) -> str:
    """A fresh account; ``age`` seconds old (its record's creation time moved back)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    accounts.create_user(client, name, PASSWORD)
    if age:
        cell = client.get(accounts.account_row(name), accounts.ACCOUNT_COL)
        record = msgpack.unpackb(cell.value, raw=False)
        record["created"] -= age
        client.cput(accounts.account_row(name), accounts.ACCOUNT_COL,
                    msgpack.packb(record, use_bin_type=True), if_version=cell.version)
    return name


def _message(sender: str, to: str, subject: str, body: str = "hello\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = make_msgid(domain="sender.example")
    msg.set_content(body)
    return msg


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@contextmanager
def _smtpd(kv_cluster, client, smtpd=None, mail=None, **settings):
    """Inbound and plaintext-on-loopback submission, with extra [smtpd]/[mail] keys."""
    tables = {"smtpd": smtpd or {}, "mail": mail or {}}
    with inprocess_smtpd(kv_cluster.cluster, client, tables=tables,
                         submission=f"127.0.0.1:{free_port()}",
                         plaintext_auth_on_loopback=True, **settings) as config:
        yield config


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.settimeout(10)
    return sock


def _reply(sock: socket.socket) -> bytes:
    """One whole reply (the last line has a space after the code); b"" on EOF."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and re.match(rb"\d{3}( |$)", lines[-2]):
            return data


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _listeners(config) -> dict[str, int]:
    return {"inbound": _port(config.inbound), "submission": _port(config.submission)}


# -- hole 3: slow clients, connection caps, deadlines ------------------------------------------

def test_a_hundred_slow_connections_do_not_stop_a_normal_session(kv_cluster, client):
    bob, alice = _user(client, "bob"), _user(client, "alice")
    with _smtpd(kv_cluster, client) as config, ExitStack() as stack:
        for port in _listeners(config).values():
            slow = []
            for i in range(100):  # from 10 addresses, under the per-address cap of 20
                sock = stack.enter_context(_connect(port, f"127.0.0.{3 + i % 10}"))
                sock.sendall(b"EHLO half-a-comm")  # and never the rest of the line
                slow.append(sock)
            assert all(_reply(sock).startswith(b"220") for sock in slow), "all held at once"
        subject = f"through the crowd {secrets.token_hex(3)}"
        with smtplib.SMTP("127.0.0.1", _port(config.inbound), timeout=10) as smtp:
            smtp.send_message(_message("someone@example.org", f"{bob}@{DOMAIN}", subject))
        with smtplib.SMTP("127.0.0.1", _port(config.submission), timeout=10) as smtp:
            smtp.login(alice, PASSWORD)
            smtp.send_message(_message(f"{alice}@{DOMAIN}", f"{bob}@{DOMAIN}", subject + " 2"))
    subjects = [m.subject for m in mailbox.list_messages(client, bob)]
    assert subject in subjects and subject + " 2" in subjects


@pytest.mark.parametrize("listener", ["inbound", "submission"])
def test_a_dripping_client_is_cut_off_at_the_line_deadline(kv_cluster, client, listener):
    with _smtpd(kv_cluster, client, smtpd={"line_timeout": 1.0}) as config:
        sock = _connect(_listeners(config)[listener], "127.0.0.3")
        with sock:
            assert _reply(sock).startswith(b"220")
            started, answer = time.monotonic(), b""
            for byte in b"EHLO a-very-slow-client.example":  # each byte well within any idle timer
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sock.settimeout(0.3)
                try:
                    answer = sock.recv(4096)
                    break
                except TimeoutError:
                    continue
            took = time.monotonic() - started
            assert answer.startswith(b"421 4.4.2"), answer
            assert took < 3.0, f"cut off after {took:.1f} s"
            sock.settimeout(5)
            assert _closed(sock)


@pytest.mark.parametrize("setting, behaviour", [
    ("command_timeout", "idle"),        # connects, then says nothing
    ("session_timeout", "chatty"),      # NOOP after NOOP, every line complete
    ("data_timeout", "slow-data"),      # a message that never ends
    ("idle_timeout", "chatty"),         # NOOPs restart the command clock, not this one
    ("idle_timeout", "refused-mail"),   # transactions that never deliver
])
def test_idle_chatty_and_endless_sessions_end_at_their_deadline(kv_cluster, client, setting,
                                                                behaviour):
    bob = _user(client, "bob")
    limits = {"command_timeout": 30.0, "session_timeout": 30.0, "data_timeout": 30.0,
              "idle_timeout": 30.0, setting: 1.5}
    with _smtpd(kv_cluster, client, smtpd=limits) as config:
        sock = _connect(_port(config.inbound), "127.0.0.3")
        with sock:
            assert _reply(sock).startswith(b"220")
            if behaviour == "slow-data":
                for command in (b"HELO me", b"MAIL FROM:<x@example.org>",
                                f"RCPT TO:<{bob}@{DOMAIN}>".encode(), b"DATA"):
                    sock.sendall(command + b"\r\n")
                    assert _reply(sock)[:1] in b"23"
            started, received = time.monotonic(), b""
            while time.monotonic() - started < 6 and b"421 4.4.2" not in received:
                try:
                    if behaviour == "chatty":
                        sock.sendall(b"NOOP\r\n")
                    elif behaviour == "refused-mail":
                        sock.sendall(b"HELO me\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<nobody@"
                                     + DOMAIN.encode() + b">\r\nDATA\r\nRSET\r\n")
                    elif behaviour == "slow-data":
                        sock.sendall(b"another line of an endless message\r\n")
                    sock.settimeout(0.3)
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
            took = time.monotonic() - started
            assert b"421 4.4.2" in received, received
            assert 1.0 < took < 4.0, f"cut off after {took:.1f} s"
            sock.settimeout(5)
            assert _closed(sock)


def _busy(sock: socket.socket, listener: str, user: str) -> None:
    """Make a greeted session one that may not be evicted: a transaction, or logged in."""
    sock.sendall(b"EHLO client.example\r\n")
    assert _reply(sock).startswith(b"250")
    if listener == "inbound":
        sock.sendall(b"MAIL FROM:<x@example.org>\r\n")
    else:
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
        sock.sendall(b"AUTH PLAIN " + token + b"\r\n")
    assert _reply(sock)[:1] == b"2"


@pytest.mark.parametrize("listener", ["inbound", "submission"])
def test_connections_beyond_the_caps_get_421(kv_cluster, client, listener):
    user = _user(client, "busy")
    caps = {"max_connections_per_address": 3, "max_connections": 5}
    with _smtpd(kv_cluster, client, smtpd=caps) as config, ExitStack() as stack:
        port = _listeners(config)[listener]

        def connect(source: str) -> socket.socket:
            return stack.enter_context(_connect(port, source))
        busy = [connect("127.0.0.3") for _ in range(3)]
        for sock in busy:
            assert _reply(sock).startswith(b"220")
            _busy(sock, listener, user)
        assert _reply(connect("127.0.0.3")).startswith(b"421 4.7.0")      # per address
        idle = [connect("127.0.0.4") for _ in range(2)]
        assert [_reply(sock)[:3] for sock in idle] == [b"220"] * 2
        # The listener is full: the oldest idle session makes room for a newcomer.
        newcomer = connect("127.0.0.5")
        assert _reply(newcomer).startswith(b"220")
        assert _reply(idle[0]).startswith(b"421 4.7.0") and _closed(idle[0])
        idle[1].sendall(b"NOOP\r\n")
        assert _reply(idle[1]).startswith(b"250")
        for sock in busy:                                                   # never evicted
            sock.sendall(b"NOOP\r\n")
            assert _reply(sock).startswith(b"250")
        _busy(idle[1], listener, user)
        _busy(newcomer, listener, user)
        # Only when every session is busy is a newcomer refused.
        assert _reply(connect("127.0.0.6")).startswith(b"421 4.7.0")
        stack.close()
        wait_for(lambda: _reply(connect("127.0.0.5")).startswith(b"220"), 5, "a free place")


def test_strangers_holding_every_place_do_not_lock_out_a_sender(kv_cluster, client):
    """The review's attack, scaled down: addresses x sessions fill the listener, NOOPing."""
    bob = _user(client, "bob")
    caps = {"max_connections_per_address": 4, "max_connections": 16}
    with _smtpd(kv_cluster, client, smtpd=caps) as config, ExitStack() as stack:
        port = _port(config.inbound)
        held = [stack.enter_context(_connect(port, f"127.0.0.{10 + i // 4}")) for i in range(16)]
        for sock in held:
            assert _reply(sock).startswith(b"220")
            sock.sendall(b"NOOP\r\n")
            assert _reply(sock).startswith(b"250")
        subject = f"through the siege {secrets.token_hex(3)}"
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(_message("someone@example.org", f"{bob}@{DOMAIN}", subject))
    assert subject in [m.subject for m in mailbox.list_messages(client, bob)]


# -- our domains as senders --------------------------------------------------------------------

def _mail_from_as(port: int, source: str, sender: str, rcpt: str, header_from: str) -> tuple:
    """(MAIL reply, final reply) of one transaction sent from ``source``."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as smtp:
        smtp.ehlo("client.example")
        mail = smtp.mail(sender)
        if mail[0] != 250:
            return mail, None
        assert smtp.rcpt(rcpt)[0] == 250
        msg = _message(header_from, rcpt, f"as {sender} from {source}")
        return mail, smtp.data(msg.as_bytes())


def test_mail_claiming_our_domain_from_a_stranger_is_refused_naming_submission(kv_cluster,
                                                                               client):
    bob = _user(client, "bob")
    rcpt = f"{bob}@{DOMAIN}"
    with _smtpd(kv_cluster, client) as config:
        port, submission = _port(config.inbound), _port(config.submission)
        mail, _ = _mail_from_as(port, "127.0.0.2", f"ceo@{DOMAIN}", rcpt, f"ceo@{DOMAIN}")
        assert mail[0] == 550
        assert (f"Mail from {DOMAIN} must be sent through submission on port {submission} "
                f"with AUTH").encode() in mail[1]
        # The header From alone, behind a stranger's envelope sender: refused at DATA.
        _, data = _mail_from_as(port, "127.0.0.2", "x@example.org", rcpt,
                                f"Boss <ceo@{DOMAIN.upper()}>")
        assert data[0] == 550 and b"submission" in data[1]
        # A stranger's own domain is fine, and so is our domain from this host.
        assert _mail_from_as(port, "127.0.0.2", "x@example.org", rcpt, "x@example.org")[1][0] \
            == 250
        assert _mail_from_as(port, "127.0.0.1", f"cron@{DOMAIN}", rcpt, f"cron@{DOMAIN}")[1][0] \
            == 250
    stored = [m.sender for m in mailbox.list_messages(client, bob)]
    assert f"cron@{DOMAIN}" in stored and not any("ceo@" in s.lower() for s in stored)


@pytest.mark.parametrize("head", [
    (b"X-Pad: " + b"p" * 60 + b"\r\n") * 1000 + f"From: Administrator <admin@{DOMAIN}>\r\n".encode(),
    b"From: =?utf-8?b?YWRtaW5AcmFmdGNsb3VkLnRlc3Q=?=\r\n",   # admin@raftcloud.test
    f'From: "admin@{DOMAIN}" <x@example.org>\r\n'.encode(),
    f"From: x@example.org\r\nSender: admin@{DOMAIN}\r\n".encode(),
])
def test_author_headers_claiming_our_domain_are_refused_however_hidden(kv_cluster, client, head):
    bob = _user(client, "bob")
    subject = f"forged {secrets.token_hex(3)}"
    with _smtpd(kv_cluster, client) as config:
        with smtplib.SMTP("127.0.0.1", _port(config.inbound), timeout=10,
                          source_address=("127.0.0.2", 0)) as smtp:
            smtp.ehlo("client.example")
            assert smtp.mail("x@example.org")[0] == 250
            assert smtp.rcpt(f"{bob}@{DOMAIN}")[0] == 250
            code, text = smtp.data(head + f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    assert code == 550 and b"submission" in text
    assert mailbox.list_messages(client, bob) == []


def test_a_header_section_over_four_mebibytes_is_refused_not_cut(kv_cluster, client):
    bob = _user(client, "bob")
    head = b"X-Pad: " + b"p" * 70 + b"\r\n"
    with _smtpd(kv_cluster, client) as config:
        with smtplib.SMTP("127.0.0.1", _port(config.inbound), timeout=30,
                          source_address=("127.0.0.2", 0)) as smtp:
            smtp.ehlo("client.example")
            assert smtp.mail("x@example.org")[0] == 250
            assert smtp.rcpt(f"{bob}@{DOMAIN}")[0] == 250
            code, text = smtp.data(head * (4 * 1024 * 1024 // len(head) + 1) + b"\r\nbody\r\n")
    assert (code, text) == (552, b"5.3.4 Header section too big (limit 4 MiB)")
    assert mailbox.list_messages(client, bob) == []


def test_trusted_relays_names_the_hosts_that_may_send_as_our_domains(kv_cluster, client):
    bob = _user(client, "bob")
    with _smtpd(kv_cluster, client, smtpd={"trusted_relays": ["127.0.0.2/32"]}) as config:
        port = _port(config.inbound)
        ours = f"backup@{DOMAIN}"
        assert _mail_from_as(port, "127.0.0.2", ours, f"{bob}@{DOMAIN}", ours)[1][0] == 250
        # Listing hosts replaces the default: now 127.0.0.1 is a stranger too.
        assert _mail_from_as(port, "127.0.0.1", ours, f"{bob}@{DOMAIN}", ours)[0][0] == 550


# -- mailbox quota -----------------------------------------------------------------------------

QUOTA = 30_000


def test_a_full_mailbox_refuses_with_552_and_deleting_gives_room(kv_cluster, client):
    carol = _user(client, "carol")
    rcpt = f"{carol}@{DOMAIN}"
    with _smtpd(kv_cluster, client, mail={"mailbox_quota": QUOTA}) as config:
        port = _port(config.inbound)

        def send(subject: str) -> dict:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                msg = _message("x@example.org", rcpt, subject, "z" * 18_000 + "\n")
                return smtp.send_message(msg)
        assert send("first") == {}
        # smtplib announces SIZE=: the full mailbox says so at RCPT.
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send("second")
        code, text = refused.value.recipients[rcpt]
        assert (code, text) == (552, b"5.2.2 Mailbox full")
        # Without SIZE= the message is refused after its data.
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            assert smtp.mail("x@example.org")[0] == 250
            assert smtp.rcpt(rcpt)[0] == 250
            msg = _message("x@example.org", rcpt, "third", "z" * 18_000 + "\n")
            assert smtp.data(msg.as_bytes()) == (552, b"5.2.2 Mailbox full")
        [first] = mailbox.list_messages(client, carol)
        assert mailbox.usage(client, carol) == first.size
        assert mailbox.delete_message(client, carol, first.id)
        assert mailbox.usage(client, carol) == 0
        assert send("fourth") == {}
    assert [m.subject for m in mailbox.list_messages(client, carol)] == ["fourth"]


def test_a_mailbox_from_before_quotas_is_counted_from_its_messages(client):
    dora = _user(client, "dora")
    sizes = [len(mailbox.get_message(client, dora, mailbox.deliver(
        client, dora, f"Subject: old {i}\r\n\r\n{'y' * 5000}\r\n".encode())) or b"")
        for i in range(3)]
    client.delete(mailbox.mailbox_row(dora), mailbox.USAGE_COLUMN)  # as before the counter
    assert mailbox.usage(client, dora) == sum(sizes)
    with pytest.raises(mailbox.MailboxFull):
        mailbox.deliver(client, dora, b"Subject: new\r\n\r\n" + b"n" * 5000,
                        quota=sum(sizes) + 1000)
    mailbox.deliver(client, dora, b"Subject: small\r\n\r\nok\r\n", quota=sum(sizes) + 1000)
    assert client.get(mailbox.mailbox_row(dora), mailbox.USAGE_COLUMN) is not None


@pytest.fixture(scope="module")
def portal_with_limits(kv_cluster):
    """A portal whose [mail] table has a small quota and small sending caps."""
    cluster = with_tables(kv_cluster.cluster, mail={
        "mailbox_quota": QUOTA, "send_per_hour": 3, "recipients_per_hour": 6,
        "new_account_send_per_hour": 1, "new_account_recipients_per_hour": 2})
    config = PortalConfig(cluster=cluster, frontend="fe-sec-smtp", addr="127.0.0.1:9",
                          admin_password=ADMIN_PASSWORD, heartbeat_interval=5)
    app = create_app(config, client_factory=kv_cluster.client)
    yield app
    app.close()


def _compose(http: HTTPClient, to: str, subject: str, body: str = "hi"):
    data = {"csrf": csrf_of(http, "/mail/compose"), "to": to, "cc": "", "subject": subject,
            "body": body, "attachment": []}
    return http.post("/mail/compose", data=data, content_type="multipart/form-data")


def test_compose_to_a_full_local_mailbox_shows_an_error(client, portal_with_limits):
    sender, full = _user(client, "erin", age=2 * 86400), _user(client, "full")
    mailbox.deliver(client, full, b"Subject: big\r\n\r\n" + b"b" * QUOTA)
    http = logged_in(portal_with_limits, sender)
    page = _compose(http, f"{full}@{DOMAIN}", "will not fit")
    assert page.status_code == 400
    assert f"the mailbox of {full}@{DOMAIN} is full" in page.text
    assert not [m for m in mailbox.list_messages(client, full) if m.subject == "will not fit"]


def test_a_sender_over_quota_may_not_send_anywhere(kv_cluster, client, portal_with_limits):
    fay = _user(client, "fay", age=2 * 86400)
    mailbox.deliver(client, fay, b"Subject: big\r\n\r\n" + b"b" * QUOTA)
    with _smtpd(kv_cluster, client, mail={"mailbox_quota": QUOTA}) as config:
        with smtplib.SMTP("127.0.0.1", _port(config.submission), timeout=10) as smtp:
            smtp.login(fay, PASSWORD)
            assert smtp.mail(f"{fay}@{DOMAIN}")[0] == 250
            assert smtp.rcpt("someone@example.org")[0] == 250
            code, text = smtp.data(_message(f"{fay}@{DOMAIN}", "someone@example.org",
                                            "from a full mailbox").as_bytes())
    assert code == 552 and text.startswith(b"5.2.2 Your mailbox is over its quota")
    page = _compose(logged_in(portal_with_limits, fay), "someone@example.org", "web, full")
    assert page.status_code == 400 and "your mailbox is over its quota" in page.text
    assert mailbox.list_messages(client, fay, "sent") == []
    assert not [e for e in outbound.pending(client) if e.sender.startswith(fay)]


# -- sending caps ------------------------------------------------------------------------------

SENDING = {"send_per_hour": 3, "recipients_per_hour": 6,
           "new_account_send_per_hour": 1, "new_account_recipients_per_hour": 2}


def _submit(config, user: str, to: list[str], subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", _port(config.submission), timeout=10) as smtp:
        smtp.login(user, PASSWORD)
        smtp.send_message(_message(f"{user}@{DOMAIN}", ", ".join(to), subject),
                          to_addrs=to)


def test_the_hourly_cap_holds_across_submission_and_the_web(kv_cluster, client,
                                                            portal_with_limits):
    frank, bob = _user(client, "frank", age=2 * 86400), _user(client, "bob")
    http = logged_in(portal_with_limits, frank)
    note = http.get("/mail/compose").text
    assert "may send 3 messages to 6 recipients per hour" in note
    with _smtpd(kv_cluster, client, mail=SENDING) as config:
        _submit(config, frank, [f"{bob}@{DOMAIN}"], "smtp 1")
        _submit(config, frank, [f"{bob}@{DOMAIN}"], "smtp 2")
        assert _compose(http, f"{bob}@{DOMAIN}", "web 3").status_code == 303
        refused = _compose(http, f"{bob}@{DOMAIN}", "web 4")       # the web's N+1th
        assert refused.status_code == 400
        assert "Not sent: This account may send 3 messages to 6 recipients per hour" \
            in refused.text
        with pytest.raises(smtplib.SMTPDataError) as over:          # submission's N+1th
            _submit(config, frank, [f"{bob}@{DOMAIN}"], "smtp 5")
        assert over.value.smtp_code == 451 and over.value.smtp_error.startswith(b"4.7.1 ")
    subjects = {m.subject for m in mailbox.list_messages(client, bob)}
    assert {"smtp 1", "smtp 2", "web 3"} <= subjects and not {"web 4", "smtp 5"} & subjects


def test_a_young_account_has_the_lower_cap(kv_cluster, client):
    grace, old, bob = _user(client, "grace"), _user(client, "old", age=2 * 86400), _user(
        client, "bob")
    with _smtpd(kv_cluster, client, mail=SENDING) as config:
        _submit(config, grace, [f"{bob}@{DOMAIN}"], "young 1")
        with pytest.raises(smtplib.SMTPDataError) as over:
            _submit(config, grace, [f"{bob}@{DOMAIN}"], "young 2")
        assert over.value.smtp_code == 451 and b"1 messages to 2 recipients" in \
            over.value.smtp_error
        _submit(config, old, [f"{bob}@{DOMAIN}"], "old 1")
        _submit(config, old, [f"{bob}@{DOMAIN}"], "old 2")
        # More recipients than a whole hour allows can never go: a permanent 550.
        with pytest.raises(smtplib.SMTPDataError) as hopeless:
            _submit(config, old, [f"r{i}@example.test" for i in range(7)], "to seven")
        assert hopeless.value.smtp_code == 550
    assert not [e for e in outbound.pending(client) if e.sender == f"{old}@{DOMAIN}"]


# -- SSRF: the outbound worker and private exchangers ------------------------------------------

@pytest.fixture(scope="module")
def private_mx(tmp_path_factory):
    """DNS saying that private.test's exchanger is on 127.0.0.25, and a listener there."""
    port = free_port()
    records = ["--mx-host=private.test,mx.private.test,10",
               "--host-record=mx.private.test,127.0.0.25"]
    with local_dns(tmp_path_factory.mktemp("dns"), records) as resolver, \
            ConnectionRecorder("127.0.0.25", port) as recorder:
        yield resolver, port, recorder


def _queue_to_private(client, sender: str, subject: str) -> None:
    raw = _message(f"{sender}@{DOMAIN}", "victim@private.test", subject).as_bytes()
    outbound.submit(client, sender, f"{sender}@{DOMAIN}", ["victim@private.test"], raw,
                    domains=(DOMAIN,))


def _bounce(client, user: str, subject: str) -> str | None:
    """The text of the bounce of ``subject`` in ``user``'s inbox, if there is one."""
    for summary in mailbox.list_messages(client, user):
        raw = mailbox.get_message(client, user, summary.id) or b""
        if "Undelivered" in summary.subject and subject.encode() in raw:
            return email.message_from_bytes(raw, policy=email.policy.default) \
                .get_body(("plain",)).get_content()
    return None


@pytest.mark.parametrize("allowed", [False, True])
def test_private_exchangers_are_refused_unless_allowed(kv_cluster, client, private_mx, allowed):
    resolver, port, recorder = private_mx
    henry = _user(client, "henry")
    subject = f"to a private exchanger {secrets.token_hex(3)}"
    recorder.peers.clear()
    with _smtpd(kv_cluster, client, smtpd={"allow_private_exchangers": allowed},
                resolver=resolver, remote_port=port, queue_poll=0.2, retry_base=0.2,
                max_attempts=2):
        _queue_to_private(client, henry, subject)
        if allowed:  # the control: the same mail does reach 127.0.0.25 when allowed
            wait_for(lambda: recorder.peers, 15, "a connection to the private exchanger")
        raw = wait_for(lambda: _bounce(client, henry, subject), 20, "the bounce")
    if not allowed:
        assert recorder.peers == [], "connected to a private exchanger"
        assert "private.test are on non-public addresses (127.0.0.25)" in " ".join(raw.split())

"""smtpd's issue-13 guards that need no process: settings, caps, address checks, counters."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiosmtpd.smtp import Envelope, Session

from raftkv.cluster import ClusterConfig, GroupConfig, ReplicaConfig
from raftkv.errors import ConfigError
from shards.model import accounts, mailbox, outbound, sendlimit
from shards.peers import ConnectionGate, address_key
from smtpd import handler, replies
from smtpd.handler import InboundConfig, trusted_relays
from smtpd.limits import SessionLimits
from smtpd.outbound import public_address
from smtpd.settings import SmtpdSettings

from .._memstore import MemClient


def _cluster(**tables) -> ClusterConfig:
    replica = ReplicaConfig(name="r1", group=1, raft="127.0.0.1:7101", client="10.9.8.7:7201")
    return ClusterConfig(name="t", groups=(GroupConfig(1, (replica,)),), secret=b"s" * 16,
                         tables=tables)


SMTPD = SmtpdSettings(submission="0.0.0.0:2587")


def test_session_limits_parse_their_keys_and_refuse_nonsense():
    limits = SessionLimits.from_table({"line_timeout": 2, "max_connections": 7, "other": "x"})
    assert (limits.line_timeout, limits.max_connections) == (2.0, 7)
    for bad in ({"line_timeout": 0}, {"max_connections": 1.5}, {"session_timeout": "long"},
                {"max_connections_per_address": True}):
        with pytest.raises(ConfigError):
            SessionLimits.from_table(bad)


class _Session:
    """What the gate asks of a session: may it be evicted, and evict it."""

    def __init__(self, busy: bool = False) -> None:
        self.busy, self.evicted = busy, False

    def evictable(self) -> bool:
        return not self.busy

    def evict(self) -> None:
        self.evicted = True


def test_the_gate_counts_per_listener_and_per_address():
    gate = ConnectionGate(SessionLimits(max_connections=3, max_connections_per_address=2))
    a1, a2, b, c = _Session(True), _Session(True), _Session(True), _Session()
    assert gate.enter("a", a1) and gate.enter("a", a2) and not gate.enter("a", _Session())
    assert gate.enter("b", b) and not gate.enter("c", c)   # the listener is full, all busy
    gate.leave(a1)
    gate.leave(a1)                                          # leaving twice counts once
    assert gate.enter("c", c) and gate.total == 3


def test_at_the_listener_cap_the_oldest_idle_session_makes_room():
    gate = ConnectionGate(SessionLimits(max_connections=3, max_connections_per_address=3))
    busy, idle_old, idle_new = _Session(True), _Session(), _Session()
    for session in (busy, idle_old, idle_new):
        assert gate.enter("x", session)
    newcomer = _Session()
    assert gate.enter("y", newcomer) and idle_old.evicted and not idle_new.evicted
    assert gate.total == 3 and not busy.evicted
    gate.leave(idle_old)                                    # its close comes later: no-op
    assert gate.total == 3
    # When every session is busy, a newcomer is refused.
    newcomer.busy = idle_new.busy = True
    assert not gate.enter("z", _Session()) and gate.total == 3


def test_idle_timeout_is_a_setting():
    assert SessionLimits.from_table({"idle_timeout": 5}).idle_timeout == 5.0
    assert SessionLimits().idle_timeout == 2 * SessionLimits().command_timeout
    with pytest.raises(ConfigError):
        SessionLimits.from_table({"idle_timeout": 0})


@pytest.mark.parametrize("peer, key", [
    (("192.0.2.7", 25), "192.0.2.7"),
    (("::ffff:192.0.2.7", 25, 0, 0), "192.0.2.7"),
    (("2001:db8:1:2:3:4:5:6", 25, 0, 0), "2001:db8:1::/56"),   # an end site's /56 is one
    (("2001:db8:1:ff::1", 25, 0, 0), "2001:db8:1::/56"),
])
def test_clients_are_counted_by_address(peer, key):
    assert address_key(peer) == key


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2a00:1450:4001::1", True),
    ("127.0.0.25", False), ("10.0.0.1", False), ("192.168.1.1", False), ("172.16.0.1", False),
    ("169.254.169.254", False), ("0.0.0.0", False), ("224.0.0.1", False), ("240.0.0.1", False),
    ("100.64.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::", False), ("not an address", False),
    ("2002:7f00:1::1", False), ("2002:a00:1::1", False),         # 6to4 of 127.0.0.1, 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),             # Teredo client 10.0.0.1
])
def test_only_public_exchanger_addresses_are_dialled(address, public):
    assert public_address(address) is public


def test_private_exchangers_need_an_explicit_true():
    assert SmtpdSettings.from_table({}).allow_private_exchangers is False
    assert SmtpdSettings.from_table(
        {"allow_private_exchangers": True}).allow_private_exchangers is True
    with pytest.raises(ConfigError):
        SmtpdSettings.from_table({"allow_private_exchangers": "yes"})


def test_trusted_relays_default_to_loopback_and_the_cluster_hosts():
    networks = {str(n) for n in trusted_relays(_cluster(), SMTPD)}
    assert {"127.0.0.1/32", "::1/128", "10.9.8.7/32"} <= networks
    assert "0.0.0.0/32" not in networks and "127.0.0.2/32" not in networks
    configured = SmtpdSettings.from_table({"trusted_relays": ["192.0.2.0/24"]})
    assert [str(n) for n in trusted_relays(_cluster(), configured)] == ["192.0.2.0/24"]
    with pytest.raises(ConfigError):
        SmtpdSettings.from_table({"trusted_relays": ["not-a-net"]})


def test_trusted_relays_are_the_clouds_own_processes_and_nothing_else_the_file_names():
    cluster = _cluster(frontend=[{"name": "web1", "listen": "10.0.0.11:8081"}],
                       balancer={"listen": "10.0.0.12:8000"}, control={"h1": "10.0.0.13:7001"},
                       # Addresses of outside services must never become relays for our domains.
                       metrics={"push": "198.51.100.7:9091"}, web={"scheme": "http"})
    networks = {str(n) for n in trusted_relays(cluster, SMTPD)}
    assert {"10.0.0.11/32", "10.0.0.12/32", "10.0.0.13/32", "10.9.8.7/32"} <= networks
    assert "198.51.100.7/32" not in networks


def test_inbound_config_reads_the_new_settings():
    config = InboundConfig.from_cluster(_cluster(mail={"mailbox_quota": 1234,
                                                       "send_per_hour": 5}), SMTPD, "mx")
    assert (config.mailbox_quota, config.send_limits.send_per_hour) == (1234, 5)
    assert config.submission_port == 2587
    assert config.trusted(("127.0.0.1", 40000)) and config.trusted(("::ffff:10.9.8.7", 1, 0, 0))
    assert not config.trusted(("127.0.0.2", 40000))


def test_a_forged_sender_is_refused_only_from_strangers():
    config = dataclasses.replace(InboundConfig(("raftcloud.test",)), submission_port=587)
    inbound = handler.InboundHandler(config, MemClient())
    stranger, local = Session(loop=None), Session(loop=None)
    stranger.peer, local.peer = ("198.51.100.1", 1), ("127.0.0.1", 1)
    refusal = inbound._forged(stranger, "boss@RaftCloud.Test.")
    assert refusal == ("550 5.7.1 Mail from raftcloud.test must be sent through submission "
                       "on port 587 with AUTH")
    assert inbound._forged(local, "boss@raftcloud.test") is None
    assert inbound._forged(stranger, "someone@example.org") is None
    stranger.authenticated = True
    assert inbound._forged(stranger, "boss@raftcloud.test") is None


def test_size_option():
    assert handler.size_option(["BODY=8BITMIME", "size=1234"]) == 1234
    assert handler.size_option(["SIZE=lots"]) == 0


def _data(inbound, content: bytes, peer=("198.51.100.1", 1)) -> str:
    session, envelope = Session(loop=None), Envelope()
    session.peer = peer
    envelope.mail_from, envelope.rcpt_tos = "x@example.org", ["bob@raftcloud.test"]
    envelope.original_content = content
    return asyncio.run(inbound.handle_DATA(None, session, envelope))


@pytest.mark.parametrize("head", [
    (b"X-Pad: " + b"p" * 60 + b"\r\n") * 1000 + b"From: Administrator <admin@raftcloud.test>\r\n",
    b"From: =?utf-8?b?YWRtaW5AcmFmdGNsb3VkLnRlc3Q=?=\r\n",           # one encoded word
    b"From: =?utf-8?q?admin=40raftcloud=2Etest?= <x@example.org>\r\n",  # encoded display name
    b'From: "admin@RaftCloud.Test" <x@example.org>\r\n',               # plain display name
    b"From: Admin <admin@raftcloud.test.>\r\n",                        # parser drops it
    b"From: x@example.org\r\nSender: admin@(c)raftcloud.test\r\n",
])
def test_author_headers_claiming_our_domain_are_refused_however_written(head):
    client = MemClient()
    accounts.create_user(client, "bob", "a password!")
    inbound = handler.InboundHandler(InboundConfig(("raftcloud.test",)), client)
    reply = _data(inbound, head + b"Subject: hi\r\n\r\nbody\r\n")
    assert reply.startswith("550 5.7.1 Mail from raftcloud.test must be sent through submission")
    assert mailbox.list_messages(client, "bob") == []
    # From one of our hosts the same message is delivered.
    assert _data(inbound, head + b"\r\nbody\r\n", peer=("127.0.0.1", 1)).startswith("250")


def test_other_authors_and_reply_to_pass_and_a_huge_header_section_is_refused():
    client = MemClient()
    accounts.create_user(client, "bob", "a password!")
    inbound = handler.InboundHandler(InboundConfig(("raftcloud.test",)), client)
    ok = b"From: A <a@x.test>, b@y.test\r\nReply-To: bob@raftcloud.test\r\n\r\nbody"
    assert _data(inbound, ok).startswith("250")
    assert _data(inbound, b"\xff\xfe garbage without headers").startswith("250")
    huge = b"X-Pad: p\r\n" * (handler.MAX_HEADER_SECTION // 9) + b"\r\nbody"
    assert _data(inbound, huge) == replies.HEADERS_TOO_BIG
    assert _data(inbound, huge, peer=("127.0.0.1", 1)) == replies.HEADERS_TOO_BIG


def test_a_sender_over_quota_cannot_send_even_to_remote_addresses():
    client = MemClient()
    accounts.create_user(client, "ann", "a password!")
    mailbox.deliver(client, "ann", b"Subject: big\r\n\r\n" + b"b" * 5000)
    raw = b"From: ann@raftcloud.test\r\nSubject: out\r\n\r\nhi\r\n"
    with pytest.raises(outbound.SenderMailboxFull):
        outbound.submit(client, "ann", "ann@raftcloud.test", ["x@example.org"], raw,
                        domains=("raftcloud.test",), quota=5000)
    assert outbound.pending(client) == []
    assert [m.subject for m in mailbox.list_messages(client, "ann", "sent")] == []
    assert replies.smtp_reply(outbound.SenderMailboxFull("ann")) == replies.SENDER_MAILBOX_FULL
    assert replies.SENDER_MAILBOX_FULL.startswith("552 5.2.2 ")
    # With room, it goes.
    outbound.submit(client, "ann", "ann@raftcloud.test", ["x@example.org"], raw,
                    domains=("raftcloud.test",), quota=50_000)
    assert [m.subject for m in mailbox.list_messages(client, "ann", "sent")] == ["out"]


def test_quota_setting():
    assert mailbox.quota_setting({}) == mailbox.DEFAULT_QUOTA
    assert mailbox.quota_setting({"mailbox_quota": 10}) == 10
    for bad in (0, -1, "1G", True, 1.5):
        with pytest.raises(ConfigError):
            mailbox.quota_setting({"mailbox_quota": bad})


def test_send_limits_parse_and_choose_by_age():
    limits = sendlimit.SendLimits.from_table({"send_per_hour": 4, "new_account_send_per_hour": 1,
                                              "new_account_age": 60, "mailbox_quota": 1})
    assert limits.caps(59) == (1, limits.new_account_recipients_per_hour)
    assert limits.caps(60) == (4, limits.recipients_per_hour)
    with pytest.raises(ConfigError):
        sendlimit.SendLimits.from_table({"send_per_hour": "many"})


def test_charge_counts_messages_and_recipients_per_hour():
    client, now = MemClient(), time.time()
    accounts.create_user(client, "ann", "a password!")
    limits = sendlimit.SendLimits(new_account_send_per_hour=2, new_account_recipients_per_hour=3)
    sendlimit.charge(client, "ann", 2, limits, now=now)
    with pytest.raises(sendlimit.SendLimitExceeded) as over:   # 2 + 2 recipients > 3
        sendlimit.charge(client, "ann", 2, limits, now=now + 1)
    assert not over.value.permanent and 0 < over.value.retry_after <= 3600
    sendlimit.charge(client, "ann", 1, limits, now=now + 2)     # a refusal cost nothing
    with pytest.raises(sendlimit.SendLimitExceeded):           # the third message
        sendlimit.charge(client, "ann", 0, limits, now=now + 3)
    sendlimit.charge(client, "ann", 1, limits, now=now + 3601)  # a new hour
    with pytest.raises(sendlimit.SendLimitExceeded) as hopeless:
        sendlimit.charge(client, "ann", 4, limits, now=now + 3602)
    assert hopeless.value.permanent
    assert replies.send_limit_reply(hopeless.value).startswith("550 5.7.1 ")
    assert replies.send_limit_reply(over.value).startswith("451 4.7.1 ")


def test_usage_counts_every_delivery_and_delete_even_when_they_race():
    client = MemClient()
    raws = [f"Subject: m{i}\r\n\r\n{'x' * i}\r\n".encode() for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda raw: mailbox.deliver(client, "bo", raw), raws))
    assert mailbox.usage(client, "bo") == sum(map(len, raws))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda msg_id: mailbox.delete_message(client, "bo", msg_id), ids[:30]))
    assert mailbox.usage(client, "bo") == sum(map(len, raws[30:]))
    with pytest.raises(mailbox.MailboxFull):
        mailbox.deliver(client, "bo", b"x" * 100, quota=mailbox.usage(client, "bo") + 99)
    assert len(mailbox.list_messages(client, "bo")) == 10
    assert mailbox.usage(client, "bo") == sum(map(len, raws[30:]))


def test_a_control_character_in_the_sender_is_refused():
    inbound = handler.InboundHandler(InboundConfig(("raftcloud.test",)), MemClient())
    session, envelope = Session(loop=None), Envelope()
    session.peer = ("198.51.100.1", 1)
    for sender in ("mal\x00lory@example.org", "a\r\nb@example.org", "x\x7f@example.org"):
        reply = asyncio.run(inbound.handle_MAIL(None, session, envelope, sender, []))
        assert reply == replies.BAD_SENDER
    assert envelope.mail_from is None
    assert asyncio.run(inbound.handle_MAIL(None, session, envelope, "ok@example.org", [])) \
        .startswith("250")

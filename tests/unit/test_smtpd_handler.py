"""The inbound handler's decisions that need no store: addresses, trace headers, error replies."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import Envelope, Session

from raftkv.errors import ConfigError, NoLeader, OutcomeUnknown, ProtocolError, TooLarge
from smtpd import handler, replies
from smtpd.handler import InboundConfig, InboundHandler, local_user
from smtpd.replies import Rejected

DOMAINS = ("raftcloud.test", "example.test")


@pytest.mark.parametrize("address, user", [
    ("alice@raftcloud.test", "alice"),
    ("Alice@RaftCloud.TEST", "alice"),
    ("bob.smith@example.test", "bob.smith"),
    ("carol@raftcloud.test.", "carol"),       # a fully qualified domain with its root dot
    ("postmaster", "postmaster"),             # RFC 5321 §4.5.1
    ("x@y@raftcloud.test", None),             # '@' cannot be in an account name
])
def test_local_user_maps_our_domains_to_account_names(address, user):
    if user is None:
        with pytest.raises(Rejected) as info:
            local_user(address, DOMAINS)
        assert info.value.reply == replies.NO_SUCH_USER
    else:
        assert local_user(address, DOMAINS) == user


@pytest.mark.parametrize("address", ["alice@evil.test", "alice@raftcloud.test.evil.test",
                                     "alice@[127.0.0.1]", "alice@sub.raftcloud.test"])
def test_other_domains_are_relaying(address):
    with pytest.raises(Rejected) as info:
        local_user(address, DOMAINS)
    assert info.value.reply == replies.RELAY_DENIED


@pytest.mark.parametrize("address", ["alice", "@raftcloud.test", "alice@", ""])
def test_addresses_without_both_parts_are_bad_syntax(address):
    with pytest.raises(Rejected) as info:
        local_user(address, DOMAINS)
    assert info.value.reply == replies.BAD_ADDRESS


@pytest.mark.parametrize("address", ["-rf@raftcloud.test", "a b@raftcloud.test",
                                     "ünï@raftcloud.test", "a" * 33 + "@raftcloud.test"])
def test_local_parts_that_cannot_be_accounts_are_unknown_users(address):
    with pytest.raises(Rejected) as info:
        local_user(address, DOMAINS)
    assert info.value.reply == replies.NO_SUCH_USER


def _session(helo: str = "client.example") -> Session:
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = ("127.0.0.1", 40000)
    session.host_name = helo
    session.extended_smtp = True
    return session


def test_received_header_names_us_the_peer_and_the_recipient():
    config = InboundConfig(DOMAINS, hostname="mx.raftcloud.test")
    header = handler.received_header(_session(), config, "alice@raftcloud.test").decode()
    assert header.startswith("Received: from client.example ([127.0.0.1])\r\n")
    assert "by mx.raftcloud.test (raftcloud-smtpd) with ESMTP id " in header
    assert "for <alice@raftcloud.test>; " in header
    assert header.endswith("\r\n") and header.count("\r\n") == 3


def test_received_header_strips_control_characters_from_the_helo_name():
    config = InboundConfig(DOMAINS)
    header = handler.received_header(_session("evil\x00\x1b[31m\tname"), config, "a@b")
    first_line = header.split(b"\r\n")[0]
    assert b"\x00" not in first_line and b"\x1b" not in first_line and b"\t" not in first_line


class _BrokenStore:
    """A store whose every call fails with ``error``: only the reply mapping is under test."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise self.error
        return fail


def _rcpt(store, address: str = "alice@raftcloud.test", envelope: Envelope | None = None) -> str:
    h = InboundHandler(InboundConfig(DOMAINS), store)
    envelope = envelope or Envelope()
    return asyncio.run(h.handle_RCPT(None, _session(), envelope, address, []))  # type: ignore[arg-type]


def _data(store) -> str:
    h = InboundHandler(InboundConfig(DOMAINS), store)
    envelope = Envelope()
    envelope.mail_from = "someone@example.org"
    envelope.rcpt_tos = ["alice@raftcloud.test"]
    envelope.original_content = envelope.content = b"Subject: hi\r\n\r\nhello\r\n"
    return asyncio.run(h.handle_DATA(None, _session(), envelope))  # type: ignore[arg-type]


@pytest.mark.parametrize("error, reply", [
    (NoLeader("election"), replies.TRY_LATER),
    (OutcomeUnknown("timed out"), replies.TRY_LATER),
    (ProtocolError("bad frame"), replies.TRY_LATER),
    (RuntimeError("a bug of ours"), replies.TRY_LATER),
])
def test_store_failures_during_rcpt_are_temporary(error, reply):
    assert _rcpt(_BrokenStore(error)) == reply


@pytest.mark.parametrize("error, reply", [
    (NoLeader("election"), replies.TRY_LATER),
    (TooLarge("over the cap"), replies.TOO_BIG),
    (KeyError("a bug of ours"), replies.TRY_LATER),
])
def test_store_failures_during_data_map_to_one_reply(error, reply):
    assert _data(_BrokenStore(error)) == reply


def test_relaying_is_refused_without_asking_the_store():
    assert _rcpt(_BrokenStore(NoLeader())) == replies.TRY_LATER
    assert _rcpt(_BrokenStore(NoLeader()), "alice@elsewhere.test") == replies.RELAY_DENIED


def test_recipient_count_is_limited():
    envelope = Envelope()
    envelope.rcpt_tos = [f"u{i}@raftcloud.test" for i in range(100)]
    assert _rcpt(_BrokenStore(NoLeader()), envelope=envelope) == replies.TOO_MANY_RECIPIENTS


def test_inbound_config_is_validated():
    for bad in (InboundConfig(()), InboundConfig(("Upper.test",)),
                InboundConfig(DOMAINS, max_message_size=0)):
        with pytest.raises(ConfigError):
            bad.validate()
    InboundConfig(DOMAINS).validate()


@pytest.mark.parametrize("domain", ["a..b.test", "x" * 64 + ".test", "-\udcff.test"])
def test_an_invalid_domain_is_a_permanent_failure_before_any_query(domain) -> None:
    import dns.resolver

    from smtpd.outbound import PermanentFailure, exchangers
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], 9, 0.5
    with pytest.raises(PermanentFailure):
        exchangers(resolver, domain)

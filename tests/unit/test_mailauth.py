"""Mail authentication without sockets: DMARC's rules, the header we write and the ones we
remove, and the three checks run against a resolver that answers from a dict."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import dkim
import dns.exception
import dns.resolver
import pytest
from aiosmtpd.smtp import Envelope, Session

from shards.model import accounts, dkimkeys, mailbox
from smtpd import dmarc
from smtpd.authcheck import (
    MAX_SIGNATURES,
    AuthResults,
    AuthSettings,
    MethodResult,
    authenticate,
    author_domains,
    authserv_id_of,
    results_header,
    without_our_results,
)
from smtpd.authdns import DnsTemporary
from smtpd.handler import InboundConfig, InboundHandler

from .._memstore import MemClient

US = "mx.raftcloud.test"
STRANGER = "192.0.2.7"      # documentation addresses: nothing is sent anywhere
OTHER = "198.51.100.9"


class FakeResolver:
    """dnspython's ``resolve`` over a dict ``{(name, type): [value, ...]}``; a value
    "timeout" times out, like a server that never answers."""

    def __init__(self, records: dict[tuple[str, str], list[Any]]) -> None:
        self.records = {(n.lower().rstrip("."), t): v for (n, t), v in records.items()}
        self.asked: list[tuple[str, str]] = []

    def resolve(self, name: Any, rdtype: str, search: bool = False,
                lifetime: float | None = None) -> list[SimpleNamespace]:
        key = (str(name).lower().rstrip("."), rdtype)
        self.asked.append(key)
        values = self.records.get(key)
        if values == ["timeout"]:
            raise dns.exception.Timeout()
        if not values:
            raise dns.resolver.NXDOMAIN()
        if rdtype == "TXT":
            return [SimpleNamespace(strings=(v.encode()[:200], v.encode()[200:])) for v in values]
        return [SimpleNamespace(address=v) for v in values]


@pytest.fixture(scope="module")
def key() -> dkimkeys.DkimKey:
    return dkimkeys.DkimKey("example.org", "sel", dkimkeys._new_pem(), 0.0)


def _dns(key: dkimkeys.DkimKey, dmarc_record: str = "v=DMARC1; p=reject",
         **extra: list[Any]) -> FakeResolver:
    name, text = dkimkeys.dns_record(key)
    records = {("example.org", "TXT"): [f"v=spf1 ip4:{STRANGER} -all"], (name, "TXT"): [text],
               ("_dmarc.example.org", "TXT"): [dmarc_record]}
    records.update({(n.replace("_", "."), "TXT"): v for n, v in extra.items()})
    return FakeResolver(records)


def _message(sender: str = "Ann <ann@example.org>", extra: bytes = b"") -> bytes:
    return (f"From: {sender}\r\nTo: bob@raftcloud.test\r\nSubject: hello\r\n"
            f"Message-ID: <1@example.org>\r\n").encode() + extra + b"\r\nHi Bob.\r\n"


def _signed(key: dkimkeys.DkimKey, message: bytes) -> bytes:
    return dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private_pem,
                     include_headers=[b"from", b"to", b"subject"]) + message


def _settings(resolver: FakeResolver) -> AuthSettings:
    return AuthSettings(resolver, dns_timeout=0.5, spf_timeout=2.0)  # type: ignore[arg-type]


def _results(res: AuthResults) -> dict[str, str]:
    return {line.method: line.result for line in res.lines()}


# -- the three checks together -------------------------------------------------------------

def test_signed_mail_from_an_allowed_address_passes_all_three(key):
    res = authenticate(_signed(key, _message()), STRANGER, "mail.example.org",
                       "ann@example.org", _settings(_dns(key)))
    assert _results(res) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert not res.junk
    header = results_header(US, res).decode()
    assert header.startswith(f"Authentication-Results: {US};\r\n\t")
    assert "spf=pass smtp.mailfrom=example.org" in header
    assert "dkim=pass header.d=example.org header.s=sel" in header
    assert "dmarc=pass (p=reject dis=none) header.from=example.org" in header
    assert header.endswith("\r\n") and "\n\r\n" not in header


def test_a_forged_from_of_a_reject_domain_fails_dmarc_and_is_junk(key):
    res = authenticate(_message(), OTHER, "evil.example", "x@evil.example",
                       _settings(_dns(key)))
    assert _results(res) == {"spf": "none", "dkim": "none", "dmarc": "fail"}
    assert res.junk and res.dmarc.disposition == "reject"


def test_spf_pass_for_another_domain_does_not_align(key):
    resolver = _dns(key, evil_example=[f"v=spf1 ip4:{OTHER} -all"])
    res = authenticate(_message(), OTHER, "evil.example", "x@evil.example", _settings(resolver))
    assert _results(res) == {"spf": "pass", "dkim": "none", "dmarc": "fail"} and res.junk


def test_a_signature_broken_in_transit_fails(key):
    tampered = _signed(key, _message()).replace(b"Hi Bob.", b"Hi Bob, send money.")
    res = authenticate(tampered, OTHER, "x", "x@evil.example", _settings(_dns(key)))
    assert _results(res) == {"spf": "none", "dkim": "fail", "dmarc": "fail"} and res.junk


def test_quarantine_junks_and_none_does_not(key):
    for policy, junk in (("quarantine", True), ("none", False)):
        res = authenticate(_message(), OTHER, "x", "x@evil.example",
                           _settings(_dns(key, f"v=DMARC1; p={policy}")))
        assert res.dmarc.result == "fail" and res.junk is junk


def test_dns_timeouts_are_temperrors_and_nothing_is_junked(key):
    resolver = FakeResolver({("example.org", "TXT"): ["timeout"],
                             ("sel._domainkey.example.org", "TXT"): ["timeout"],
                             ("_dmarc.example.org", "TXT"): ["timeout"]})
    res = authenticate(_signed(key, _message()), STRANGER, "x", "ann@example.org",
                       _settings(resolver))
    assert _results(res) == {"spf": "temperror", "dkim": "temperror", "dmarc": "temperror"}
    assert not res.junk


def test_only_the_first_signatures_are_checked(key):
    message = _message()
    for _ in range(MAX_SIGNATURES + 2):
        message = _signed(key, message)
    resolver = _dns(key)
    res = authenticate(message, STRANGER, "x", "ann@example.org", _settings(resolver))
    assert [line.result for line in res.dkim] == ["pass"] * MAX_SIGNATURES
    assert resolver.asked.count(("sel._domainkey.example.org", "TXT")) == MAX_SIGNATURES


@pytest.mark.parametrize("raw", [
    b" continuation first\r\nFrom: a@example.org\r\nDKIM-Signature: v=1; d=\r\n\r\nx",
    b"DKIM-Signature: \x00\xff;;;=\r\nFrom: a@example.org\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=!!\r\n"
    b"From: a@example.org\r\n\r\nbody",
    b"\xff\xfe DKIM-Signature\r\n\r\n",
])
def test_hostile_messages_get_results_not_exceptions(key, raw):
    res = authenticate(raw, OTHER, "", "", _settings(_dns(key)))
    assert res.spf.result and res.dkim and res.dmarc.result
    results_header(US, res).decode("ascii")


# -- DMARC's rules ------------------------------------------------------------------------

def test_a_record_must_start_with_its_version_and_name_a_policy():
    assert dmarc.parse_record(b"v=DMARC1; p=quarantine; sp=none; pct=20; adkim=s") == \
        dmarc.Policy(p="quarantine", sp="none", adkim="s", aspf="r", pct=20)
    assert dmarc.parse_record(b"v=DMARC1;p=reject") == dmarc.Policy("reject", "reject")
    for bad in (b"p=reject; v=DMARC1", b"v=DMARC1", b"v=DMARC1; p=drop", b"v=DMARC2; p=none",
                b"v=DMARC1; p=\xff"):
        assert dmarc.parse_record(bad) is None


def _lookup(records: dict[str, list[str]]) -> dmarc.TxtLookup:
    def lookup(name: str) -> list[bytes] | None:
        if records.get(name) == ["timeout"]:
            raise DnsTemporary(name)
        return [r.encode() for r in records[name]] if name in records else None
    return lookup


def test_a_subdomain_without_a_record_gets_its_organizations_sp():
    lookup = _lookup({"_dmarc.example.co.uk": ["v=DMARC1; p=none; sp=reject"]})
    verdict = dmarc.evaluate({"news.example.co.uk"}, None, [], lookup)
    assert (verdict.result, verdict.policy, verdict.junk) == ("fail", "reject", True)
    # relaxed alignment: the organization's other names align
    assert dmarc.evaluate({"news.example.co.uk"}, "bounces.example.co.uk", [],
                          lookup).result == "pass"
    strict = _lookup({"_dmarc.example.co.uk": ["v=DMARC1; p=reject; aspf=s; adkim=s"]})
    assert dmarc.evaluate({"example.co.uk"}, "bounces.example.co.uk", ["a.example.co.uk"],
                          strict).result == "fail"


def test_two_records_count_as_none_and_no_record_is_none():
    two = _lookup({"_dmarc.example.org": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]})
    assert dmarc.evaluate({"example.org"}, None, [], two).result == "none"
    assert dmarc.evaluate({"example.org"}, None, [], _lookup({})).result == "none"
    other_txt = _lookup({"_dmarc.example.org": ["google-site-verification=x",
                                                "v=DMARC1; p=reject"]})
    assert dmarc.evaluate({"example.org"}, None, [], other_txt).policy == "reject"


def test_pct_samples_the_policy_and_milder_is_applied_to_the_rest():
    lookup = _lookup({"_dmarc.example.org": ["v=DMARC1; p=quarantine; pct=10"]})
    assert dmarc.evaluate({"example.org"}, None, [], lookup, sample=lambda: 0.05).junk
    assert not dmarc.evaluate({"example.org"}, None, [], lookup, sample=lambda: 0.5).junk


def test_the_strictest_from_domain_decides_and_too_many_are_junk():
    lookup = _lookup({"_dmarc.a.example": ["v=DMARC1; p=none"],
                      "_dmarc.b.example": ["v=DMARC1; p=reject"]})
    verdict = dmarc.evaluate({"a.example", "b.example"}, "a.example", [], lookup)
    assert (verdict.from_domain, verdict.result, verdict.junk) == ("b.example", "fail", True)
    many = {f"d{i}.example" for i in range(dmarc.MAX_FROM_DOMAINS + 1)}
    assert dmarc.evaluate(many, None, [], lookup).junk
    assert dmarc.evaluate(set(), None, [], lookup).result == "permerror"
    assert dmarc.evaluate({"t.example"}, None, [],
                          _lookup({"_dmarc.t.example": ["timeout"]})).result == "temperror"


def test_author_domains_reads_from_only_and_survives_broken_headers():
    assert author_domains(b"From: Ann <ann@Example.ORG>\r\nSender: s@other.example") == \
        {"example.org"}
    assert author_domains(b"From: \"paypal.com\" <x@evil.example>, y@b.example") == \
        {"evil.example", "b.example"}
    assert author_domains(b"From: PayPal <service@paypal.com") == {"paypal.com"}
    assert author_domains(b"Subject: none") == set()


# -- the header we write, and the ones we remove ------------------------------------------

def test_values_from_senders_are_left_out_unless_they_are_plain_domains():
    res = AuthResults(MethodResult("spf", "none", (("smtp.mailfrom", "a; dkim=pass"),)),
                      (MethodResult("dkim", "fail", (("header.d", "x.example\r\nX: 1"),)),),
                      dmarc.Verdict("none", "example.org"))
    header = results_header(US, res).decode()
    assert "dkim=pass" not in header and "X: 1" not in header
    assert header.count("\r\n") == 4  # the first line and one per method


@pytest.mark.parametrize("value, authserv_id", [
    (b" mx.raftcloud.test; spf=pass", "mx.raftcloud.test"),
    (b"MX.RaftCloud.Test.; dkim=pass", "mx.raftcloud.test"),
    (b" (comment (nested)) mx.raftcloud.test 1; none", "mx.raftcloud.test"),
    (b' "mx.raftcloud.test"; none', "mx.raftcloud.test"),
    (b"\r\n\tmx.raftcloud.test;\r\n\tspf=pass", "mx.raftcloud.test"),
    (b" other.example; spf=pass", "other.example"),
])
def test_authserv_id_is_read_past_comments_and_folding(value, authserv_id):
    assert authserv_id_of(value) == authserv_id


def test_results_claiming_us_are_removed_and_the_rest_kept():
    raw = (b"Received: from a\r\nAuthentication-Results: mx.raftcloud.test;\r\n"
           b"\tdmarc=pass header.from=paypal.com\r\n"
           b"authentication-results: (x) MX.raftcloud.test; spf=pass\r\n"
           b"Authentication-Results: other.example; spf=fail\r\nSubject: s\r\n\r\n"
           b"Authentication-Results: mx.raftcloud.test; in the body stays\r\n")
    cleaned = without_our_results(raw, US)
    assert cleaned == (b"Received: from a\r\nAuthentication-Results: other.example; spf=fail\r\n"
                       b"Subject: s\r\n\r\n"
                       b"Authentication-Results: mx.raftcloud.test; in the body stays\r\n")
    lf_only = b"Authentication-Results: mx.raftcloud.test; x\nSubject: s\n\nbody\n"
    assert without_our_results(lf_only, US) == b"Subject: s\n\nbody\n"
    untouched = b"Subject: s\r\n\r\nbody"
    assert without_our_results(untouched, US) is untouched


# -- the handler files the message ---------------------------------------------------------

def _stranger_session() -> Session:
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = (OTHER, 40000)
    session.host_name = "evil.example"
    session.extended_smtp = True
    return session


def test_the_handler_files_a_dmarc_failure_in_junk_with_the_header(key):
    client = MemClient()
    accounts.create_user(client, "bob", "correct horse battery")
    forged = b"Authentication-Results: mx.raftcloud.test; dmarc=pass\r\n" + _message()
    handler = InboundHandler(InboundConfig(("raftcloud.test",), hostname=US,
                                           trusted_relays=()),
                             client, auth=_settings(_dns(key)))
    envelope = Envelope()
    envelope.mail_from, envelope.rcpt_tos = "x@evil.example", ["bob@raftcloud.test"]
    envelope.original_content = forged
    reply = asyncio.run(handler.handle_DATA(None, _stranger_session(), envelope))  # type: ignore[arg-type]
    assert reply.startswith("250")
    assert mailbox.list_messages(client, "bob") == []
    [junk] = mailbox.list_messages(client, "bob", "junk")
    stored = mailbox.get_message(client, "bob", junk.id) or b""
    assert stored.count(b"Authentication-Results:") == 1
    assert b"dmarc=fail (p=reject dis=reject) header.from=example.org" in stored

"""The cluster's DKIM keys (made once, sealed in the store) and the signatures smtpd puts on
outbound mail, checked with dkimpy against the record the keys' module prints."""

from __future__ import annotations

import logging

import dkim
import msgpack
import pytest

from raftkv.errors import ConfigError
from shards.model import dkimkeys
from smtpd.dkimsign import Signer, headers_to_sign
from smtpd.settings import SmtpdSettings

from .._memstore import MemClient

SEAL = b"k" * 32
DOMAINS = ("raftcloud.test", "example.test")


def _record_lookup(key: dkimkeys.DkimKey):
    name, text = dkimkeys.dns_record(key)

    def lookup(asked: bytes, timeout: float = 5) -> bytes | None:
        return text.encode() if asked.decode().rstrip(".") == name.rstrip(".") else None
    return lookup


def test_a_key_is_made_once_and_kept_sealed():
    client = MemClient()
    first = dkimkeys.load_or_create(client, SEAL, "RaftCloud.test.", "sel")
    again = dkimkeys.load_or_create(client, SEAL, "raftcloud.test", "sel")
    assert first.private_pem == again.private_pem and first.domain == "raftcloud.test"
    assert b"PRIVATE KEY" not in repr(first).encode() and "sel" in repr(first)
    stored = client.get(dkimkeys.KEYS_ROW, "raftcloud.test/sel")
    assert stored is not None
    record = msgpack.unpackb(stored.value, raw=False)
    assert first.private_pem not in stored.value and b"PRIVATE" not in stored.value
    assert record["alg"] == "rsa-sha256" and len(record["sealed"]) > 1000
    other_selector = dkimkeys.load_or_create(client, SEAL, "raftcloud.test", "other")
    assert other_selector.private_pem != first.private_pem


def test_a_key_sealed_with_another_secret_is_replaced_and_said(caplog):
    client = MemClient()
    old = dkimkeys.load_or_create(client, b"o" * 32, "raftcloud.test")
    with caplog.at_level(logging.WARNING, logger="shards.model.dkimkeys"):
        new = dkimkeys.load_or_create(client, SEAL, "raftcloud.test")
    assert new.private_pem != old.private_pem
    assert "publish its record again" in caplog.text
    assert dkimkeys.load_or_create(client, SEAL, "raftcloud.test").private_pem == new.private_pem


def test_the_record_is_a_dkim1_rsa_key_cut_into_txt_strings():
    key = dkimkeys.load_or_create(MemClient(), SEAL, "raftcloud.test")
    name, text = dkimkeys.dns_record(key)
    assert name == "raftcloud._domainkey.raftcloud.test."
    assert text.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # 2048-bit SubjectPublicKeyInfo
    line = dkimkeys.zone_line(name, text)
    strings = line.split(" IN TXT ")[1].split('" "')
    assert len(strings) == 2 and all(len(s.strip('"')) <= 255 for s in strings)
    assert "".join(s.strip('"') for s in strings) == text


@pytest.mark.parametrize("selector", ["", "a b", "-x", "x.", "s;v=1", "é", "a" * 64])
def test_a_bad_selector_stops_the_start(selector):
    with pytest.raises(ConfigError):
        SmtpdSettings.from_table({"dkim_selector": selector})
    assert SmtpdSettings.from_table({"dkim_selector": "mail-2025.a"}).dkim_selector == \
        "mail-2025.a"


def test_from_is_oversigned_and_only_present_fields_are_listed():
    raw = (b"From: a@raftcloud.test\r\nTo: b@x.example\r\nTo: c@x.example\r\n"
           b"X-Mailer: y\r\nSubject: s\r\n folded\r\n\r\nReply-To: not a header\r\n")
    assert headers_to_sign(raw) == [b"from", b"to", b"to", b"subject", b"from"]


def test_outbound_mail_is_signed_for_its_from_domain_and_verifies():
    client = MemClient()
    signer = Signer(client, SEAL, DOMAINS, "sel")
    signer.load_keys()
    raw = (b"From: Ann <ann@example.test>\nTo: bob@far.example\nSubject: hi\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.test>\n\nHello\n")
    signed = signer.sign(raw)
    assert signed is not None and signed.startswith(b"DKIM-Signature: ")
    assert b"\r\n" in signed and b"\n" not in signed.replace(b"\r\n", b"")  # CRLF throughout
    key = dkimkeys.load_or_create(client, SEAL, "example.test", "sel")
    assert dkim.verify(signed, dnsfunc=_record_lookup(key))
    fields = dkim.DKIM(signed)
    fields.verify(dnsfunc=_record_lookup(key))
    assert fields.signature_fields[b"d"] == b"example.test"
    assert fields.signature_fields[b"c"] == b"relaxed/relaxed"
    # the oversigned From: one added afterwards breaks the signature
    assert not dkim.verify(b"From: ceo@example.test\r\n" + signed, dnsfunc=_record_lookup(key))


def test_mail_not_from_our_domains_or_before_the_keys_load_is_not_signed():
    signer = Signer(MemClient(), SEAL, DOMAINS)
    raw = b"From: ann@example.test\r\n\r\nx\r\n"
    assert signer.sign(raw) is None  # keys not loaded yet
    signer.load_keys()
    assert signer.sign(raw) is not None
    assert signer.sign(b"From: x@elsewhere.example\r\n\r\nx\r\n") is None

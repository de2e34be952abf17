"""Mail a user sends always names the user in From: whatever the client wrote, never another."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from shards.model.outbound import own_addresses, with_own_from

OWN = own_addresses("bob", ("raftcloud.test", "example.org"))
ADDRESS = "bob@raftcloud.test"


def _from_addresses(raw: bytes) -> list[str]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return [a.addr_spec for value in message.get_all("From") or [] for a in value.addresses]


def test_a_message_from_its_user_is_kept_byte_for_byte():
    for raw in (b"From: Bob <bob@raftcloud.test>\r\nSubject: hi\r\n\r\nbody\r\n",
                b"Subject: hi\nFROM: BOB@example.org\n\nbody\n"):
        assert with_own_from(raw, ADDRESS, OWN) is raw


def test_a_forged_from_becomes_the_users_own_keeping_the_display_name():
    raw = (b"Received: by us\r\nFrom: Administrator <admin@raftcloud.test>\r\n"
           b"Subject: hi\r\n\r\nFrom: not a header\r\n")
    fixed = with_own_from(raw, ADDRESS, OWN)
    message = email.message_from_bytes(fixed, policy=email.policy.default)
    assert str(message["From"]) == "Administrator <bob@raftcloud.test>"
    assert message["Subject"] == "hi" and message["Received"] == "by us"
    assert fixed.endswith(b"\r\n\r\nFrom: not a header\r\n")  # the body is untouched


def test_sender_two_froms_several_addresses_and_no_from_all_end_as_one_own_from():
    for head in (b"From: bob@raftcloud.test\r\nSender: admin@raftcloud.test\r\n",
                 b"From: bob@raftcloud.test\r\nFrom: admin@raftcloud.test\r\n",
                 b"From: bob@raftcloud.test, admin@raftcloud.test\r\n",
                 b"From: admin@raftcloud.test\r\n (folded on)\r\n",
                 b"Subject: no from at all\r\n",
                 b"From: =?utf-8?q?Adm=0Ain?= <admin@raftcloud.test>\r\n",
                 b"From: \"quoted \\\" <x@y>\" <admin@raftcloud.test>\r\n",
                 b"From: <<<>>>@@@\r\n"):
        fixed = with_own_from(head + b"\r\nbody", ADDRESS, OWN)
        message = email.message_from_bytes(fixed, policy=email.policy.default)
        assert _from_addresses(fixed) == [ADDRESS], (head, fixed)
        assert message.get_all("Sender") is None
        assert message.get_payload() == "body"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["admin@raftcloud.test", "bob@raftcloud.test",
                                              "x@evil.example", ""]))
def test_any_display_name_ends_with_the_users_address(name, address):
    raw = email.message.EmailMessage()
    try:
        raw["From"] = email.utils.formataddr((name, address))
    except ValueError:
        return  # the email package refuses a line break in a header: nothing to send
    raw["Subject"] = "hi"
    raw.set_content("body")
    fixed = with_own_from(raw.as_bytes(), ADDRESS, OWN)
    assert _from_addresses(fixed) == [ADDRESS]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_header_bytes_end_with_only_the_users_address(head):
    fixed = with_own_from(b"From: admin@raftcloud.test\r\n" + head + b"\r\n\r\nbody",
                          ADDRESS, OWN)
    assert _from_addresses(fixed) == [ADDRESS]

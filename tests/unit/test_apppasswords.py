"""App passwords' model (shards.model.apppasswords) against the real state machine, in process."""

from __future__ import annotations

import math

import msgpack
import pyotp
import pytest

from shards.model import accounts, apppasswords, erase, ratelimit, twofactor
from shards.model.ratelimit import Limits, Rule

from .._memstore import MemClient

KEY = b"k" * 32
PASSWORD = "correct horse battery"
NOW = 1_800_000_000.0
SMALL = Limits(address=Rule(free=50, window=100.0, delay=2.0, max_delay=16.0),
               pair=Rule(free=3, window=100.0, delay=5.0, max_delay=20.0),
               account=Rule(free=50, window=100.0, delay=100.0, max_delay=100.0))


@pytest.fixture
def client() -> MemClient:
    client = MemClient()
    accounts.create_user(client, "alice", PASSWORD)
    return client


def _check(client, text: str, address: str = "192.0.2.1", key: bytes = KEY, now: float = NOW):
    return apppasswords.check_credential(client, "alice", text, address, SMALL, key, now=now)


def _two_factor_on(client) -> None:
    secret = twofactor.begin_enrolment(client, "alice")
    twofactor.confirm_enrolment(client, "alice", pyotp.TOTP(secret).at(NOW), now=NOW)


def test_an_app_password_has_80_random_bits_and_is_stored_only_as_a_keyed_hash(client):
    assert len(set(apppasswords.ALPHABET)) == 32 and apppasswords.LENGTH * math.log2(32) >= 80
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    assert len(secret) == 19 and [len(g) for g in secret.split(" ")] == [4, 4, 4, 4]
    assert secret != apppasswords.create(client, "alice", "Laptop", KEY, now=NOW)
    stored = b"".join(c.value for c in client.get_row("{alice}/apppw").values())
    assert secret.replace(" ", "").encode() not in stored
    assert {p.name for p in apppasswords.list_for(client, "alice")} == {"Phone", "Laptop"}


def test_the_right_app_password_is_accepted_typed_any_way_and_a_wrong_one_or_key_is_not(client):
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    for typed in (secret, secret.replace(" ", ""), secret.upper().replace(" ", "-")):
        checked = _check(client, typed)
        assert checked.right and checked.app_password == "Phone", typed
    assert not _check(client, secret, key=b"x" * 32).right  # another cluster's secret
    wrong = ("b" if secret[0] != "b" else "c") + secret[1:]
    assert not _check(client, wrong).right
    other = MemClient()
    accounts.create_user(other, "bob", PASSWORD)  # the same letters are not bob's
    assert apppasswords.matching(client, "bob", secret, KEY) is None


def test_without_two_factor_the_account_password_works_and_with_it_only_app_passwords(client):
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    assert _check(client, PASSWORD).right
    _two_factor_on(client)
    refused = _check(client, PASSWORD)
    assert not refused.right and refused.needs_app_password and not refused.limited
    assert _check(client, secret).right
    assert not _check(client, "not the password").needs_app_password


def test_the_refused_account_password_does_not_count_as_a_failure(client):
    """A phone still using the old password after two-factor goes on must not lock anyone out."""
    _two_factor_on(client)
    for _ in range(SMALL.pair.free + 3):
        assert _check(client, PASSWORD).needs_app_password
    assert client.get(*ratelimit.pair_key("alice", "192.0.2.1")) is None


def test_wrong_app_passwords_count_in_the_shared_limiter(client):
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    wrong = "aaaa aaaa aaaa aaaa" if secret != "aaaa aaaa aaaa aaaa" else "bbbb bbbb bbbb bbbb"
    for _ in range(SMALL.pair.free):
        assert not _check(client, wrong).limited
    assert _check(client, secret).limited  # the right one too: refused unchecked
    assert _check(client, secret, address="192.0.2.9").right  # another address is not slowed
    # ...and the web login's own check sees the same counter.
    assert ratelimit.check_password(client, "alice", PASSWORD, "192.0.2.1", SMALL,
                                    now=NOW).limited


def test_revoked_app_passwords_stop_working(client):
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    keep = apppasswords.create(client, "alice", "Laptop", KEY, now=NOW)
    phone = next(p for p in apppasswords.list_for(client, "alice") if p.name == "Phone")
    assert apppasswords.revoke(client, "alice", phone.id) == "Phone"
    assert not _check(client, secret).right
    assert _check(client, keep).right
    with pytest.raises(apppasswords.AppPasswordError):
        apppasswords.revoke(client, "alice", phone.id)


def test_last_used_is_written_at_most_once_an_hour(client):
    secret = apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    assert apppasswords.list_for(client, "alice")[0].used == 0
    assert apppasswords.matching(client, "alice", secret, KEY, now=NOW + 10)
    version = client.get("{alice}/apppw", "list").version
    assert apppasswords.matching(client, "alice", secret, KEY, now=NOW + 600)
    assert client.get("{alice}/apppw", "list").version == version  # no write within the hour
    assert apppasswords.list_for(client, "alice")[0].used == NOW + 10
    assert apppasswords.matching(client, "alice", secret, KEY, now=NOW + 10 + 3600)
    assert apppasswords.list_for(client, "alice")[0].used == NOW + 3610


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\x00b", "tab\u202eevil", "\x1b[31m"])
def test_bad_names_are_refused(client, name):
    with pytest.raises(apppasswords.AppPasswordError):
        apppasswords.create(client, "alice", name, KEY, now=NOW)
    assert apppasswords.list_for(client, "alice") == []


def test_a_user_has_at_most_twenty(client):
    for i in range(apppasswords.MAX_PER_USER):
        apppasswords.create(client, "alice", f"device {i}", KEY, now=NOW)
    with pytest.raises(apppasswords.AppPasswordError, match="most"):
        apppasswords.create(client, "alice", "one more", KEY, now=NOW)
    assert len(apppasswords.list_for(client, "alice")) == apppasswords.MAX_PER_USER


@pytest.mark.parametrize("text", ["", "x" * 10_000, "١٢٣٤" * 4, "\x00" * 16, "ａｂｃｄ" * 4])
def test_odd_input_is_a_wrong_password_not_an_error(client, text):
    apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    assert apppasswords.matching(client, "alice", "\udcff" * 16, KEY) is None
    assert not apppasswords.check_credential(client, "alice", text, "192.0.2.7", SMALL, KEY,
                                             now=NOW).right
    assert not apppasswords.check_credential(client, "../{x}", text, "192.0.2.7", SMALL, KEY,
                                             now=NOW).right


def test_a_garbage_cell_is_no_app_passwords(client):
    client.put("{alice}/apppw", "list", msgpack.packb({"not": "a list"}))
    assert apppasswords.list_for(client, "alice") == []
    assert not _check(client, "aaaa aaaa aaaa aaaa").right


def test_deleting_the_account_removes_its_app_passwords(client):
    apppasswords.create(client, "alice", "Phone", KEY, now=NOW)
    erase.erase_account(client, "alice", domains=["raftcloud.test"], end_sessions=lambda: None)
    assert client.get_row("{alice}/apppw") == {}

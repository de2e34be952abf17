"""Two-factor sign-in's model: TOTP codes used once, recovery codes used once, pending logins."""

from __future__ import annotations

import pyotp
import pytest

from shards.model import twofactor

from .._memstore import MemClient

NOW = 1_800_000_000.0


def _enrolled(client: MemClient, user: str = "alice") -> tuple[str, list[str]]:
    secret = twofactor.begin_enrolment(client, user)
    assert not twofactor.is_enabled(client, user)
    codes = twofactor.confirm_enrolment(client, user, pyotp.TOTP(secret).at(NOW), now=NOW)
    assert twofactor.is_enabled(client, user)
    return secret, codes


def test_a_wrong_code_does_not_confirm_enrolment():
    client = MemClient()
    twofactor.begin_enrolment(client, "alice")
    with pytest.raises(twofactor.TwoFactorError):
        twofactor.confirm_enrolment(client, "alice", "000000x", now=NOW)
    assert not twofactor.is_enabled(client, "alice")


def test_a_code_works_once_and_earlier_codes_not_at_all():
    client = MemClient()
    secret, _ = _enrolled(client)
    totp = pyotp.TOTP(secret)
    later = NOW + 60
    assert twofactor.use_code(client, "alice", totp.at(later), now=later)
    assert not twofactor.use_code(client, "alice", totp.at(later), now=later)  # replayed
    assert not twofactor.use_code(client, "alice", totp.at(NOW + 30), now=later)  # older step


def test_recovery_codes_work_once_each():
    client = MemClient()
    _, codes = _enrolled(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert twofactor.use_code(client, "alice", codes[3].upper(), now=NOW)
    assert not twofactor.use_code(client, "alice", codes[3], now=NOW)
    assert twofactor.recovery_left(client, "alice") == 9
    # Stored hashed: no code appears in the cell.
    cell = client.get("user/alice", twofactor.TOTP_COL)
    assert not any(code.encode() in cell.value for code in codes)


def test_a_pending_login_is_bound_to_its_browser_and_ends_after_five_tries():
    client = MemClient()
    token = twofactor.start_pending(client, "alice", "sid-a", "/drive", now=NOW)
    assert twofactor.take_try(client, "alice", token, "sid-b", now=NOW) is None
    tries = [twofactor.take_try(client, "alice", token, "sid-a", now=NOW)
             for _ in range(twofactor.MAX_TRIES)]
    assert [t.tries_left for t in tries] == [4, 3, 2, 1, 0] and tries[0].next == "/drive"
    assert twofactor.take_try(client, "alice", token, "sid-a", now=NOW) is None
    assert client.get_row("{alice}/login", prefix="p:") == {}


def test_a_pending_login_expires():
    client = MemClient()
    token = twofactor.start_pending(client, "alice", "sid-a", "/", now=NOW)
    assert twofactor.take_try(client, "alice", token, "sid-a",
                              now=NOW + twofactor.PENDING_TTL + 1) is None


def test_codes_that_are_not_ascii_digits_are_simply_wrong():
    client = MemClient()
    _enrolled(client)
    for code in ("\u0661\u0662\u0663\u0664\u0665\u0666", "12345\u00bd", "x" * 64, "", "\udcff"):
        assert not twofactor.use_code(client, "alice", code, now=NOW + 60)


def test_an_account_keeps_only_its_newest_pending_logins():
    client = MemClient()
    tokens = [twofactor.start_pending(client, "alice", "sid-a", "/", now=NOW + i)
              for i in range(3 * twofactor.MAX_PENDING)]
    assert len(client.get_row("{alice}/login", prefix="p:")) == twofactor.MAX_PENDING
    newest = tokens[-twofactor.MAX_PENDING:]
    assert all(twofactor.take_try(client, "alice", t, "sid-a", now=NOW + 20) for t in newest)
    assert twofactor.take_try(client, "alice", tokens[0], "sid-a", now=NOW + 20) is None

"""Account passwords that cannot be UTF-8 encoded are refused, never an exception."""

from __future__ import annotations

import pytest

from shards.model import accounts

from .._memstore import MemClient

LONE_SURROGATE = "correct horse \udc80 battery"


def test_a_lone_surrogate_is_no_valid_new_password():
    with pytest.raises(accounts.InvalidPassword):
        accounts.check_password_rules(LONE_SURROGATE)


def test_a_lone_surrogate_is_a_wrong_password_not_an_error():
    client = MemClient()
    accounts.create_user(client, "carol", "correct horse battery")
    assert accounts.verify_password(client, "carol", LONE_SURROGATE) is False
    assert accounts.verify_password(client, "carol", "correct horse battery") is True

"""The share pages' own pieces (portal.share_pages, portal.drive_shares), without sockets."""

from __future__ import annotations

import pytest
from werkzeug.exceptions import BadRequest

from portal.drive_shares import item_ref
from portal.share_pages import UNLOCK_TTL, unlock_cookie, unlocked
from shards.model.drive import FILE, FOLDER, ROOT
from shards.model.drive.shares import Share

KEY = b"k" * 32
SHARE = Share(hash="ab" * 32, owner="alice", item_id="0" * 24, kind=FOLDER, created=0.0,
              password="$argon2id$...")


def test_an_unlock_cookie_opens_its_link_for_an_hour_and_nothing_else():
    cookie = unlock_cookie(KEY, SHARE, 1000.0)
    assert unlocked(KEY, SHARE, cookie, 1000.0)
    assert unlocked(KEY, SHARE, cookie, 1000.0 + UNLOCK_TTL - 1)
    assert not unlocked(KEY, SHARE, cookie, 1000.0 + UNLOCK_TTL + 1)
    other = Share(**{**SHARE.__dict__, "hash": "cd" * 32})
    remade = Share(**{**SHARE.__dict__, "password": "$argon2id$other"})
    assert not unlocked(KEY, other, cookie, 1000.0)
    assert not unlocked(KEY, remade, cookie, 1000.0)
    assert not unlocked(b"x" * 32, SHARE, cookie, 1000.0)
    until, _, mac = cookie.partition(".")
    far = str(int(until) + 10 * UNLOCK_TTL)
    assert not unlocked(KEY, SHARE, f"{far}.{mac}", 1000.0)  # a later expiry is not signed
    for junk in (None, "", ".", "x.y", "1e9.ab", "-1.ab", f"{until}."):
        assert not unlocked(KEY, SHARE, junk, 1000.0)


def test_the_item_field_takes_only_a_kind_and_an_id():
    assert item_ref("f:" + "a" * 24) == (FILE, "a" * 24)
    assert item_ref("d:root") == (FOLDER, ROOT)
    for bad in (None, "", "f:root", "x:" + "a" * 24, "d:../etc", "f:" + "A" * 24, "d:"):
        with pytest.raises(BadRequest):
            item_ref(bad)

"""Share links and drive search (shards.model.drive.shares, .search) on the real state
machine, without sockets; and the limiter's counters for links (shards.model.ratelimit)."""

from __future__ import annotations

import time

import pytest

from shards.model import drive, ratelimit
from shards.model.drive import FILE, FOLDER, ROOT, search, shares
from shards.model.errors import NoSuchItem

from .._drive import small_tree, stored
from .._memstore import MemClient

USER = "alice"


@pytest.fixture
def client() -> MemClient:
    return MemClient()


def put_file(client, parent: str, name: str, content: bytes = b"hello", user: str = USER):
    return stored(client, user, parent, name, content, ctype="text/plain")


def tree(client):
    return small_tree(client, USER)


# -- share links -----------------------------------------------------------------------------

def test_a_link_is_256_random_bits_and_only_its_hash_is_stored(client):
    t = tree(client)
    token, share = shares.create_share(client, USER, FILE, t["a"].id)
    assert shares.valid_token(token) and len(token) == 43
    dump = repr(client.get_row(shares.link_row(share.hash))) + repr(
        client.get_row(shares.shares_row(USER)))
    assert token not in dump and share.hash in repr(client.get_row(shares.shares_row(USER)))
    found = shares.lookup(client, token)
    assert found is not None and (found.owner, found.item_id, found.kind) == (USER, t["a"].id, FILE)
    assert shares.lookup(client, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert shares.lookup(client, "../../etc") is None and shares.lookup(client, "") is None


def test_a_folder_share_reaches_exactly_its_tree(client):
    t = tree(client)
    token, _ = shares.create_share(client, USER, FOLDER, t["docs"].id)
    share = shares.lookup(client, token)
    item, path = shares.resolve(client, share, FILE, t["plan"].id)
    assert item.name == "plan.txt" and [f.name for f in path] == ["docs", "work"]
    folder, path = shares.resolve(client, share, FOLDER, t["work"].id)
    assert folder.id == t["work"].id and [f.id for f in path] == [t["docs"].id, t["work"].id]
    assert shares.resolve(client, share, FOLDER, t["docs"].id)[1][-1].id == t["docs"].id
    for kind, outside in [(FILE, t["secret"].id), (FOLDER, t["private"].id), (FOLDER, ROOT),
                          (FILE, "0" * 24), (FOLDER, "../x"), (FILE, t["docs"].id)]:
        with pytest.raises(NoSuchItem):
            shares.resolve(client, share, kind, outside)


def test_a_file_share_reaches_only_that_file(client):
    t = tree(client)
    share = shares.lookup(client, shares.create_share(client, USER, FILE, t["a"].id)[0])
    assert shares.resolve(client, share, FILE, t["a"].id)[0].id == t["a"].id
    for kind, other in [(FILE, t["plan"].id), (FOLDER, t["docs"].id)]:
        with pytest.raises(NoSuchItem):
            shares.resolve(client, share, kind, other)


def test_a_moved_out_item_is_no_longer_reachable(client):
    t = tree(client)
    share = shares.lookup(client, shares.create_share(client, USER, FOLDER, t["docs"].id)[0])
    drive.move(client, USER, FILE, t["plan"].id, t["private"].id)
    with pytest.raises(NoSuchItem):
        shares.resolve(client, share, FILE, t["plan"].id)


def test_password_expiry_and_the_owners_list(client):
    t = tree(client)
    now = time.time()
    token, share = shares.create_share(client, USER, FOLDER, t["docs"].id, password="open sesame",
                                       expires=now + 60, now=now)
    found = shares.lookup(client, token)
    assert found.has_password and found.password.startswith("$argon2")
    assert found.check_password("open sesame") and not found.check_password("open")
    assert not found.check_password("\udcff")
    assert not found.expired(now + 59) and found.expired(now + 60)
    listed = shares.owned(client, USER)
    assert [(s.hash, s.item_id, s.has_password) for s in listed] == [(share.hash, t["docs"].id, True)]
    assert "argon2" not in repr(client.get_row(shares.shares_row(USER)))
    items = shares.shared_items(client, USER, listed)
    assert items[t["docs"].id].name == "docs"


def test_revoke_ends_the_link_and_only_the_owner_can(client):
    t = tree(client)
    token, share = shares.create_share(client, USER, FILE, t["a"].id)
    assert not shares.revoke(client, "mallory", share.hash)
    assert shares.lookup(client, token) is not None
    assert not shares.revoke(client, USER, "nothex")
    assert shares.revoke(client, USER, share.hash)
    assert shares.lookup(client, token) is None and shares.owned(client, USER) == []
    assert not shares.revoke(client, USER, share.hash)


def test_a_create_cut_after_the_owners_list_is_listed_and_revocable(client, monkeypatch):
    t = tree(client)
    real = client.mutate_row
    def crash_on_lookup(row, conditions, mutations, **kw):
        if row.startswith("share/"):
            raise ConnectionError("crashed between the two writes")
        return real(row, conditions, mutations, **kw)
    monkeypatch.setattr(client, "mutate_row", crash_on_lookup)
    with pytest.raises(ConnectionError):
        shares.create_share(client, USER, FILE, t["a"].id)
    monkeypatch.setattr(client, "mutate_row", real)
    [listed] = shares.owned(client, USER)
    assert client.get(shares.link_row(listed.hash), shares.LINK_COL) is None
    assert shares.revoke(client, USER, listed.hash) and shares.owned(client, USER) == []


def test_links_per_user_are_bounded(client, monkeypatch):
    t = tree(client)
    monkeypatch.setattr(shares, "MAX_SHARES", 3)
    for _ in range(3):
        shares.create_share(client, USER, FILE, t["a"].id)
    with pytest.raises(shares.TooManyShares):
        shares.create_share(client, USER, FILE, t["a"].id)
    with pytest.raises(NoSuchItem):
        shares.create_share(client, "bob", FILE, t["a"].id)


# -- the limiter's link counters ----------------------------------------------------------

def test_link_misses_from_one_address_are_refused_after_the_free_ones(client):
    limits = ratelimit.Limits(link=ratelimit.Rule(free=3, window=60, delay=10, max_delay=60))
    now = 1000.0
    for _ in range(3):
        assert ratelimit.link_miss_wait(client, "10.0.0.1", now=now) == 0
        assert ratelimit.count_link_miss(client, "10.0.0.1", limits, now=now) == 0
    assert ratelimit.link_miss_wait(client, "10.0.0.1", now=now) == pytest.approx(10)
    assert ratelimit.link_miss_wait(client, "10.0.0.2", now=now) == 0
    assert ratelimit.link_miss_wait(client, "10.0.0.1", now=now + 11) == 0


def test_link_passwords_share_the_address_budget_and_have_their_own(client):
    limits = ratelimit.Limits(pair=ratelimit.Rule(free=2, window=60, delay=30, max_delay=60))
    now = 1000.0
    for _ in range(2):
        verdict = ratelimit.check_link_password(client, "ab" * 32, "10.0.0.1", limits,
                                                lambda: False, now=now)
        assert not verdict.right and not verdict.limited
    limited = ratelimit.check_link_password(client, "ab" * 32, "10.0.0.9", limits, lambda: True,
                                            now=now)
    assert limited.limited  # the link's own counter, whatever the address
    assert ratelimit.check_link_password(client, "cd" * 32, "10.0.0.9", limits, lambda: True,
                                         now=now).right
    start, count, _ = ratelimit._state(client.get(*ratelimit.address_key("10.0.0.1")).value)
    assert count == 2  # the wrong ones count where logins count


# -- search -----------------------------------------------------------------------------------

def test_search_by_substring_and_word_prefix_with_paths(client):
    t = tree(client)
    put_file(client, t["work"].id, "Quarterly Report.PDF")
    put_file(client, ROOT, "report-draft.txt")
    put_file(client, ROOT, "misreported.txt")
    found = search.search(client, USER, "REPORT")
    assert [(m.item.name, m.path) for m in found.matches] == [
        ("report-draft.txt", ()), ("Quarterly Report.PDF", ("docs", "work")),
        ("misreported.txt", ())]
    assert not found.more and not found.partial
    assert [m.item.name for m in search.search(client, USER, "wor").matches] == ["work"]
    assert [m.item.name for m in search.search(client, USER, "plan txt").matches] == ["plan.txt"]
    assert search.search(client, USER, "   ").matches == ()
    assert search.search(client, "bob", "report").matches == ()


def test_search_says_when_it_was_cut_short(client):
    for i in range(12):
        put_file(client, ROOT, f"note {i:02}.txt")
    drive.create_folder(client, USER, ROOT, "notes")
    found = search.search(client, USER, "note", limit=5)
    assert len(found.matches) == 5 and found.more and not found.partial
    assert found.matches[0].item.name == "note 00.txt" or found.matches[0].item.name == "notes"
    partial = search.search(client, USER, "note", scan=6)
    assert partial.partial and len(partial.matches) == 6

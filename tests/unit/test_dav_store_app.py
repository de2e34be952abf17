"""The store's lock storage and property manager inside WsgiDAV, two apps (two frontends)
on one in-process store: what a client sees through the protocol."""

from __future__ import annotations

import re

import pytest

from shards.model import davlocks

from .._davstore import DavClient, dav_app
from .._memstore import MemClient


@pytest.fixture
def frontends(tmp_path):
    store = MemClient()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.txt").write_bytes(b"x")
    (tmp_path / "f.txt").write_bytes(b"f")
    return DavClient(dav_app(store, tmp_path)), DavClient(dav_app(store, tmp_path)), store


def test_a_lock_taken_through_web1_holds_on_web2_until_unlocked_there(frontends):
    web1, web2, _ = frontends
    locked = web1.lock("/dav/f.txt", Timeout="Second-600")
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"]
    assert token[1:-1].encode() in locked.data          # its own lockdiscovery shows it
    assert web2.request("PUT", "/dav/f.txt", b"other").status_code == 423
    assert web2.request("PUT", "/dav/f.txt", b"mine", If=f"({token})").status_code == 204
    assert web2.lock("/dav/f.txt").status_code == 423
    assert b"opaquelocktoken" in web2.propfind("/dav/f.txt").data     # lockdiscovery
    assert web2.request("UNLOCK", "/dav/f.txt", Lock_Token=token).status_code == 204
    assert web1.request("PUT", "/dav/f.txt", b"free").status_code == 204


def _refused_as_locked(answer) -> bool:
    """423, or a 207 whose only member status is 423 (RFC 4918, 9.6.1 for DELETE)."""
    statuses = set(re.findall(rb"HTTP/1.1 (\d+)", answer.data))
    return answer.status_code == 423 or (answer.status_code == 207 and statuses == {b"423"})


def test_a_locked_member_blocks_delete_and_move_of_its_folder_elsewhere(frontends, tmp_path):
    web1, web2, _ = frontends
    assert web1.lock("/dav/dir/x.txt", Depth="0").status_code == 200
    assert _refused_as_locked(web2.request("MOVE", "/dav/dir",
                                           Destination="http://localhost/dav/moved"))
    assert (tmp_path / "dir" / "x.txt").read_bytes() == b"x"
    assert web2.request("PUT", "/dav/dir/new.txt", b"n").status_code == 201  # a new name is free
    # (What WsgiDAV's FilesystemProvider then deletes anyway is its own affair: the drive's
    # provider deletes a tree in one mutation, after this same check.)
    assert _refused_as_locked(web2.request("DELETE", "/dav/dir"))


def test_a_year_long_or_infinite_lock_gets_an_hour(frontends):
    web1, _, store = frontends
    for path, timeout in (("/dav/f.txt", "Second-31536000"), ("/dav/dir", "Infinite")):
        answer = web1.lock(path, Timeout=timeout)
        granted = int(re.search(rb"Second-(\d+)", answer.data).group(1))
        assert 3590 <= granted <= 3600
    locks = davlocks.locks_at(store, "alice", "/", include_children=True)
    assert sorted(lock.timeout for lock in locks) == [3600.0, 3600.0]


def test_refreshing_an_expired_lock_is_refused(frontends, monkeypatch):
    web1, web2, _ = frontends
    token = web1.lock("/dav/f.txt", Timeout="Second-5").headers["Lock-Token"]
    later = davlocks.clock() + 6
    monkeypatch.setattr(davlocks, "clock", lambda: later)
    assert web2.request("LOCK", "/dav/f.txt", If=f"({token})").status_code == 412
    assert web2.request("PUT", "/dav/f.txt", b"x").status_code == 204       # the lock is gone


def test_another_user_cannot_unlock_or_see_a_lock(frontends, tmp_path):
    web1, _, store = frontends
    token = web1.lock("/dav/f.txt").headers["Lock-Token"]
    bob = DavClient(dav_app(store, tmp_path), "bob")
    assert bob.request("UNLOCK", "/dav/f.txt", Lock_Token=token).status_code == 409
    assert b"opaquelocktoken" not in bob.propfind("/dav/f.txt").data


def test_a_property_set_through_web1_is_seen_through_web2(frontends):
    web1, web2, _ = frontends
    assert web1.proppatch("/dav/f.txt", "colour", "red").status_code == 207
    found = web2.propfind("/dav/f.txt")
    assert found.status_code == 207 and b">red<" in found.data


def test_an_oversized_property_is_refused_and_nothing_is_written(frontends):
    web1, web2, _ = frontends
    answer = web1.proppatch("/dav/f.txt", "big", "x" * 20_000)
    assert answer.status_code == 207 and b"507" in answer.data
    assert b"big" not in web2.propfind("/dav/f.txt").data

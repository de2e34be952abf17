"""The WebDAV door with its locks and dead properties in the store: two portals on one
in-memory store are two frontends (or two workers), and see the same locks and
properties; properties follow the drive item through a move, a copy, the Trash and
a restore, and go when the item is gone for good."""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import pytest
from werkzeug.test import Client as HTTPClient

from portal.dav.paths import resolve
from portal.heartbeat import TrashSweeper
from shards.model import accounts, davprops, drive

from .._memstore import MemClient
from .._portal import PASSWORD, unique, unit_portal

LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner>'
            b'</D:lockinfo>')
PROPPATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
             b'<D:prop><Z:colour>%s</Z:colour></D:prop></D:set></D:propertyupdate>')
COLOUR = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:colour/>'
          b'</D:prop></D:propfind>')


@pytest.fixture
def store() -> MemClient:
    return MemClient()


@pytest.fixture
def user(store: MemClient) -> str:
    name = unique()
    accounts.create_user(store, name, PASSWORD)
    return name


@pytest.fixture
def web(store, user):
    """Two frontends' WebDAV, signed in as ``user``: web[0](method, path, ...)."""
    portals = [unit_portal(store), unit_portal(store)]
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def caller(portal):
        http = HTTPClient(portal)

        def call(method: str, path: str, body: bytes = b"", **headers: str):
            headers = {k.replace("_", "-"): v for k, v in headers.items()}
            return http.open(path, method=method, data=body,
                             headers={"Authorization": f"Basic {token}", **headers})
        return call
    yield [caller(p) for p in portals]
    for portal in portals:
        portal.close()


def colour(call, path: str) -> bytes | None:
    answer = call("PROPFIND", path, COLOUR, Depth="0")
    assert answer.status_code == 207
    found = re.search(rb"<[\w:]*colour[^/>]*>([^<]*)</", answer.data)  # not <colour />
    return None if found is None else found.group(1)


def test_a_lock_through_one_frontend_holds_on_the_other(web):
    one, two = web
    assert one("PUT", "/dav/f.txt", b"first").status_code == 201
    locked = one("LOCK", "/dav/f.txt", LOCKINFO, Timeout="Second-600")
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"]
    assert two("PUT", "/dav/f.txt", b"other").status_code == 423
    assert two("PUT", "/dav/f.txt", b"mine", If=f"({token})").status_code == 204
    assert two("UNLOCK", "/dav/f.txt", Lock_Token=token).status_code == 204
    assert one("PUT", "/dav/f.txt", b"free").status_code == 204
    assert two("GET", "/dav/f.txt").data == b"free"


def test_a_folder_with_a_locked_member_is_not_deleted_by_the_other_frontend(web, store, user):
    one, two = web
    one("MKCOL", "/dav/d")
    one("PUT", "/dav/d/x.txt", b"x")
    assert one("LOCK", "/dav/d/x.txt", LOCKINFO, Depth="0").status_code == 200
    answer = two("DELETE", "/dav/d")
    statuses = set(re.findall(rb"HTTP/1.1 (\d+)", answer.data))
    assert answer.status_code == 423 or (answer.status_code == 207 and statuses == {b"423"})
    assert two("GET", "/dav/d/x.txt").data == b"x"
    assert drive.list_trash(store, user) == []


def test_another_user_has_none_of_the_locks_or_properties(web, store):
    one, _ = web
    one("PUT", "/dav/f.txt", b"f")
    one("PROPPATCH", "/dav/f.txt", PROPPATCH % b"red")
    token = one("LOCK", "/dav/f.txt", LOCKINFO).headers["Lock-Token"]
    bob = unique()
    accounts.create_user(store, bob, PASSWORD)
    portal = unit_portal(store)
    try:
        auth = base64.b64encode(f"{bob}:{PASSWORD}".encode()).decode()
        http = HTTPClient(portal)

        def theirs(method: str, path: str, body: bytes = b"", **headers: str):
            headers = {k.replace("_", "-"): v for k, v in headers.items()}
            return http.open(path, method=method, data=body,
                             headers={"Authorization": f"Basic {auth}", **headers})
        assert theirs("PUT", "/dav/f.txt", b"bob's").status_code == 201  # their own f.txt
        assert colour(theirs, "/dav/f.txt") is None
        assert theirs("UNLOCK", "/dav/f.txt", Lock_Token=token).status_code == 409
    finally:
        portal.close()
    assert one("PUT", "/dav/f.txt", b"x").status_code == 423


def test_properties_follow_the_item_and_go_when_it_is_gone_for_good(web, store, user):
    one, two = web
    one("MKCOL", "/dav/d")
    one("PUT", "/dav/d/a.txt", b"a")
    assert one("PROPPATCH", "/dav/d/a.txt", PROPPATCH % b"red").status_code == 207
    assert colour(two, "/dav/d/a.txt") == b"red"
    # A move keeps the item, and its properties; a copy gets its own.
    assert two("MOVE", "/dav/d/a.txt", Destination="http://localhost/dav/b.txt").status_code == 201
    assert colour(one, "/dav/b.txt") == b"red"
    assert one("COPY", "/dav/b.txt", Destination="http://localhost/dav/c.txt").status_code == 201
    one("PROPPATCH", "/dav/c.txt", PROPPATCH % b"blue")
    assert (colour(two, "/dav/b.txt"), colour(two, "/dav/c.txt")) == (b"red", b"blue")
    red, blue = (resolve(store, user, path).item.id for path in ("/b.txt", "/c.txt"))
    # Overwritten by a MOVE: the destination goes into the Trash, properties and all.
    assert two("MOVE", "/dav/c.txt", Destination="http://localhost/dav/b.txt",
               Overwrite="T").status_code == 204
    assert colour(one, "/dav/b.txt") == b"blue"
    # Deleted: in the Trash with its properties; restored, it has them again.
    assert one("DELETE", "/dav/b.txt").status_code == 204
    assert {t.item.id for t in drive.list_trash(store, user)} == {red, blue}
    drive.restore(store, user, blue)
    assert colour(two, "/dav/b.txt") == b"blue"
    # Gone for good: the frontends' Trash sweep removes what is left of their properties.
    assert davprops.read_all(store, user, red) != {}
    drive.empty_trash(store, user)
    portal = SimpleNamespace(client=lambda: store, config=None)
    TrashSweeper(portal, interval=3600).sweep_drive(store, user)  # type: ignore[arg-type]
    assert davprops.read_all(store, user, red) == {}
    assert colour(one, "/dav/b.txt") == b"blue"

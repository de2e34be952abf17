"""Folders shared with named users over WebDAV (portal.dav.shared) on the in-memory store:
``/dav/Shared with me/`` lists them and refuses changes of its own; inside, read-only
grants read and every write is a 403, read-write ones change the owner's drive on the
owner's quota; a revoke stops the next request; locks and properties are the owner's;
names do not clash; a user's own "Shared with me" is not lost."""

from __future__ import annotations

import base64
import io
import re
from urllib.parse import quote, unquote

import pytest
from werkzeug.test import Client as HTTPClient

from portal.dav.shared import MINE, SHARED, tree_names
from shards.model import accounts, davlocks, drive
from shards.model.drive import ROOT, grants

from .._memstore import MemClient
from .._portal import PASSWORD, unique, unit_portal

HOST = "http://localhost"
TOP = "/dav/" + quote(SHARED)
LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner>'
            b'</D:lockinfo>')
PROPPATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
             b'<D:prop><Z:colour>red</Z:colour></D:prop></D:set></D:propertyupdate>')


@pytest.fixture
def store() -> MemClient:
    return MemClient()


@pytest.fixture
def portals(store):
    """Two frontends on one store."""
    made = [unit_portal(store), unit_portal(store)]
    yield made
    for portal in made:
        portal.close()


def dav(portal, user: str):
    http = HTTPClient(portal)
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()

    def call(method: str, path: str, body: bytes = b"", **headers: str):
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        return http.open(path, method=method, data=body,
                         headers={"Authorization": f"Basic {token}", **headers})
    return call


def hrefs(answer) -> list[str]:
    assert answer.status_code == 207, answer.data
    return [quote(unquote(h)) for h in re.findall(r"<(?:\w+:)?href>([^<]*)</",
                                                   answer.data.decode())]


def person(store) -> str:
    name = unique()
    accounts.create_user(store, name, PASSWORD)
    return name


def put(store, owner: str, folder: str, name: str, data: bytes) -> drive.Item:
    return drive.store_file(store, owner, folder, name, io.BytesIO(data), size=len(data),
                            quota=1 << 20)


@pytest.fixture
def shared(store, portals):
    """alice's docs (a.txt, work/plan.txt) read-write and photos (p.jpg) read-only with
    bob, private/secret.txt not; bob's and alice's WebDAV on two frontends."""
    alice, bob = person(store), person(store)
    ids = {name: drive.create_folder(store, alice, ROOT, name).id
           for name in ("docs", "photos", "private")}
    ids["work"] = drive.create_folder(store, alice, ids["docs"], "work").id
    put(store, alice, ids["docs"], "a.txt", b"alpha")
    put(store, alice, ids["work"], "plan.txt", b"the plan")
    put(store, alice, ids["photos"], "p.jpg", b"jpeg")
    put(store, alice, ids["private"], "secret.txt", b"not yours")
    grants.grant(store, alice, ids["docs"], bob, grants.WRITE)
    grants.grant(store, alice, ids["photos"], bob, grants.READ)
    return {"alice": alice, "bob": bob, "ids": ids, "as_bob": dav(portals[1], bob),
            "as_alice": dav(portals[0], alice),
            "docs": f"{TOP}/{quote(f'docs ({alice})')}",
            "photos": f"{TOP}/{quote(f'photos ({alice})')}"}


def test_listed_and_readable(shared):
    bob, alice = shared["as_bob"], shared["alice"]
    top = hrefs(bob("PROPFIND", "/dav/", Depth="1"))
    assert TOP + "/" in top
    listed = hrefs(bob("PROPFIND", TOP + "/", Depth="1"))
    assert sorted(listed) == sorted([TOP + "/", shared["docs"] + "/", shared["photos"] + "/"])
    assert f"docs ({alice})".encode() in bob("PROPFIND", shared["docs"], Depth="0").data
    assert bob("GET", shared["docs"] + "/work/plan.txt").data == b"the plan"
    ranged = bob("GET", shared["photos"] + "/p.jpg", Range="bytes=1-2")
    assert ranged.status_code == 206 and ranged.data == b"pe"
    assert bob("GET", shared["docs"] + "/nothing").status_code == 404
    assert bob("GET", f"{TOP}/{quote('private (' + alice + ')')}/secret.txt").status_code == 404


def test_the_collection_itself_refuses_changes(shared):
    bob = shared["as_bob"]
    for method, path, headers in (
            ("PUT", TOP, {}), ("MKCOL", TOP, {}), ("DELETE", TOP, {}),
            ("PUT", TOP + "/new.txt", {}), ("MKCOL", TOP + "/new", {}),
            ("LOCK", TOP, {}), ("PROPPATCH", TOP, {}),
            ("MOVE", TOP, {"Destination": f"{HOST}/dav/elsewhere"}),
            ("DELETE", shared["docs"], {}),
            ("MOVE", shared["docs"], {"Destination": f"{HOST}/dav/mine"}),
            ("MOVE", shared["docs"] + "/a.txt", {"Destination": f"{HOST}{TOP}/a.txt"})):
        body = LOCKINFO if method == "LOCK" else PROPPATCH if method == "PROPPATCH" else b"x"
        answer = bob(method, path, body if method in ("PUT", "LOCK", "PROPPATCH") else b"",
                     **headers)
        statuses = {answer.status_code} | {int(s) for s in re.findall(
            rb"HTTP/1.1 (\d+)", answer.data)} - {207, 200}
        assert 403 in statuses and not statuses & {200, 201, 204}, (method, path, statuses)
    assert bob("GET", shared["docs"] + "/a.txt").data == b"alpha"


def test_read_only_refuses_every_write(store, shared):
    bob, alice, ids = shared["as_bob"], shared["alice"], shared["ids"]
    base = shared["photos"]
    for method, path, body, headers in (
            ("PUT", base + "/p.jpg", b"x", {}), ("PUT", base + "/new.jpg", b"x", {}),
            ("MKCOL", base + "/sub", b"", {}), ("DELETE", base + "/p.jpg", b"", {}),
            ("MOVE", base + "/p.jpg", b"", {"Destination": f"{HOST}{base}/q.jpg"}),
            ("COPY", base + "/p.jpg", b"", {"Destination": f"{HOST}{base}/q.jpg"}),
            ("PROPPATCH", base + "/p.jpg", PROPPATCH, {}),
            ("LOCK", base + "/p.jpg", LOCKINFO, {}), ("LOCK", base + "/n.jpg", LOCKINFO, {})):
        answer = bob(method, path, body, **headers)
        codes = {answer.status_code, *map(int, re.findall(rb"HTTP/1.1 (\d+)", answer.data))}
        assert 403 in codes and not codes & {201, 204}, (method, path, codes)
    assert [i.name for i in drive.list_folder(store, alice, ids["photos"]).items] == ["p.jpg"]
    # Copying out into one's own drive is reading: allowed, on the reader's quota.
    assert bob("COPY", base + "/p.jpg", Destination=f"{HOST}/dav/p.jpg").status_code == 201
    assert drive.usage(store, shared["bob"]) == 4


def test_read_write_changes_the_owners_drive(store, shared):
    bob, alice, ids = shared["as_bob"], shared["alice"], shared["ids"]
    base = shared["docs"]
    used = drive.usage(store, alice)
    assert bob("PUT", base + "/new.txt", b"from bob").status_code == 201
    assert drive.usage(store, alice) == used + 8 and drive.usage(store, shared["bob"]) == 0
    etag = bob("PUT", base + "/new.txt", b"second").headers["ETag"]
    assert bob("PUT", base + "/new.txt", b"third", If_Match=etag).status_code == 204
    assert bob("PUT", base + "/new.txt", b"lost", If_Match=etag).status_code == 412
    new_id = etag.strip('"').split("-")[0]
    assert [v.size for v in drive.list_versions(store, alice, new_id)[1]] == [6, 8]
    assert bob("MKCOL", base + "/made").status_code == 201
    assert bob("MOVE", base + "/a.txt",
               Destination=f"{HOST}{base}/made/b.txt").status_code == 201
    assert shared["as_alice"]("GET", "/dav/docs/made/b.txt").data == b"alpha"
    assert bob("COPY", base + "/work/",
               Destination=f"{HOST}{base}/made/work2/").status_code == 201
    assert shared["as_alice"]("GET", "/dav/docs/made/work2/plan.txt").data == b"the plan"
    assert bob("DELETE", base + "/work").status_code == 204
    assert [t.item.name for t in drive.list_trash(store, alice)] == ["work"]
    # Across trees: a MOVE is refused (nothing deleted first), a COPY copies.
    bob("PUT", "/dav/own.txt", b"own")
    assert bob("MOVE", "/dav/own.txt", Destination=f"{HOST}{base}/own.txt").status_code == 502
    assert bob("MOVE", base + "/new.txt", Destination=f"{HOST}/dav/own.txt",
               Overwrite="T").status_code == 502
    assert bob("GET", "/dav/own.txt").data == b"own"
    assert bob("MOVE", base + "/new.txt",
               Destination=f"{HOST}{shared['photos']}/x").status_code == 403
    assert bob("COPY", "/dav/own.txt", Destination=f"{HOST}{base}/own.txt").status_code == 201
    assert drive.list_folder(store, alice, ids["docs"]).items  # still there
    assert shared["as_alice"]("GET", "/dav/docs/own.txt").data == b"own"


def test_revoke_and_read_only_stop_the_next_request(store, shared):
    bob, alice, ids = shared["as_bob"], shared["alice"], shared["ids"]
    assert bob("GET", shared["docs"] + "/a.txt").status_code == 200
    grants.grant(store, alice, ids["docs"], shared["bob"], grants.READ)
    assert bob("PUT", shared["docs"] + "/a.txt", b"x").status_code == 403
    grants.revoke(store, alice, ids["docs"], shared["bob"])
    assert bob("GET", shared["docs"] + "/a.txt").status_code == 404
    assert bob("PROPFIND", shared["docs"], Depth="0").status_code == 404
    assert shared["docs"] + "/" not in hrefs(bob("PROPFIND", TOP, Depth="1"))


def test_a_lock_is_the_owners_and_the_recipients(store, shared):
    bob, alice = shared["as_bob"], shared["as_alice"]
    locked = bob("LOCK", shared["docs"] + "/a.txt", LOCKINFO)
    assert locked.status_code == 200, locked.data
    token = locked.headers["Lock-Token"]
    assert alice("PUT", "/dav/docs/a.txt", b"alice's").status_code == 423
    assert alice("DELETE", "/dav/docs").status_code in (207, 423)
    assert bob("PUT", shared["docs"] + "/a.txt", b"bob's", If=f"({token})").status_code == 204
    assert [x.root for x in davlocks.every_lock(store, shared["alice"], limit=10)] == [
        "/docs/a.txt"]
    assert davlocks.every_lock(store, shared["bob"], limit=10) == []
    assert token.strip("<>").encode() in alice("PROPFIND", "/dav/docs/a.txt", Depth="0").data
    assert bob("UNLOCK", shared["docs"] + "/a.txt", Lock_Token=token).status_code == 204
    assert alice("PUT", "/dav/docs/a.txt", b"alice's").status_code == 204
    # The owner's lock on a folder above the shared one holds for the recipient too.
    token = alice("LOCK", "/dav/docs", LOCKINFO, Depth="infinity").headers["Lock-Token"]
    assert bob("PUT", shared["docs"] + "/work/plan.txt", b"x").status_code == 423
    assert alice("UNLOCK", "/dav/docs", Lock_Token=token).status_code == 204
    # Properties are the owner's item's.
    assert bob("PROPPATCH", shared["docs"] + "/a.txt", PROPPATCH).status_code == 207
    assert b"red" in alice("PROPFIND", "/dav/docs/a.txt", Depth="0").data


def test_names_do_not_clash():
    one = grants.Grant("alice", "a" * 24, "bob", grants.READ, created=1.0)
    two = grants.Grant("alice", "b" * 24, "bob", grants.WRITE, created=2.0)
    other = grants.Grant("carol", "c" * 24, "bob", grants.READ, created=0.5)
    root = grants.Grant("dave", ROOT, "bob", grants.READ, created=3.0)
    items = [drive.Item(id=g.folder_id, kind=drive.FOLDER, name="" if g is root else "Photos",
                        parent=ROOT) for g in (one, two, other, root)]
    named = tree_names(list(zip([two, one, other, root], [items[1], items[0], items[2],
                                                           items[3]], strict=True)))
    assert {name: g.folder_id for name, (g, _) in named.items()} == {
        "Photos (alice)": "a" * 24, f"Photos (alice, {'b' * 24})": "b" * 24,
        "Photos (carol)": "c" * 24, "Drive (dave)": ROOT}


def test_an_own_shared_with_me_is_reached_by_its_alias(store, portals):
    user = person(store)
    mine = drive.create_folder(store, user, ROOT, SHARED)  # the web page allows the name
    put(store, user, mine.id, "kept.txt", b"kept")
    call = dav(portals[0], user)
    top = hrefs(call("PROPFIND", "/dav/", Depth="1"))
    assert f"/dav/{quote(MINE)}/" in top and TOP + "/" in top
    assert call("GET", f"/dav/{quote(MINE)}/kept.txt").data == b"kept"
    assert call("GET", f"{TOP}/kept.txt").status_code == 404
    assert call("MKCOL", TOP).status_code == 403
    assert call("PUT", f"/dav/{quote(MINE)}/more.txt", b"more").status_code == 201
    assert call("MOVE", f"/dav/{quote(MINE)}",
                Destination=f"{HOST}/dav/renamed").status_code == 201
    assert [i.name for i in drive.list_folder(store, user, ROOT).items] == ["renamed"]
    assert call("GET", f"/dav/{quote(MINE)}/kept.txt").status_code == 404


def test_a_lock_in_a_folder_named_beyond_ascii_is_unlocked_through_either_path(store, portals):
    alice, bob = person(store), person(store)
    folder = drive.create_folder(store, alice, ROOT, "Fotos é 写真")
    put(store, alice, folder.id, "ü.txt", b"u")
    grants.grant(store, alice, folder.id, bob, grants.WRITE)
    as_alice, as_bob = dav(portals[0], alice), dav(portals[1], bob)
    theirs = f"{TOP}/{quote(f'Fotos é 写真 ({alice})')}/{quote('ü.txt')}"
    token = as_bob("LOCK", theirs, LOCKINFO).headers["Lock-Token"]
    own = f"/dav/{quote('Fotos é 写真')}/{quote('ü.txt')}"
    assert as_alice("PUT", own, b"x").status_code == 423
    assert as_bob("PUT", theirs, b"y").status_code == 423  # his lock needs his token too
    assert as_bob("UNLOCK", theirs, Lock_Token=token).status_code == 204
    assert as_alice("PUT", own, b"x").status_code == 204

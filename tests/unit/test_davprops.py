"""WebDAV dead properties in the store (shards.model.davprops, portal.dav.props) on the
real state machine, in process: every call of WsgiDAV's property manager interface,
keys by item id (a move takes them along), the caps, and concurrent writers."""

from __future__ import annotations

import io
import threading

import pytest
from wsgidav.dav_error import DAVError

from portal.dav.props import DriveResolver, StorePropertyManager
from shards.model import davprops, drive
from shards.model.drive.records import ROOT

from .._memstore import MemClient

QUOTA = 1 << 20
AUTHOR = b'<ns0:author xmlns:ns0="urn:x">Ada</ns0:author>'


@pytest.fixture
def client() -> MemClient:
    return MemClient()


@pytest.fixture
def tree(client) -> dict[str, str]:
    """alice's drive: /docs/a.txt, /docs/sub/, /other/; ids by path."""
    docs = drive.create_folder(client, "alice", ROOT, "docs")
    sub = drive.create_folder(client, "alice", docs.id, "sub")
    other = drive.create_folder(client, "alice", ROOT, "other")
    a = drive.store_file(client, "alice", docs.id, "a.txt", io.BytesIO(b"hello"), quota=QUOTA)
    return {"/docs": docs.id, "/docs/sub": sub.id, "/other": other.id, "/docs/a.txt": a.id}


def _env(user: str = "alice") -> dict:
    return {"wsgidav.auth.user_name": user}


def _status(call) -> int:
    with pytest.raises(DAVError) as caught:
        call()
    return caught.value.value


def test_every_manager_call_round_trips_through_the_store(client, tree):
    pm = StorePropertyManager(client)
    env = _env()
    pm.write_property("/dav/docs/a.txt", "{urn:x}author", AUTHOR, dry_run=True, environ=env)
    assert pm.get_properties("/dav/docs/a.txt", _env()) == []          # a dry run writes nothing
    pm.write_property("/dav/docs/a.txt", "{urn:x}author", AUTHOR, environ=_env())
    pm.write_property("/dav/docs/a.txt", "{urn:x}n", b"<n>1</n>", environ=_env())
    assert pm.get_properties("/dav/docs/a.txt", _env()) == ["{urn:x}author", "{urn:x}n"]
    assert pm.get_property("/dav/docs/a.txt", "{urn:x}author", _env()) == AUTHOR
    assert pm.get_property("/dav/docs/a.txt", "{urn:x}none", _env()) is None
    pm.remove_property("/dav/docs/a.txt", "{urn:x}n", dry_run=True, environ=_env())
    assert pm.get_property("/dav/docs/a.txt", "{urn:x}n", _env()) == b"<n>1</n>"
    pm.remove_property("/dav/docs/a.txt", "{urn:x}n", environ=_env())
    pm.remove_property("/dav/docs/a.txt", "{urn:x}never-set", environ=_env())  # not an error
    assert pm.get_properties("/dav/docs/a.txt", _env()) == ["{urn:x}author"]
    # A copy (which exists by the time the provider calls this) gets the source's.
    b = drive.store_file(client, "alice", tree["/other"], "b.txt", io.BytesIO(b"x"), quota=QUOTA)
    pm.write_property("/dav/other/b.txt", "{urn:x}stale", b"<s/>", environ=_env())
    pm.copy_properties("/dav/docs/a.txt", "/dav/other/b.txt", _env())
    assert davprops.read_all(client, "alice", b.id) == {"{urn:x}author": AUTHOR}
    pm.remove_properties("/dav/docs/a.txt", _env())
    assert pm.get_properties("/dav/docs/a.txt", _env()) == []
    assert client.get_row(davprops.props_row("alice"), f"h:{tree['/docs/a.txt']}") == {}
    # The root collection and folders have properties too; unknown paths have none.
    pm.write_property("/dav", "{urn:x}r", b"<r/>", environ=_env())
    pm.write_property("/dav/docs/sub/", "{urn:x}s", b"<s/>", environ=_env())
    assert pm.get_properties("/dav/", _env()) == ["{urn:x}r"]
    assert pm.get_properties("/dav/docs/sub", _env()) == ["{urn:x}s"]
    assert pm.get_properties("/dav/nope", _env()) == []
    assert _status(lambda: pm.write_property("/dav/nope", "{urn:x}a", b"<a/>",
                                             environ=_env())) == 404


def test_a_move_or_rename_takes_the_properties_along_with_no_copy(client, tree):
    pm = StorePropertyManager(client)
    pm.write_property("/dav/docs/a.txt", "{urn:x}author", AUTHOR, environ=_env())
    pm.write_property("/dav/docs/sub", "{urn:x}tag", b"<tag/>", environ=_env())
    before = len(client.ops)
    drive.move(client, "alice", "folder", tree["/docs"], tree["/other"])
    pm.move_properties("/dav/docs", "/dav/other/docs", True, _env())
    assert [op for op in client.ops[before:] if "davprops" in op[1]] == []
    drive.rename(client, "alice", "file", tree["/docs/a.txt"], "b.txt")
    assert pm.get_property("/dav/other/docs/b.txt", "{urn:x}author", _env()) == AUTHOR
    assert pm.get_property("/dav/other/docs/sub", "{urn:x}tag", _env()) == b"<tag/>"
    # A new item at the old path does not inherit them.
    drive.store_file(client, "alice", tree["/docs"], "a.txt", io.BytesIO(b"new"), quota=QUOTA)
    assert pm.get_properties("/dav/other/docs/a.txt", _env()) == []


def test_another_frontend_sees_a_property_at_once(client, tree):
    web1, web2 = StorePropertyManager(client), StorePropertyManager(client)
    env2 = _env()
    assert web2.get_properties("/dav/docs", env2) == []
    web1.write_property("/dav/docs", "{urn:x}colour", b"<c>red</c>", environ=_env())
    assert web2.get_property("/dav/docs", "{urn:x}colour", _env()) == b"<c>red</c>"


def test_one_request_reads_a_resource_s_properties_once(client, tree):
    pm = StorePropertyManager(client)
    for i in range(5):
        pm.write_property("/dav/docs", f"{{urn:x}}p{i}", b"<v/>", environ=_env())
    env = _env()
    before = len([op for op in client.ops if "davprops" in op[1]])
    names = pm.get_properties("/dav/docs", env)
    values = [pm.get_property("/dav/docs", name, env) for name in names]
    assert values == [b"<v/>"] * 5
    assert len([op for op in client.ops if "davprops" in op[1]]) == before + 1


def test_users_have_their_own_properties(client, tree):
    drive.create_folder(client, "bob", ROOT, "docs")
    pm = StorePropertyManager(client)
    pm.write_property("/dav/docs", "{urn:x}a", b"<a/>", environ=_env("alice"))
    assert pm.get_properties("/dav/docs", _env("bob")) == []
    assert pm.get_properties("/dav/docs", {}) == []          # no authenticated user: nothing


# -- bounds ----------------------------------------------------------------------------------


def test_a_value_over_16_kib_is_refused_with_507(client, tree):
    pm = StorePropertyManager(client)
    big = b"<v>" + b"x" * davprops.MAX_VALUE + b"</v>"
    for dry_run in (True, False):
        assert _status(lambda d=dry_run: pm.write_property("/dav/docs", "{urn:x}big", big, dry_run=d,
                                                 environ=_env())) == 507
    assert pm.get_properties("/dav/docs", _env()) == []


def test_at_most_100_properties_per_item_checked_for_the_whole_proppatch(client, tree):
    pm = StorePropertyManager(client)
    for i in range(davprops.MAX_PROPS - 2):
        davprops.write(client, "alice", tree["/docs"], f"{{urn:x}}p{i}", b"<v/>")
    # A PROPPATCH of three new ones fails in its dry run, before anything is written.
    env = _env()
    pm.write_property("/dav/docs", "{urn:x}new1", b"<v/>", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}new2", b"<v/>", dry_run=True, environ=env)
    assert _status(lambda: pm.write_property("/dav/docs", "{urn:x}new3", b"<v/>", dry_run=True,
                                             environ=env)) == 507
    # Replacing one that exists, or one removed in the same request, still fits.
    env = _env()
    pm.remove_property("/dav/docs", "{urn:x}p0", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}p1", b"<w/>", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}new1", b"<v/>", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}new2", b"<v/>", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}new3", b"<v/>", dry_run=True, environ=env)
    pm.write_property("/dav/docs", "{urn:x}new1", b"<v/>", environ=_env())
    pm.write_property("/dav/docs", "{urn:x}new2", b"<v/>", environ=_env())
    assert _status(lambda: pm.write_property("/dav/docs", "{urn:x}new3", b"<v/>",
                                             environ=_env())) == 507
    assert len(pm.get_properties("/dav/docs", _env())) == davprops.MAX_PROPS


def test_an_item_s_values_are_bounded_in_total(client, tree, monkeypatch):
    monkeypatch.setattr(davprops, "MAX_ITEM_BYTES", 40_000)
    value = b"<v>" + b"x" * 15_000 + b"</v>"
    davprops.write(client, "alice", tree["/docs"], "{urn:x}a", value)
    davprops.write(client, "alice", tree["/docs"], "{urn:x}b", value)
    with pytest.raises(davprops.PropertyTooLarge):
        davprops.write(client, "alice", tree["/docs"], "{urn:x}c", value)
    davprops.write(client, "alice", tree["/docs"], "{urn:x}b", b"<v/>")   # smaller: fine
    davprops.write(client, "alice", tree["/docs"], "{urn:x}c", value)


def test_the_longest_name_fits_the_store_beside_the_longest_user_name(client):
    user = "u" * 32
    name = "{urn:x}" + "é" * ((davprops.MAX_NAME - 7) // 2)
    assert len(name.encode()) >= davprops.MAX_NAME - 1
    davprops.write(client, user, ROOT, name, b"<v/>")
    assert davprops.read_all(client, user, ROOT) == {name: b"<v/>"}


@pytest.mark.parametrize("name", ["", "{urn:x}" + "n" * 300, "{urn:x}" + "é" * 200,
                                  "{urn:x}a\x00b", "{urn:x}a b", "{urn:{x}}a", "{urn:x}",
                                  "{urn:x}a/../b", "\x1b[31m"])
def test_names_that_are_not_clark_notation_are_refused_with_403(client, tree, name):
    pm = StorePropertyManager(client)
    assert _status(lambda: pm.write_property("/dav/docs", name, b"<v/>", dry_run=True,
                                             environ=_env())) == 403
    assert _status(lambda: pm.write_property("/dav/docs", name, b"<v/>", environ=_env())) == 403
    assert client.get_row(davprops.props_row("alice")) == {}


@pytest.mark.parametrize("url", ["/dav/%ff%fe", "/dav/../../etc", "/dav/docs/%2e%2e/other",
                                 "/other/dav/docs", "/dav/" + "a/" * 40])
def test_urls_that_name_no_item_find_nothing(client, tree, url):
    assert DriveResolver(client)(url, _env()) is None


# -- concurrency and orphans --------------------------------------------------------------------


def test_concurrent_writers_of_one_item_keep_the_count_exact(client, tree, monkeypatch):
    monkeypatch.setattr(davprops, "MAX_PROPS", 10)
    start = threading.Barrier(4)
    refused: list[int] = []

    def writer(n: int) -> None:
        start.wait(timeout=10)
        for i in range(5):
            try:
                davprops.write(client, "alice", tree["/docs"], f"{{urn:x}}w{n}-{i}", b"<v/>")
            except davprops.TooManyProperties:
                refused.append(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stored = davprops.read_all(client, "alice", tree["/docs"])
    assert len(stored) == 10 and len(refused) == 10
    header = client.get(davprops.props_row("alice"), f"h:{tree['/docs']}")
    assert davprops._counts(header) == (10, 40)


def test_properties_of_items_deleted_elsewhere_are_purged(client, tree):
    davprops.write(client, "alice", tree["/docs/a.txt"], "{urn:x}a", b"<a/>")
    davprops.write(client, "alice", tree["/other"], "{urn:x}a", b"<a/>")
    davprops.write(client, "alice", ROOT, "{urn:x}a", b"<a/>")
    drive.delete_file(client, "alice", tree["/docs/a.txt"])      # through the web page
    assert davprops.purge_orphans(client, "alice") is None
    assert davprops.read_all(client, "alice", tree["/docs/a.txt"]) == {}
    assert davprops.read_all(client, "alice", tree["/other"]) == {"{urn:x}a": b"<a/>"}
    assert davprops.read_all(client, "alice", ROOT) == {"{urn:x}a": b"<a/>"}


def test_properties_of_items_in_the_trash_stay_until_they_leave_it(client, tree):
    """A trashed item has no index cell, only its Trash record: the sweep keeps its
    properties (a restore brings them back), and drops them once it is gone for good."""
    for path in ("/docs/a.txt", "/other", "/docs/sub"):
        davprops.write(client, "alice", tree[path], "{urn:x}a", b"<a/>")
    drive.trash(client, "alice", tree["/docs/a.txt"])                 # WebDAV's DELETE
    drive.trash(client, "alice", tree["/other"], kind=drive.FOLDER)
    drive.trash(client, "alice", tree["/docs"], kind=drive.FOLDER)    # /docs/sub below it
    assert davprops.purge_orphans(client, "alice") is None
    for path in ("/docs/a.txt", "/other", "/docs/sub"):
        assert davprops.read_all(client, "alice", tree[path]) == {"{urn:x}a": b"<a/>"}, path
    drive.restore(client, "alice", tree["/docs/a.txt"])
    drive.delete_forever(client, "alice", [tree["/other"]])
    drive.purge(client, "alice")
    assert davprops.purge_orphans(client, "alice") is None
    assert davprops.read_all(client, "alice", tree["/docs/a.txt"]) == {"{urn:x}a": b"<a/>"}
    assert davprops.read_all(client, "alice", tree["/other"]) == {}
    assert davprops.read_all(client, "alice", tree["/docs/sub"]) == {"{urn:x}a": b"<a/>"}


def test_a_full_page_of_orphans_is_read_in_one_get_cells(client):
    """Three drive cells per item with properties (file, folder, Trash) stay within the
    store's cap on one get_cells; the walk goes on page by page."""
    ids = [drive.create_folder(client, "alice", ROOT, f"f{i:03}").id
           for i in range(davprops.ORPHAN_PAGE + 5)]
    for item_id in ids:
        davprops.write(client, "alice", item_id, "{urn:x}a", b"<a/>")
    gone = sorted(ids)[-1]
    drive.trash(client, "alice", gone, kind=drive.FOLDER)
    drive.delete_forever(client, "alice", [gone])
    after = davprops.purge_orphans(client, "alice")
    assert after is not None
    assert davprops.purge_orphans(client, "alice", after=after) is None
    assert davprops.read_all(client, "alice", gone) == {}
    assert davprops.read_all(client, "alice", ids[0]) == {"{urn:x}a": b"<a/>"}

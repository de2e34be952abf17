"""WebDAV locks and dead properties on the real store: two WsgiDAV apps, each with its own
store client (two frontends), against a running 3-replica group."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import shards
from shards.model import davlocks, davprops

from .._davstore import DavClient, dav_app

pytestmark = pytest.mark.cluster


@pytest.fixture
def stores(kv_cluster) -> Iterator[tuple[shards.Client, shards.Client]]:
    with kv_cluster.client() as one, kv_cluster.client() as two:
        davlocks.clear(one, "alice")
        yield one, two
        davlocks.clear(one, "alice")


def test_a_lock_and_a_property_made_through_one_frontend_hold_through_the_other(stores, tmp_path):
    (tmp_path / "report.odt").write_bytes(b"v1")
    web1 = DavClient(dav_app(stores[0], tmp_path))
    web2 = DavClient(dav_app(stores[1], tmp_path))
    locked = web1.lock("/dav/report.odt", Timeout="Infinite")
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"]
    assert web2.request("PUT", "/dav/report.odt", b"theirs").status_code == 423
    assert web2.lock("/dav/report.odt", scope="shared").status_code == 423
    assert web2.request("PUT", "/dav/report.odt", b"v2", If=f"({token})").status_code == 204
    assert web1.proppatch("/dav/report.odt", "status", "draft", If=f"({token})").status_code == 207
    found = web2.propfind("/dav/report.odt")
    assert b">draft<" in found.data and token[1:-1].encode() in found.data
    assert web2.request("UNLOCK", "/dav/report.odt", Lock_Token=token).status_code == 204
    assert web1.request("PUT", "/dav/report.odt", b"v3").status_code == 204
    assert (tmp_path / "report.odt").read_bytes() == b"v3"


def test_frontends_racing_for_one_lock_leave_exactly_one(stores):
    start = threading.Barrier(6)
    won: list[davlocks.Lock] = []
    lost: list[str] = []

    def race(store: shards.Client) -> None:
        start.wait(timeout=10)
        try:
            won.append(davlocks.create(store, "alice", "/dav/race", scope="exclusive",
                                       depth="0", owner=b"", principal="alice", timeout=60))
        except davlocks.LockConflict as e:
            lost.append(e.roots[0])

    threads = [threading.Thread(target=race, args=(stores[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and lost == ["/dav/race"] * 5
    for store in stores:
        assert davlocks.locks_at(store, "alice", "/dav/race") == won
        assert davlocks.get(store, "alice", won[0].token) == won[0]


def test_properties_follow_an_item_id_on_the_real_store(stores):
    one, two = stores
    item = "0123456789abcdef01234567"
    davprops.remove_all(one, "alice", item)
    davprops.write(one, "alice", item, "{urn:z}a", b"<a>1</a>")
    assert davprops.read_all(two, "alice", item) == {"{urn:z}a": b"<a>1</a>"}
    davprops.copy_all(two, "alice", item, "alice", "76543210fedcba9876543210")
    assert davprops.read_all(one, "alice", "76543210fedcba9876543210") == {"{urn:z}a": b"<a>1</a>"}
    for done in (item, "76543210fedcba9876543210"):
        davprops.remove_all(one, "alice", done)
        assert davprops.read_all(two, "alice", done) == {}

"""The WebDAV door (portal.dav) on the in-memory store: methods, ETags, bounds, sign-in."""

from __future__ import annotations

import base64
import io
import os

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import Client as HTTPClient
from wsgidav.dav_error import DAVError

from portal.dav import locks
from portal.dav.credentials import Remembered, basic_credentials
from portal.dav.writing import ChunkReader
from shards.model import accounts, drive, quota
from shards.readonly import read_state

from .._memstore import MemClient
from .._portal import PASSWORD, unique

PROPFIND_BODY = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>'
                 b'</D:prop></D:propfind>')


@pytest.fixture
def store() -> MemClient:
    return MemClient()


@pytest.fixture
def user(store: MemClient) -> str:
    name = unique()
    accounts.create_user(store, name, PASSWORD)
    return name


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def dav(app, user):
    http = HTTPClient(app)

    def call(method: str, path: str, **kwargs):
        headers = {**basic(user), **kwargs.pop("headers", {})}
        return http.open(path, method=method, headers=headers, **kwargs)
    return call


def test_put_get_propfind_etag(dav, store, user):
    assert dav("MKCOL", "/dav/docs").status_code == 201
    put = dav("PUT", "/dav/docs/a.txt", data=b"hello world")
    assert put.status_code == 201
    etag = put.headers["ETag"]
    got = dav("GET", "/dav/docs/a.txt")
    assert got.status_code == 200 and got.data == b"hello world"
    assert got.headers["ETag"] == etag
    ranged = dav("GET", "/dav/docs/a.txt", headers={"Range": "bytes=6-"})
    assert ranged.status_code == 206 and ranged.data == b"world"
    listing = dav("PROPFIND", "/dav/docs/", data=PROPFIND_BODY, headers={"Depth": "1"})
    assert listing.status_code == 207 and etag.strip('"').encode() in listing.data
    # A stale If-Match never overwrites the newer file.
    assert dav("PUT", "/dav/docs/a.txt", data=b"v2", headers={"If-Match": etag}).status_code == 204
    assert dav("PUT", "/dav/docs/a.txt", data=b"v3",
               headers={"If-Match": etag}).status_code == 412
    assert dav("GET", "/dav/docs/a.txt").data == b"v2"
    assert dav("PUT", "/dav/docs/a.txt", data=b"v3",
               headers={"If-None-Match": "*"}).status_code == 412
    assert drive.usage(store, user) == 2 + len(b"hello world")  # the earlier version counts
    assert [v.size for v in drive.list_versions(store, user,
                                                etag.strip('"').split("-")[0])[1]] == [11]


def test_move_is_one_rename_and_copy_makes_new_files(dav, store, user):
    dav("MKCOL", "/dav/a")
    dav("MKCOL", "/dav/b")
    dav("PUT", "/dav/a/x.txt", data=b"x" * 100)
    host = "http://localhost"
    moved = dav("MOVE", "/dav/a/x.txt", headers={"Destination": f"{host}/dav/b/y.txt"})
    assert moved.status_code == 201
    assert dav("GET", "/dav/b/y.txt").data == b"x" * 100
    assert dav("GET", "/dav/a/x.txt").status_code == 404
    copied = dav("COPY", "/dav/b/", headers={"Destination": f"{host}/dav/c/"})
    assert copied.status_code == 201
    assert dav("GET", "/dav/c/y.txt").data == b"x" * 100
    assert drive.usage(store, user) == 200
    assert dav("COPY", "/dav/b/y.txt", headers={"Destination": f"{host}/dav/c/y.txt",
                                                  "Overwrite": "F"}).status_code == 412
    assert dav("DELETE", "/dav/c/").status_code == 204
    assert dav("PROPFIND", "/dav/c/", headers={"Depth": "0"}).status_code == 404


def test_refusals(dav, app, user):
    assert dav("PROPFIND", "/dav/", headers={"Depth": "infinity"}).status_code == 403
    assert b"propfind-finite-depth" in dav("PROPFIND", "/dav/").data
    claimed = {"CONTENT_LENGTH": str(100 << 30)}  # the test client would set the real length
    assert dav("PUT", "/dav/big", environ_overrides=claimed).status_code == 413
    assert dav("PROPFIND", "/dav/", headers={"Depth": "0"},
               data=b"x" * (1024 * 1024 + 1)).status_code == 413
    assert dav("PUT", "/dav/a%01b", data=b"x").status_code == 400
    assert dav("GET", "/dav/a/%2e%2e/b").status_code == 400
    assert dav("GET", "/dav/a%2fb").status_code == 400
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              b'<D:propfind xmlns:D="DAV:"><D:prop><D:x>&b;</D:x></D:prop></D:propfind>')
    assert dav("PROPFIND", "/dav/", data=laughs, headers={"Depth": "0"}).status_code == 400
    anonymous = HTTPClient(app).open("/dav/", method="PROPFIND", headers={"Depth": "0"})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith('Basic realm="raftcloud"')
    wrong = HTTPClient(app).open("/dav/", method="PROPFIND",
                                 headers={"Depth": "0", **basic(user, "wrong")})
    assert wrong.status_code == 401


def test_remembered_is_bounded_and_expires():
    cache = Remembered(size=2, ttl=10)
    cache.put("a", "p", 0)
    cache.put("b", "p", 0)
    cache.put("c", "p", 0)
    assert len(cache) == 2 and not cache.get("a", "p", 1) and cache.get("c", "p", 1)
    assert not cache.get("c", "p", 11)
    assert not cache.get("b", "other", 1)


def test_basic_credentials_parsing():
    token = base64.b64encode(b"Alice:pa:ss").decode()
    assert basic_credentials(f"Basic {token}") == ("alice", "pa:ss")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Bearer x") is None
    assert basic_credentials("Basic " + "A" * 2000) is None


def test_quota_refuses_early_and_while_reading(dav, store, user):
    quota.set_limit(store, user, 1000)
    assert dav("PUT", "/dav/a.bin", data=b"x" * 600).status_code == 201
    early = dav("PUT", "/dav/b.bin", environ_overrides={"CONTENT_LENGTH": "600"})
    assert early.status_code == 507 and b"does not fit" in early.data
    # Chunked: no length to refuse early by; cut off once past what the quota leaves.
    late = dav("PUT", "/dav/c.bin", input_stream=io.BytesIO(b"y" * 600),
               headers={"Transfer-Encoding": "chunked"})
    assert late.status_code == 507
    assert dav("GET", "/dav/c.bin").status_code == 404
    assert drive.usage(store, user) == 600


def test_metrics_count_methods_statuses_and_bytes(dav):
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0
    before = (sample("portal_dav_requests_total", method="PUT", status="201"),
              sample("portal_dav_bytes_total", direction="in"),
              sample("portal_dav_bytes_total", direction="out"),
              sample("portal_dav_requests_total", method="other", status="405"))
    dav("PUT", "/dav/m.bin", data=b"z" * 5000)
    assert dav("GET", "/dav/m.bin").data == b"z" * 5000
    dav("BREW", "/dav/")
    after = (sample("portal_dav_requests_total", method="PUT", status="201"),
             sample("portal_dav_bytes_total", direction="in"),
             sample("portal_dav_bytes_total", direction="out"),
             sample("portal_dav_requests_total", method="other", status="405"))
    assert after[0] == before[0] + 1 and after[3] == before[3] + 1
    assert after[1] >= before[1] + 5000 and after[2] >= before[2] + 5000


@pytest.mark.parametrize("start", [0, 1, 6, 7, 13, 19, 20, 25])
def test_chunk_reader_seeks_and_reads_across_chunks(start):
    data = bytes(range(20))
    parts = [data[0:7], data[7:7], data[7:13], data[13:20]]
    opened: list[int] = []

    def open_at(offset: int):
        # As the store does: the chunks from the one holding ``offset``, the first trimmed.
        opened.append(offset)
        at = 0
        for part in parts:
            if at + len(part) > offset:
                yield part[max(0, offset - at):]
            at += len(part)
    reader = ChunkReader(open_at)
    assert reader.seek(start) == start
    assert reader.read(4) + reader.read(-1) == data[start:]
    assert reader.read(5) == b""
    assert opened == [start], "opened once, at the range's start"
    with pytest.raises(OSError):
        reader.seek(0)


def test_a_range_is_read_from_its_start_in_the_store(dav, store, monkeypatch):
    data = os.urandom(100_000)
    assert dav("PUT", "/dav/big.bin", data=data).status_code == 201
    offsets: list[int] = []
    get_stream = store.get_stream

    def recording(row, col, **kwargs):
        offsets.append(kwargs.get("offset", 0))
        return get_stream(row, col, **kwargs)
    monkeypatch.setattr(store, "get_stream", recording)
    got = dav("GET", "/dav/big.bin", headers={"Range": "bytes=90000-90009"})
    assert got.status_code == 206 and got.data == data[90000:90010]
    assert offsets == [90000]
    assert dav("GET", "/dav/big.bin").data == data and offsets[-1] == 0


def test_chunk_reader_seeks_within_the_chunk_in_hand_without_reopening():
    opened: list[int] = []

    def open_at(offset: int):
        opened.append(offset)
        return iter([b"abcdefgh"[offset:]])
    reader = ChunkReader(open_at, opened=iter([b"abcdefgh"]))
    assert reader.read(2) == b"ab"
    assert reader.seek(5) == 5 and reader.read(2) == b"fg"
    assert opened == []
    assert reader.seek(8) == 8 and reader.read() == b""


LOCKINFO = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
            b"</D:lockinfo>")


def test_a_folder_with_a_locked_member_is_not_deleted(dav, app, store, user):
    dav("MKCOL", "/dav/f")
    dav("PUT", "/dav/f/x.txt", data=b"x")
    locked = dav("LOCK", "/dav/f/x.txt", data=LOCKINFO, headers={"Timeout": "Second-60"})
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"]
    assert dav("DELETE", "/dav/f/").status_code == 423
    assert dav("GET", "/dav/f/x.txt").data == b"x"
    # Another user's tree has its own locks: the same path is free there.
    other = unique()
    accounts.create_user(store, other, PASSWORD)
    theirs = HTTPClient(app)
    for method, path, body in (("MKCOL", "/dav/f", b""), ("PUT", "/dav/f/x.txt", b"y")):
        assert theirs.open(path, method=method, data=body, headers=basic(other)).status_code == 201
    assert theirs.open("/dav/f/", method="DELETE", headers=basic(other)).status_code == 204
    assert dav("UNLOCK", "/dav/f/x.txt", headers={"Lock-Token": token}).status_code == 204
    assert dav("DELETE", "/dav/f/").status_code == 204
    assert dav("PROPFIND", "/dav/f/", headers={"Depth": "0"}).status_code == 404


def test_no_request_state_is_left_in_the_callers_context(dav):
    dav("PUT", "/dav/s.txt", data=b"s" * 10)
    unread = dav("GET", "/dav/s.txt")  # streamed: its body is never read
    assert unread.status_code == 200
    assert read_state() is None
    with pytest.raises(DAVError):  # no user's lock scope left behind either
        locks.current_user()
    unread.close()
    assert read_state() is None


def test_delete_goes_to_the_trash_and_honours_if_match(dav, store, user):
    put = dav("PUT", "/dav/t.txt", data=b"trash me")
    etag = put.headers["ETag"]
    dav("PUT", "/dav/t.txt", data=b"newer")
    assert dav("DELETE", "/dav/t.txt", headers={"If-Match": etag}).status_code == 412
    assert dav("DELETE", "/dav/t.txt").status_code == 204
    assert dav("GET", "/dav/t.txt").status_code == 404
    assert [t.item.name for t in drive.list_trash(store, user)] == ["t.txt"]

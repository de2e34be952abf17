"""Sessions: the idle timeout, and "last seen" recorded off the request path (on the in-process store)."""

from __future__ import annotations

import time

import msgpack
import pytest

from portal.config import web_settings
from portal.pagestore import CellCache, PageStore
from portal.sessions import (
    SEEN_COL,
    SESSION_COL,
    STORE_SLACK,
    Session,
    SessionStore,
    index_row,
    session_key,
    session_row,
)
from raftkv.errors import ConfigError

from .._memstore import MemClient


def _store(client: MemClient, *, idle: float = 3600.0, ttl: float = 7 * 86400) -> SessionStore:
    cache = CellCache(64)  # the worker's; each call is a request's view (portal.pagestore)
    return SessionStore(lambda: PageStore(client, cache), ttl=ttl, idle=idle, secure=False)


def _logged_in(store: SessionStore, user: str = "alice") -> Session:
    return store.login(Session(sid="x" * 43), user, admin=False, addr="127.0.0.1",
                       agent="TestBrowser/1.0 <script>")


def test_loading_a_session_is_one_read_and_no_write():
    client = MemClient()
    store = _store(client)
    session = _logged_in(store)
    client.ops.clear()
    for _ in range(5):
        assert store.load(session.sid).user == "alice"
    # One get_cells per request; the last-seen write waits for the recorder's thread.
    assert [m for m, _ in client.ops] == ["get_cells"] * 5
    store.close()


def test_last_seen_is_written_once_however_many_requests():
    client = MemClient()
    store = _store(client)
    store.seen_every = 0.0  # every request would like to record: the recorder must collapse them
    session = _logged_in(store)
    for _ in range(10):
        store.load(session.sid)
    assert store.recorder.flush() == 1
    seen = client.get(session_row(session.sid), SEEN_COL)
    assert seen is not None and abs(msgpack.unpackb(seen.value) - time.time()) < 5
    # Loads that read the old "seen" before the write landed cannot write again.
    store.recorder.note(session_row(session.sid), 1, 0, b"record", 3600.0)
    assert store.recorder.flush() == 0
    store.close()


def test_last_seen_is_not_recorded_again_within_the_interval():
    client = MemClient()
    store = _store(client)  # seen_every = min(60, idle/10) = 60 s
    session = _logged_in(store)
    client.put(session_row(session.sid), SEEN_COL, msgpack.packb(time.time() - 61))
    store.load(session.sid)
    assert store.recorder.flush() == 1
    version = client.get(session_row(session.sid), SEEN_COL).version
    for _ in range(10):
        store.load(session.sid)
    assert store.recorder.flush() == 0
    assert client.get(session_row(session.sid), SEEN_COL).version == version
    store.close()


def test_an_idle_session_is_refused_and_removed():
    client = MemClient()
    store = _store(client, idle=100.0)
    session = _logged_in(store)
    row = session_row(session.sid)
    client.put(row, SEEN_COL, msgpack.packb(time.time() - 101))
    assert store.load(session.sid).user is None
    assert client.get_row(row) == {}
    assert client.get_row(index_row("alice")) == {}


def test_a_session_never_seen_since_login_idles_from_its_creation():
    client = MemClient()
    store = _store(client, idle=100.0)
    session = _logged_in(store)
    cell = client.get(session_row(session.sid), SESSION_COL)
    record = msgpack.unpackb(cell.value)
    record["created"] -= 101
    client.put(session_row(session.sid), SESSION_COL, msgpack.packb(record))
    assert store.load(session.sid).user is None


def test_a_recorded_write_never_brings_back_an_ended_session():
    client = MemClient()
    store = _store(client)
    store.seen_every = 0.0
    session = _logged_in(store)
    store.load(session.sid)  # noted
    store.logout(session)
    assert store.recorder.flush() == 0
    assert client.get_row(session_row(session.sid)) == {}


def test_the_sessions_list_marks_this_device_and_ends_others():
    client = MemClient()
    store = _store(client)
    first, second = _logged_in(store), _logged_in(store)
    listed = store.of_user("alice", second)
    assert [s.current for s in listed] == [True, False]
    assert listed[0].agent == "TestBrowser/1.0 <script>"  # escaped by the template, kept here
    assert not store.end("bob", session_key(first.sid))  # not bob's to end
    assert store.end("alice", session_key(first.sid))
    assert store.load(first.sid).user is None and store.load(second.sid).user == "alice"
    third = _logged_in(store)
    assert store.revoke_others("alice", keep=third) == 1
    assert store.load(second.sid).user is None and store.load(third.sid).user == "alice"


def test_the_web_table_sets_session_ttl_and_idle():
    assert web_settings({"session_ttl": 3600, "session_idle": 600.5}) == {
        "session_ttl": 3600.0, "session_idle": 600.5}
    for bad in (0, -1, "600", True):
        with pytest.raises(ConfigError):
            web_settings({"session_idle": bad})


def test_the_store_forgets_a_session_at_its_idle_or_absolute_lifetime(monkeypatch):
    """No sweeper: the cells expire a minute (STORE_SLACK) after the session would end;
    each recorded use renews them."""
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    client = MemClient()
    store = _store(client, idle=1000.0, ttl=3000.0)
    store.seen_every = 0.0
    start = clock[0]
    abandoned, used = _logged_in(store), _logged_in(store, "bob")
    for _ in range(3):  # bob comes back every 900 s; the other browser never does
        clock[0] += 900
        assert store.load(used.sid).user == "bob"
        assert store.recorder.flush() == 1
    assert client.get_row(session_row(abandoned.sid)) == {}  # idle 2700 s > 1000 + 60
    assert set(client.get_row(session_row(used.sid))) == {SESSION_COL, SEEN_COL}
    clock[0] = start + 3000 + STORE_SLACK - 5  # bob's absolute end, within the slack
    assert set(client.get_row(session_row(used.sid))) == {SESSION_COL, SEEN_COL}
    clock[0] += 10  # past it (bob's idle end would be 1000 s later)
    assert client.get_row(session_row(used.sid)) == {}
    assert client.get_row(index_row("bob")) == {} and client.get_row(index_row("alice")) == {}
    store.close()

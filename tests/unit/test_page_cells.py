"""portal.pagestore: cached cells used only once the store confirmed their version
(a hit sends no bytes, a change comes back in the same read, a revoked session ends at
once, a CPUT on a stale copy fails and refreshes it, a read-only group's confirmation
is marked stale); on the in-memory store, the real state machine."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import pytest

from portal.pagestore import CellCache, PageStore, together
from portal.sessions import SESSION_COL, Session, SessionStore, index_row, session_key, session_row
from raftkv.errors import ConditionFailed, NoLeader
from raftkv.interface import Cell, Consistency, Unchanged
from shards.model import mailbox
from shards.readonly import ReadOnlyFallback, observing, read_state

from .._memstore import MemClient

ROW, COL = "{alice}/drive", "q:used"


class Answers(MemClient):
    """The in-memory store, noting what each get_cells call answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[list[Any]] = []
        self.down = False  # no majority: linearizable reads fail, stale ones are answered

    def get_cells(self, cells: Any, *, known: Any = None,
                  consistency: Consistency = "linearizable") -> list[Any]:
        if self.down and consistency == "linearizable":
            raise NoLeader("no majority")
        answers = super().get_cells(cells, known=known, consistency=consistency)
        self.answers.append(answers)
        return answers


def _page(store: MemClient, cache: CellCache) -> PageStore:
    return PageStore(store, cache)  # type: ignore[arg-type]  # any store: only its reads count


def test_an_unchanged_cell_is_confirmed_without_its_bytes() -> None:
    store, cache = Answers(), CellCache(16)
    store.put(ROW, COL, b"42")
    _page(store, cache).confirm([(ROW, COL)])  # a cold worker: the cell comes back
    assert store.answers[-1] == [Cell(b"42", 1)] and cache.fetched == 1
    page = _page(store, cache)
    page.confirm([(ROW, COL)])
    assert store.answers[-1] == [Unchanged(1)], "a copy still current costs no value"
    assert page.get(ROW, COL) == Cell(b"42", 1) and cache.confirmed == 1
    ops = len(store.ops)
    assert page.get(ROW, COL) == Cell(b"42", 1) and len(store.ops) == ops  # confirmed: no read


def test_a_changed_cell_comes_back_in_the_same_read() -> None:
    store, cache = Answers(), CellCache(16)
    store.put(ROW, COL, b"1")
    _page(store, cache).confirm([(ROW, COL)])
    store.put(ROW, COL, b"2")  # another frontend
    page = _page(store, cache)
    page.confirm([(ROW, COL), (ROW, "absent")])
    assert len(store.answers) == 2, "one read confirms both"
    assert page.found == {(ROW, COL): Cell(b"2", 2), (ROW, "absent"): None}
    assert cache.peek((ROW, COL)) == Cell(b"2", 2) and cache.refreshed == 1
    store.delete(ROW, COL)
    page = _page(store, cache)
    page.confirm([(ROW, COL)])
    assert page.found[(ROW, COL)] is None and cache.peek((ROW, COL)) is None


def test_the_cache_is_bounded_least_recently_used_first_out() -> None:
    cache = CellCache(2)
    for i in range(3):
        cache.keep(("r", str(i)), Cell(b"v", 1))
    assert cache.peek(("r", "0")) is None and len(cache) == 2


def _sessions(store: MemClient, cache: CellCache) -> SessionStore:
    return SessionStore(lambda: _page(store, cache), ttl=3600, idle=3600, secure=False)


def test_a_session_ended_on_another_frontend_stops_working_at_once() -> None:
    store = Answers()
    here, there = CellCache(16), CellCache(16)  # two workers, each with its cache
    ours, theirs = _sessions(store, here), _sessions(store, there)
    session = ours.login(Session(sid="x" * 43), "alice", admin=False)
    assert ours.load(session.sid).user == "alice"
    assert ours.load(session.sid).user == "alice"
    assert Unchanged(store.get(session_row(session.sid), SESSION_COL).version) in \
        store.answers[-1], "the second load confirmed the cached session by version"
    assert theirs.load(session.sid).user == "alice"
    theirs.revoke_all("alice")  # "log out everywhere", on the other frontend
    assert ours.cached_user(session.sid) == "alice", "the cache still holds it..."
    assert ours.load(session.sid).user is None, "...but the version check sees it gone"
    assert here.peek((session_row(session.sid), SESSION_COL)) is None
    ours.close()
    theirs.close()


def test_a_cput_on_a_stale_cached_version_fails_and_refreshes_the_copy() -> None:
    store, cache = Answers(), CellCache(16)
    msg_id = mailbox.deliver(store, "alice", b"Subject: hi\r\n\r\nbody")
    [column] = store.get_row(mailbox.mailbox_row("alice"), prefix="u:")  # its record
    key = (mailbox.mailbox_row("alice"), column)
    page = _page(store, cache)
    page.confirm([key])  # the page's first read
    stale = page.found[key]
    # Meanwhile another frontend changes the message (its record gets a new version).
    other = msgpack.unpackb(store.get(*key).value)
    store.cput(*key, msgpack.packb({**other, "flags": ["\\Flagged"]}), if_version=stale.version)
    with pytest.raises(ConditionFailed):
        page.cput(*key, msgpack.packb({**other, "flags": ["\\Seen"]}), if_version=stale.version)
    assert cache.peek(key) is None and key not in page.found, "the stale copy is gone"
    # The data model's retry (re-read, apply, write conditioned) now reads the current cell.
    assert mailbox.mark_read(page, "alice", msg_id)
    current = store.get(*key)
    assert msgpack.unpackb(current.value)["flags"] == ["\\Flagged", "\\Seen"], \
        "no update was lost"
    assert page.get(*key) == current


def test_a_confirmation_a_lost_group_answers_stale_marks_the_page() -> None:
    store, cache = Answers(), CellCache(16)
    store.put(ROW, COL, b"1")
    fallback = ReadOnlyFallback(store, store, lambda gid: None, lambda shard: 0,  # type: ignore[arg-type]
                                retry_pause=0.0, probe_interval=0.05)
    try:
        with observing() as state:
            PageStore(fallback, cache).confirm([(ROW, COL)])
            assert not state.read_only
        store.down = True
        with observing() as state:
            page = PageStore(fallback, cache)
            page.confirm([(ROW, COL)])
            assert page.found[(ROW, COL)] == Cell(b"1", 1)
            assert state.read_only, "a cached cell confirmed only stale is shown with the notice"
    finally:
        fallback.health.stop()


def test_reads_sent_together_overlap_and_keep_the_callers_context() -> None:
    started = threading.Barrier(3, timeout=5)

    def read(n: int) -> int:
        started.wait()  # would time out unless all three run at once
        return n
    with observing() as state:
        def marked() -> int:
            assert read_state() is state
            return read(3)
        assert together(lambda: read(1), lambda: read(2), marked) == [1, 2, 3]


def test_a_session_indexed_before_issue_16_is_described_from_its_row() -> None:
    store, cache = Answers(), CellCache(16)
    sessions = _sessions(store, cache)
    current = sessions.login(Session(sid="y" * 43), "alice", admin=False, agent="New/1")
    old = session_row("z" * 43)
    store.put(old, SESSION_COL, msgpack.packb({"user": "alice", "created": time.time(), "addr": "",
                                               "agent": "Old/1", "expires": 4e9}))
    store.put(index_row("alice"), f"s:{session_key('z' * 43)}", msgpack.packb(4e9))
    listed = {info.agent: info for info in sessions.of_user("alice", current)}
    assert set(listed) == {"New/1", "Old/1"} and listed["New/1"].current
    sessions.close()

"""WebDAV locks in the store (shards.model.davlocks, portal.dav.locks) on the real state
machine, in process: every call of WsgiDAV's lock storage interface, expiry, the caps,
and two frontends (two storages, two lock managers) racing for one path."""

from __future__ import annotations

import threading

import pytest
from wsgidav.dav_error import DAVError
from wsgidav.lock_man.lock_manager import LockManager

from portal.dav import locks
from portal.dav.locks import StoreLockStorage, UserScope, current_user, scoped, user_scope
from shards.model import davlocks

from .._memstore import MemClient

NOW = 1_800_000_000.0
OWNER = b'<owner xmlns="DAV:">litmus</owner>'


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(davlocks, "clock", clock)
    return clock


@pytest.fixture
def client() -> MemClient:
    return MemClient()


def _lock(path: str, *, scope: str = "exclusive", depth: str = "0", timeout: float | None = 60,
          principal: str = "alice") -> dict:
    return {"root": path, "type": "write", "scope": scope, "depth": depth, "owner": OWNER,
            "timeout": timeout, "principal": principal}


def _manager(client) -> LockManager:
    """A lock manager as one frontend's WsgiDAV app builds it."""
    return LockManager(StoreLockStorage(client))


def _acquire(manager: LockManager, url: str, *, scope: str = "exclusive", depth: str = "0",
             timeout: float | None = 60, user: str = "alice") -> dict:
    return manager.acquire(url=url, lock_type="write", lock_scope=scope, lock_depth=depth,
                           lock_owner=OWNER, timeout=timeout, principal=user, token_list=[])


def _status(call) -> int:
    with pytest.raises(DAVError) as caught:
        call()
    return caught.value.value


# -- the storage interface ------------------------------------------------------------------


def test_every_storage_call_round_trips_through_the_store(client, clock):
    storage = StoreLockStorage(client)
    storage.open()
    with user_scope("alice"):
        made = storage.create("/dav/docs/a.txt/", _lock("ignored"))
        assert made["root"] == "/dav/docs/a.txt"
        assert made["token"].startswith("opaquelocktoken:")
        assert made["timeout"] == 60 and made["expire"] == NOW + 60
        assert storage.get(made["token"]) == made
        assert storage.get_lock_list("/dav/docs/a.txt", include_root=True,
                                     include_children=False, token_only=False) == [made]
        assert storage.get_lock_list("/dav/docs", include_root=False, include_children=True,
                                     token_only=True) == [made["token"]]
        assert storage.get_lock_list("/dav/docs", include_root=True, include_children=False,
                                     token_only=True) == []
        assert storage.get_lock_list("/", include_root=True, include_children=True,
                                     token_only=True) == [made["token"]]
        clock.now += 10
        refreshed = storage.refresh(made["token"], timeout=120)
        assert refreshed["expire"] == NOW + 130 and refreshed["timeout"] == 120
        assert storage.get(made["token"])["expire"] == NOW + 130
        assert storage.delete(made["token"]) is True
        assert storage.get(made["token"]) is None
        assert storage.delete(made["token"]) is False
        storage.create("/dav/b", _lock(""))
        storage.create("/dav/c", _lock("", scope="shared"))
        storage.clear()
        assert storage.get_lock_list("/", include_root=True, include_children=True,
                                     token_only=True) == []
    storage.cleanup()
    storage.close()
    assert client.get_row(davlocks.lock_row("alice")) == {}


def test_children_are_paths_below_not_names_that_begin_alike(client, clock):
    with user_scope("alice"):
        storage = StoreLockStorage(client)
        storage.create("/dav/ab", _lock(""))
        storage.create("/dav/a/b", _lock(""))
        below = storage.get_lock_list("/dav/a", include_root=True, include_children=True,
                                      token_only=False)
    assert [lock["root"] for lock in below] == ["/dav/a/b"]


def test_each_user_has_their_own_locks_under_the_same_urls(client, clock):
    manager = _manager(client)
    with user_scope("alice"):
        _acquire(manager, "/dav/notes.txt")
    with user_scope("bob"):
        assert manager.get_url_lock_list("/dav/notes.txt") == []
        manager.check_write_permission(url="/dav/notes.txt", depth="0", token_list=[],
                                       principal="bob")
        _acquire(manager, "/dav/notes.txt", user="bob")     # bob's own file of that name
    with user_scope("alice"):
        locks = manager.get_url_lock_list("/dav/notes.txt")
    assert [lock["principal"] for lock in locks] == ["alice"]


def test_outside_a_user_scope_the_storage_refuses_instead_of_guessing(client):
    storage = StoreLockStorage(client)
    assert _status(lambda: storage.get("opaquelocktoken:x")) == 500
    with pytest.raises(DAVError):
        current_user()


def test_one_request_reads_a_few_locks_once_and_many_locks_path_by_path(client, clock,
                                                                         monkeypatch):
    storage = StoreLockStorage(client)
    with user_scope("alice"):
        storage.create("/dav/a/b", _lock(""))
    with user_scope("alice"):           # a PUT's check walks every parent: one read
        before = len(client.ops)
        found = [storage.get_lock_list(path, include_root=True, include_children=False,
                                       token_only=True)
                 for path in ("/dav/a/b/c", "/dav/a/b", "/dav/a", "/dav", "/")]
        assert [len(tokens) for tokens in found] == [0, 1, 0, 0, 0]
        assert len(client.ops) == before + 1
        made = storage.create("/dav/a/b/c", _lock(""))    # its own change is seen at once
        assert storage.get_lock_list("/dav/a/b/c", include_root=True, include_children=False,
                                     token_only=True) == [made["token"]]
    monkeypatch.setattr(locks, "FEW_LOCKS", 1)
    with user_scope("alice"):           # too many to keep: one read per question
        before = len(client.ops)
        found = [storage.get_lock_list(path, include_root=True, include_children=True,
                                       token_only=True) for path in ("/dav/a/b", "/dav/z")]
        assert [len(tokens) for tokens in found] == [2, 0]
        assert len(client.ops) == before + 1 + 2 * 3   # on: one read; below: two


# -- two frontends ---------------------------------------------------------------------------


def test_a_lock_taken_through_one_manager_holds_in_another(client, clock):
    web1, web2 = _manager(client), _manager(MemClientView(client))
    with user_scope("alice"):
        lock = _acquire(web1, "/dav/report.odt")
        assert _status(lambda: web2.check_write_permission(
            url="/dav/report.odt", depth="0", token_list=[], principal="alice")) == 423
        web2.check_write_permission(url="/dav/report.odt", depth="0",
                                    token_list=[lock["token"]], principal="alice")
        assert _status(lambda: _acquire(web2, "/dav/report.odt")) == 423
        assert web2.is_token_locked_by_user(lock["token"], "alice")
        web2.release(lock["token"])
        web1.check_write_permission(url="/dav/report.odt", depth="0", token_list=[],
                                    principal="alice")


def test_a_locked_tree_blocks_writes_below_and_moves_of_its_parents(client, clock):
    manager = _manager(client)
    with user_scope("alice"):
        _acquire(manager, "/dav/project", depth="infinity")
        child = "/dav/project/src/main.c"
        assert _status(lambda: manager.check_write_permission(
            url=child, depth="0", token_list=[], principal="alice")) == 423
        # DELETE or MOVE of /dav (depth infinity) must see the lock below it.
        assert _status(lambda: manager.check_write_permission(
            url="/dav", depth="infinity", token_list=[], principal="alice")) == 423
        # A new lock inside the tree, or an infinite one above it, conflicts.
        assert _status(lambda: _acquire(manager, child)) == 423
        assert _status(lambda: _acquire(manager, "/dav", depth="infinity")) == 423
        # Beside it, nothing is locked.
        manager.check_write_permission(url="/dav/projects", depth="infinity", token_list=[],
                                       principal="alice")


def test_shared_locks_share_and_an_exclusive_one_excludes(client, clock):
    manager = _manager(client)
    with user_scope("alice"):
        _acquire(manager, "/dav/f", scope="shared")
        _acquire(manager, "/dav/f", scope="shared")
        assert _status(lambda: _acquire(manager, "/dav/f")) == 423
        assert len(manager.get_url_lock_list("/dav/f")) == 2


def test_two_frontends_creating_one_lock_at_once_end_with_one_lock(client, clock):
    """Frontend B's create lands between A's conflict check and A's mutation: A's
    condition on the count cell fails, A reads again and sees B's lock."""
    a = StoreLockStorage(Interleaved(client))
    b = StoreLockStorage(client)
    with user_scope("alice"):
        a._client.before_mutation = lambda: b.create("/dav/x", _lock(""))
        assert _status(lambda: a.create("/dav/x", _lock(""))) == 423
        assert len(b.get_lock_list("/dav/x", include_root=True, include_children=False,
                                   token_only=True)) == 1


def test_threads_racing_for_one_exclusive_lock_end_with_one_winner(client, clock):
    storages = [StoreLockStorage(client) for _ in range(6)]
    start = threading.Barrier(len(storages))
    outcomes: list[object] = []

    def race(storage: StoreLockStorage) -> None:
        with user_scope("alice"):
            start.wait(timeout=10)
            try:
                outcomes.append(storage.create("/dav/race", _lock("")))
            except DAVError as e:
                outcomes.append(e.value)

    threads = [threading.Thread(target=race, args=(s,)) for s in storages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(isinstance(o, dict) for o in outcomes) == 1
    assert sorted(o for o in outcomes if not isinstance(o, dict)) == [423] * 5
    assert davlocks._int(client.get(davlocks.lock_row("alice"), "n").value) == 1


# -- expiry and timeouts -----------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "granted"), [(None, 3600.0), (-1, 3600.0), (31_536_000, 3600.0),
                                                (0, 1.0), (120, 120.0)])
def test_a_timeout_is_capped_at_an_hour_and_infinite_becomes_the_cap(client, clock, asked,
                                                                      granted):
    manager = _manager(client)
    with user_scope("alice"):
        lock = _acquire(manager, "/dav/a", timeout=asked)
        stored = manager.get_lock(lock["token"])
    assert lock["timeout"] == stored["timeout"] == granted
    assert stored["expire"] == NOW + granted


def test_an_expired_lock_is_gone_on_read_and_purged_by_the_next_change(client, clock):
    storage = StoreLockStorage(client)
    with user_scope("alice"):
        old = storage.create("/dav/old", _lock("", timeout=30))
        clock.now += 31
        assert storage.get(old["token"]) is None
        assert storage.get_lock_list("/", include_root=True, include_children=True,
                                     token_only=True) == []
        assert len(client.get_row(davlocks.lock_row("alice"), "t:")) == 1   # not yet purged
        storage.create("/dav/old", _lock(""))          # its path is free again
    tokens = client.get_row(davlocks.lock_row("alice"), "t:")
    assert [c[2:] for c in tokens] != [old["token"]] and len(tokens) == 1
    assert len(client.get_row(davlocks.lock_row("alice"), "x:")) == 1


def test_an_expired_lock_cannot_be_refreshed(client, clock):
    storage = StoreLockStorage(client)
    manager = LockManager(storage)
    with user_scope("alice"):
        lock = _acquire(manager, "/dav/doc", timeout=5)
        clock.now += 4
        assert manager.refresh(lock["token"], timeout=5)["expire"] == NOW + 9
        clock.now += 6
        assert _status(lambda: manager.refresh(lock["token"], timeout=60)) == 412
        assert _status(lambda: storage.refresh("opaquelocktoken:nonsense", timeout=60)) == 412


# -- caps and hostile input ----------------------------------------------------------------------


def test_at_most_max_locks_per_user_then_a_clear_refusal(client, clock, monkeypatch):
    monkeypatch.setattr(davlocks, "MAX_LOCKS", 5)
    storage = StoreLockStorage(client)
    with user_scope("alice"):
        made = [storage.create(f"/dav/f{i}", _lock("", timeout=10 + i)) for i in range(5)]
        with pytest.raises(DAVError) as caught:
            storage.create("/dav/f5", _lock(""))
        assert caught.value.value == 507 and "5 locks" in caught.value.context_info
        storage.delete(made[0]["token"])
        storage.create("/dav/f5", _lock("", timeout=100))
        clock.now += 12.5           # two more have expired: they no longer hold room
        storage.create("/dav/f6", _lock(""))
        storage.create("/dav/f7", _lock(""))
        assert _status(lambda: storage.create("/dav/f8", _lock(""))) == 507
    with user_scope("bob"):       # another user's count is their own
        StoreLockStorage(client).create("/dav/f0", _lock("", principal="bob"))


@pytest.mark.parametrize("path", ["/dav/a\x00b", "/dav/\x1b[31m", "/dav/" + "x" * 5000])
def test_a_path_a_lock_cannot_name_is_a_bad_request_and_has_no_locks(client, clock, path):
    with user_scope("alice"):
        assert _status(lambda: StoreLockStorage(client).create(path, _lock(""))) == 400
        assert StoreLockStorage(client).get_lock_list(
            path, include_root=True, include_children=True, token_only=True) == []
        assert davlocks.locks_at(client, "alice", path, include_children=True) == []


def test_a_root_too_long_for_a_column_key_is_found_by_its_hash(client, clock):
    """URL paths of non-Latin names are long (each letter is six or nine characters
    quoted); the store's keys stop near 500 bytes."""
    deep = "/dav/" + "/".join(["%D0%9E%D1%82%D1%87%D1%91%D1%82"] * 20)      # 624 characters
    short, long = deep.rsplit("/", 15)[0], deep.rsplit("/", 5)[0]          # 159 and 469
    manager = _manager(client)
    with user_scope("alice"):
        lock = _acquire(manager, deep + "/a.odt", depth="infinity")
        assert [x["token"] for x in manager.get_url_lock_list(deep + "/a.odt")] == [lock["token"]]
        assert manager.get_lock(lock["token"])["root"] == deep + "/a.odt"
        # Seen from above (a MOVE of the tree), and from below (a write inside it).
        for above in ("/", "/dav", short, long, deep):
            assert _status(lambda a=above: manager.check_write_permission(
                url=a, depth="infinity", token_list=[], principal="alice")) == 423
            assert davlocks.locks_at(client, "alice", above, include_root=False,
                                     include_children=True)[0].root == deep + "/a.odt"
        assert _status(lambda: manager.check_write_permission(
            url=deep + "/a.odt/x", depth="0", token_list=[], principal="alice")) == 423
        assert _status(lambda: _acquire(manager, deep + "/a.odt")) == 423
        manager.check_write_permission(url=deep + "/b.odt", depth="0", token_list=[],
                                       principal="alice")
        manager.release(lock["token"])
        assert manager.get_url_lock_list(deep + "/a.odt") == []
    assert client.get_row(davlocks.lock_row("alice")) == {}


def test_the_longest_user_name_and_roots_either_side_of_the_column_limit_fit_the_store(client,
                                                                                     clock):
    user = "u" * 32                      # the longest account name
    for size in (davlocks.MAX_INDEXED, davlocks.MAX_INDEXED + 1, davlocks.MAX_PATH):
        path = "/dav/" + "é" * ((size - 5) // 2) + "x" * ((size - 5) % 2)
        assert len(path.encode()) == size
        lock = davlocks.create(client, user, path, scope="exclusive", depth="0", owner=b"",
                               principal=user, timeout=60)
        assert davlocks.locks_at(client, user, path) == [lock]
        assert davlocks.delete(client, user, lock.token)


def test_an_oversized_owner_or_unknown_scope_is_a_bad_request(client, clock):
    storage = StoreLockStorage(client)
    with user_scope("alice"):
        big = {**_lock(""), "owner": b"<owner>" + b"x" * 5000 + b"</owner>"}
        assert _status(lambda: storage.create("/dav/a", big)) == 400
        assert _status(lambda: storage.create("/dav/a", {**_lock(""), "scope": "x"})) == 400
    assert client.get_row(davlocks.lock_row("alice")) == {}


@pytest.mark.parametrize("token", ["", "opaquelocktoken:", "opaquelocktoken:../../x",
                                   "t:" + "a" * 5000, "opaquelocktoken:\x00"])
def test_tokens_not_made_here_find_nothing_and_touch_nothing(client, clock, token):
    storage = StoreLockStorage(client)
    with user_scope("alice"):
        assert storage.get(token) is None
        assert storage.delete(token) is False
    assert client.ops == []


# -- the user scope around a WsgiDAV request ---------------------------------------------------


def test_the_middleware_scopes_the_call_and_the_body_to_the_authenticated_user(client, clock):
    seen: list[str] = []

    def app(environ, start_response):
        seen.append(current_user())      # work done when called (LOCK answers a list)
        yield b"a"
        seen.append(current_user())      # and while the body is iterated (WsgiDAV's way)
        yield b"b"

    middleware = UserScope(None, app, {})
    body = middleware({"wsgidav.auth.user_name": "carol"}, lambda *a: None)
    assert b"".join(body) == b"ab"
    assert seen == ["carol", "carol"]
    assert _status(current_user) == 500        # nothing leaks into the thread afterwards
    unscoped = middleware({}, lambda *a: None)  # no authenticated user: no scope at all
    with pytest.raises(DAVError):
        list(unscoped)
    assert list(scoped("dave", lambda e, s: [b"x"], {}, lambda *a: None)) == [b"x"]


# -- helpers -------------------------------------------------------------------------------------


class MemClientView:
    """A second handle on the same store, as another frontend's client is."""

    def __init__(self, client: MemClient) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)


class Interleaved(MemClientView):
    """Runs ``before_mutation`` once, just before the next ``mutate_row``."""

    before_mutation = None

    def mutate_row(self, *args, **kwargs):
        hook, self.before_mutation = self.before_mutation, None
        if hook is not None:
            hook()
        return self._client.mutate_row(*args, **kwargs)

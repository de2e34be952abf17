"""The admin console checks the admin flag before it asks anyone anything (portal.admin).

A signed-in user who is not an administrator gets a 403 without the worker
asking the supervisors or the replicas' status, once the worker knows the
session (its first round trip confirms the account cell); on a worker that does
not yet, the flag is read alongside them (two round trips, like every page) and
still decides first: a 403, never a 500 from a part that failed.  Counted at the
boundaries: the store client's ``status`` and :func:`shards.control.supervisor_for`.
The store is :class:`tests._memstore.MemClient`.
"""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client as HTTPClient

from portal import admin
from portal.sessions import COOKIE
from shards.model import accounts

from .._memstore import MemClient
from .._portal import PASSWORD, logged_in, unit_config, unit_portal


class CountingStore(MemClient):
    """The replicas' status, counted (the in-memory store has no replicas to ask);
    the registry in the storage groups (no config group)."""

    def __init__(self) -> None:
        super().__init__()
        self.status_calls = 0
        self.status_fails = False

    def status(self) -> list[dict[str, Any]]:
        self.status_calls += 1
        if self.status_fails:
            raise RuntimeError("a replica answered nonsense")
        return []

    def config_group(self) -> None:
        return None


class FakeSupervisor:
    def processes(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def store() -> CountingStore:
    store = CountingStore()
    accounts.create_user(store, "root", PASSWORD, admin=True)
    accounts.create_user(store, "bob", PASSWORD)
    return store


@pytest.fixture
def supervisor_calls(monkeypatch) -> list[str]:
    calls: list[str] = []

    def counting(cluster: Any, host: str, **kwargs: Any) -> FakeSupervisor:
        calls.append(host)
        return FakeSupervisor()

    monkeypatch.setattr(admin, "supervisor_for", counting)
    return calls


def _portal(store: CountingStore) -> Any:
    config = unit_config()
    config.__dict__["supervisors"] = {"host1": "127.0.0.1:3"}  # one supervised host
    return unit_portal(store, config)


@pytest.fixture
def app(store):
    app = _portal(store)
    yield app
    app.close()



def test_a_non_admin_is_refused_before_anyone_is_asked(app, store, supervisor_calls):
    http = logged_in(app, "bob")
    assert http.get("/admin").status_code == 403  # the worker now knows whose session it is
    store.status_calls, supervisor_calls[:] = 0, []
    for _ in range(3):
        assert http.get("/admin").status_code == 403
    assert store.status_calls == 0 and supervisor_calls == []


def test_an_admin_gets_the_console_with_every_part_asked(app, store, supervisor_calls):
    http = logged_in(app, "root")
    assert http.get("/admin").status_code == 200
    assert store.status_calls == 1 and supervisor_calls == ["host1"]


def test_on_a_worker_new_to_the_session_a_non_admin_gets_403_whatever_failed(
        app, store, supervisor_calls):
    sid = logged_in(app, "bob").get_cookie(COOKIE).value
    store.status_fails = True
    other = _portal(store)  # another worker: it has not seen this session
    try:
        http = HTTPClient(other)
        http.set_cookie(COOKIE, sid)
        assert http.get("/admin").status_code == 403  # cold: read alongside, decided first
        calls = store.status_calls
        assert http.get("/admin").status_code == 403  # warm: nothing else asked
        assert store.status_calls == calls
    finally:
        other.close()

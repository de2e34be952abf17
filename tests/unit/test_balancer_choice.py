"""The balancer's policy: which frontend, which Location, what counts as healthy."""

from __future__ import annotations

import json
import random

import pytest

from balancer.choice import FrontendState, choose, parse_health, redirect_location
from balancer.pool import FrontendPool
from raftkv.errors import NoLeader


def test_least_loaded_live_frontend_wins():
    frontends = [FrontendState("a:1", live=True, load=5), FrontendState("b:1", live=True, load=1),
                 FrontendState("c:1", live=False, load=0)]
    assert choose(frontends).addr == "b:1"


def test_no_live_frontend_means_none():
    assert choose([]) is None
    assert choose([FrontendState("a:1", live=False)]) is None


def test_our_own_recent_redirects_count_as_load():
    frontends = [FrontendState("a:1", live=True, load=2, redirects=0),
                 FrontendState("b:1", live=True, load=0, redirects=3)]
    assert choose(frontends).addr == "a:1"


def test_ties_are_spread_over_the_tied_frontends():
    frontends = [FrontendState(f"f{i}:1", live=True, load=1) for i in range(3)]
    frontends.append(FrontendState("busy:1", live=True, load=2))
    picked = {choose(frontends, random.Random(seed)).addr for seed in range(50)}
    assert picked == {"f0:1", "f1:1", "f2:1"}


@pytest.mark.parametrize("target, location", [
    ("/", "http://h:8001/"),
    ("/admin", "http://h:8001/admin"),
    ("/mail/view?id=1&x=%20y", "http://h:8001/mail/view?id=1&x=%20y"),
    ("/drive/a%2Fb", "http://h:8001/drive/a%2Fb"),
    ("//evil.test/x", "http://h:8001//evil.test/x"),        # a path, not a host
    ("http://evil.test/steal?q=1", "http://h:8001/steal?q=1"),  # absolute form: host dropped
    ("/sp ace/\u00e9", "http://h:8001/sp%20ace/%C3%A9"),
    ("/?a=<b>", "http://h:8001/?a=%3Cb%3E"),
])
def test_redirect_keeps_path_and_query_on_the_chosen_frontend(target, location):
    assert redirect_location("h:8001", target) == location


@pytest.mark.parametrize("status, body, load", [
    (200, {"status": "ok", "load": 3}, 3.0),
    (200, {"status": "ok"}, 0.0),
    (200, {"status": "draining", "load": 0}, None),
    (500, {"status": "ok", "load": 0}, None),
    (200, {"status": "ok", "load": -1}, None),
    (200, {"status": "ok", "load": "lots"}, None),
    (200, ["ok"], None),
])
def test_health_answers(status, body, load):
    assert parse_health(status, json.dumps(body).encode()) == load


@pytest.mark.parametrize("body", [b"", b"<html>", b"\xff", b'{"status": "ok", "load": NaN}'])
def test_garbled_health_answers_mean_dead(body):
    assert parse_health(200, body) is None


class _Frontends:
    """Stand-ins for the registry and /healthz: the pool's bookkeeping is under test."""

    def __init__(self) -> None:
        self.addrs = ["a:1", "b:1"]
        self.loads: dict[str, float | None] = {"a:1": 0.0, "b:1": 4.0}
        self.registry_down = False

    def discover(self):
        if self.registry_down:
            raise NoLeader("config group electing")
        return list(self.addrs)

    def check(self, addr: str, timeout: float) -> float | None:
        return self.loads.get(addr)


def test_pool_follows_health_and_counts_its_redirects():
    world = _Frontends()
    pool = FrontendPool(world.discover, check=world.check)
    assert pool.pick() is None  # before the first round nothing is known
    pool.refresh()
    picks = [pool.pick().addr for _ in range(6)]
    # a:1 takes clients until its redirects bring it level with b:1's load of 4
    assert picks[:4] == ["a:1"] * 4 and set(picks[4:]) <= {"a:1", "b:1"}
    world.loads["a:1"] = None
    pool.refresh()
    assert {pool.pick().addr for _ in range(5)} == {"b:1"}


def test_pool_keeps_known_frontends_while_the_registry_is_down():
    world = _Frontends()
    pool = FrontendPool(world.discover, check=world.check)
    pool.refresh()
    world.registry_down = True
    world.loads["b:1"] = 0.0
    pool.refresh()
    assert {f.addr for f in pool.snapshot() if f.live} == {"a:1", "b:1"}


def test_pool_forgets_frontends_that_left_the_registry():
    world = _Frontends()
    pool = FrontendPool(world.discover, check=world.check)
    pool.refresh()
    world.addrs = ["b:1"]
    pool.refresh()
    assert [f.addr for f in pool.snapshot()] == ["b:1"]

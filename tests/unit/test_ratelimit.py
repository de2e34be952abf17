"""The password limiter (shards.model.ratelimit) against the real state machine, in process."""

from __future__ import annotations

import ipaddress
import re
import threading
import time
import tomllib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.errors import ConfigError
from shards.model import accounts, ratelimit
from shards.model.ratelimit import Limits, Rule

from .._memstore import MemClient

RIGHT = "the right password"
NOW = 1_800_000_000.0
SMALL = Limits(address=Rule(free=4, window=100.0, delay=2.0, max_delay=16.0),
               pair=Rule(free=2, window=100.0, delay=5.0, max_delay=20.0),
               account=Rule(free=6, window=100.0, delay=100.0, max_delay=100.0),
               signup=Rule(free=2, window=100.0, delay=100.0, max_delay=100.0))


@pytest.fixture
def hashes(monkeypatch) -> list[tuple[str, str]]:
    """Stand in for the argon2 check (every user's password is RIGHT) and record each call."""
    calls: list[tuple[str, str]] = []

    def verify(client, name: str, password: str) -> bool:
        calls.append((name, password))
        return password == RIGHT
    monkeypatch.setattr(accounts, "verify_password", verify)
    return calls


def counters(client: MemClient) -> dict[tuple[str, str], list]:
    """Every counter cell in the store, decoded."""
    found = {}
    for shard in range(client.store.shard_count):
        for row, cells in client.scan(shard, limit=1000):
            for col, cell in cells.items():
                found[row, col] = msgpack.unpackb(cell.value)
    return found


@pytest.mark.parametrize("attempts, wait", [(0, 0), (3, 0), (4, 2), (5, 4), (6, 8), (7, 16),
                                            (8, 16), (1000, 16)])
def test_the_wait_doubles_after_the_free_attempts_up_to_its_cap(attempts, wait):
    assert SMALL.address.wait_after(attempts) == wait


def test_a_pair_is_slowed_after_its_free_misses_and_never_hashed_meanwhile(hashes):
    client = MemClient()
    for i in range(2):
        assert ratelimit.check_password(client, "ann", "guess", "192.0.2.1", SMALL,
                                        now=1000 + i) == ratelimit.Verdict(right=False)
    refused = ratelimit.check_password(client, "ann", RIGHT, "192.0.2.1", SMALL, now=1002)
    assert refused.limited and refused.retry_after == 4  # the 2nd miss at 1001 set 5 s
    assert len(hashes) == 2  # the refused attempt was never checked, right or not
    # The user elsewhere is not slowed by that address's misses.
    assert ratelimit.check_password(client, "ann", RIGHT, "198.51.100.9", SMALL,
                                    now=1002).right
    # After the wait, one more try; a miss doubles the wait.
    assert not ratelimit.check_password(client, "ann", "guess", "192.0.2.1", SMALL,
                                        now=1006).limited
    assert ratelimit.check_password(client, "ann", RIGHT, "192.0.2.1", SMALL,
                                    now=1010).retry_after == 6  # 10 s from 1006
    # The right password from that address, once allowed, forgets the pair's misses.
    assert ratelimit.check_password(client, "ann", RIGHT, "192.0.2.1", SMALL, now=1016).right
    assert ratelimit.pair_key("ann", "192.0.2.1") not in counters(client)


def test_an_address_spraying_many_accounts_waits_longer_and_longer(hashes):
    client = MemClient()
    now, waits = 1000.0, []
    for i in range(8):
        while (verdict := ratelimit.check_password(client, f"user{i}", "guess", "192.0.2.7",
                                                   SMALL, now=now)).limited:
            waits.append(verdict.retry_after)
            now += verdict.retry_after
    assert waits == [2, 4, 8, 16]  # four free, then doubling up to the cap
    assert len(hashes) == 8


def test_an_account_locks_for_everyone_only_after_many_misses_from_many_addresses(hashes):
    client = MemClient()
    for i in range(6):
        assert not ratelimit.check_password(client, "bob", "guess", f"203.0.113.{i}", SMALL,
                                            now=1000).limited
    locked = ratelimit.check_password(client, "bob", RIGHT, "198.51.100.1", SMALL, now=1001)
    assert locked.limited and locked.retry_after == 99
    assert ratelimit.check_password(client, "bob", RIGHT, "198.51.100.1", SMALL, now=1100).right


def test_right_passwords_give_their_slots_back_and_leave_no_cells(hashes):
    client = MemClient()
    for i in range(50):
        assert ratelimit.check_password(client, "carol", RIGHT, "192.0.2.3", SMALL,
                                        now=1000 + i).right
    assert counters(client) == {}
    # A miss then a success: the success undoes only itself.
    ratelimit.check_password(client, "carol", "guess", "192.0.2.3", SMALL, now=2000)
    ratelimit.check_password(client, "carol", RIGHT, "192.0.2.3", SMALL, now=2001)
    left = counters(client)
    assert left[ratelimit.address_key("192.0.2.3")][1] == 1
    assert left[ratelimit.account_key("carol")][1] == 1
    assert ratelimit.pair_key("carol", "192.0.2.3") not in left


def test_an_old_window_is_overwritten_in_place(hashes):
    client = MemClient()
    for window in range(20):
        ratelimit.check_password(client, "dan", "guess", "192.0.2.4", SMALL,
                                 now=1000 + 1000 * window)
    cells = counters(client)
    assert len(cells) == 3  # address, pair, account: one cell each, however many windows
    assert all(count == 1 for _, count, _ in cells.values())


def test_parallel_guesses_take_their_slots_before_any_is_checked(monkeypatch):
    """Hole 6: 12 guesses at once; each must take its slot before its hash is computed."""
    client, checked = MemClient(), []

    def slow_verify(client, name: str, password: str) -> bool:
        checked.append(password)
        time.sleep(0.05)  # an argon2 verification
        return False
    monkeypatch.setattr(accounts, "verify_password", slow_verify)
    start, verdicts = threading.Barrier(12), []

    def guess(i: int) -> None:
        start.wait(5)
        verdicts.append(ratelimit.check_password(client, "eve", f"guess {i}", "192.0.2.5",
                                                 SMALL))
    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(verdicts) == 12
    assert len(checked) == SMALL.pair.free == sum(not v.limited for v in verdicts)


def test_signups_are_limited_per_address():
    client = MemClient()
    assert ratelimit.take_signup_slot(client, "192.0.2.8", SMALL, now=1000) == 0
    assert ratelimit.take_signup_slot(client, "192.0.2.8", SMALL, now=1001) == 0
    assert ratelimit.take_signup_slot(client, "192.0.2.8", SMALL, now=1002) == 99
    assert ratelimit.take_signup_slot(client, "192.0.2.9", SMALL, now=1002) == 0
    assert ratelimit.take_signup_slot(client, "192.0.2.8", SMALL, now=1101) == 0


def test_addresses_are_counted_per_host_or_per_ipv6_slash_64():
    assert ratelimit.address_key("192.0.2.7")[0] == "login-addr/192.0.2.7"
    assert ratelimit.address_key("::ffff:192.0.2.7")[0] == "login-addr/192.0.2.7"
    assert (ratelimit.address_key("2001:db8:1:2::5")[0]
            == ratelimit.address_key("2001:db8:1:2:ffff::1")[0] == "login-addr/2001:db8:1:2::/64")
    assert ratelimit.account_key("bob")[0] == ratelimit.pair_key("bob", "::1")[0] == "{bob}/login"
    assert len(ratelimit.address_key("x" * 10_000)[0]) < 100


def test_limits_come_from_the_auth_table():
    assert Limits.from_table({}) == Limits()
    limits = Limits.from_table({"pair": {"free": 3, "delay": 10}, "failures_per_connection": 2})
    assert limits.pair == Rule(free=3, window=3600.0, delay=10.0, max_delay=900.0)
    assert limits.failures_per_connection == 2 and limits.account == Limits().account
    for bad in ({"pairs": {}}, {"pair": 3}, {"pair": {"free": 0}}, {"pair": {"fre": 3}},
                {"account": {"delay": "1h"}}, {"address": {"free": 2.5}},
                {"signup": {"delay": 10, "max_delay": 5}}, {"code": {"free": 0}}, {"network": 1},
                {"failures_per_connection": 0},
                {"failures_per_connection": True}):
        with pytest.raises(ConfigError):
            Limits.from_table(bad)


class _Model:
    """The rules of the module docstring, with no store: what every verdict must be."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.cells = limits, {}

    def take(self, key, rule: Rule, now: float):
        start, count, until = self.cells.get(key, (0.0, 0, 0.0))
        if now < until:
            return until - now
        if now - start >= rule.window:
            start, count = now, 0
        wait = rule.wait_after(count + 1)
        self.cells[key] = (start, count + 1, now + wait if wait else 0.0)
        return None

    def check(self, user: str, password: str, addr: str, now: float) -> ratelimit.Verdict:
        keys = [(("addr", addr), self.limits.address), (("pair", user, addr), self.limits.pair),
                (("account", user), self.limits.account)]
        if ":" in addr:
            keys.insert(1, (("net", ipaddress.ip_network(f"{addr}/48", strict=False)),
                            self.limits.network))
        before = dict(self.cells)
        for key, rule in keys:
            wait = self.take(key, rule, now)
            if wait is not None:
                self.cells = before
                return ratelimit.Verdict(right=False, retry_after=wait)
        if password != RIGHT:
            return ratelimit.Verdict(right=False)
        self.cells = before
        self.cells.pop(("pair", user, addr), None)
        return ratelimit.Verdict(right=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 3.0, 7.0, 40.0, 150.0]),
                          st.sampled_from(["ann", "bob"]),
                          st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
                          st.booleans()), max_size=60))
def test_every_verdict_follows_the_rules(steps):
    """Any sequence of attempts, right or wrong, from a few addresses at any pace."""
    checked: list[str] = []
    client, model, now = MemClient(), _Model(SMALL), 1000.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts, "verify_password",
                      lambda client, name, password: checked.append(name) or password == RIGHT)
        for pause, user, addr, right in steps:
            now += pause
            before = len(checked)
            password = RIGHT if right else "guess"
            verdict = ratelimit.check_password(client, user, password, addr, SMALL, now=now)
            assert verdict == model.check(user, password, addr, now)
            assert len(checked) == before + (not verdict.limited)  # refused: never hashed


def test_the_documented_auth_table_is_the_default():
    readme = (Path(__file__).parents[2] / "deploy" / "README.md").read_text()
    example = tomllib.loads(re.search(r"```toml\n(.*?)```", readme, re.S).group(1))
    assert Limits.from_table(example["auth"]) == Limits()


def _code_checker(codes_checked: list[str]):
    def verify(client, user: str, code: str) -> bool:
        codes_checked.append(code)
        return code == "123456"
    return verify


def test_wrong_codes_are_counted_per_account_and_a_right_one_gives_back_only_its_own():
    """Issue 13: new pending logins must not bring new tries; a right code resets nothing."""
    client, checked = MemClient(), []
    verify, rule = _code_checker(checked), Limits().code
    for i in range(rule.free - 1):
        assert ratelimit.check_code(client, "ann", f"{i:06}", Limits(), verify,
                                    now=NOW) == ratelimit.Verdict(right=False)
    assert ratelimit.check_code(client, "ann", "123456", Limits(), verify, now=NOW).right
    assert not ratelimit.check_code(client, "ann", "000001", Limits(), verify, now=NOW).limited
    limited = ratelimit.check_code(client, "ann", "123456", Limits(), verify, now=NOW + 1)
    assert limited.limited and limited.retry_after == rule.delay - 1
    assert len(checked) == rule.free + 1  # the limited one was never checked
    # The wait grows with each miss after it, and other accounts are not touched.
    assert not ratelimit.check_code(client, "ann", "000002", Limits(), verify,
                                    now=NOW + rule.delay).right
    again = ratelimit.check_code(client, "ann", "123456", Limits(), verify, now=NOW + rule.delay)
    assert again.retry_after == 2 * rule.delay
    assert ratelimit.check_code(client, "bob", "123456", Limits(), verify, now=NOW).right
    assert ratelimit.check_code(client, "ann", "123456", Limits(), verify,
                                now=NOW + 3 * rule.delay).right
    assert not ratelimit.check_code(client, "no such name!", "123456", Limits(), verify).right


def test_ipv6_failures_are_also_summed_per_slash_48(hashes):
    """Issue 13: a /48 holds 65,536 /64s, each its own address counter; their sum is limited."""
    client = MemClient()
    limits = Limits(network=Rule(free=6, window=100.0, delay=2.0, max_delay=16.0))
    for i in range(limits.network.free):  # one guess from each of six /64s of one /48
        verdict = ratelimit.check_password(client, f"u{i}", "guess", f"2001:db8:7:{i:x}::1",
                                           limits, now=NOW)
        assert verdict == ratelimit.Verdict(right=False)
    checked = len(hashes)
    for addr in ("2001:db8:7:ff::1", "2001:db8:7:ffff::2"):  # fresh /64s, same /48
        refused = ratelimit.check_password(client, "ann", RIGHT, addr, limits, now=NOW + 1)
        assert refused.retry_after == limits.network.delay - 1
    assert len(hashes) == checked  # refused without hashing
    # Another /48, and IPv4, are not touched; a right password gives its slot back.
    assert ratelimit.check_password(client, "ann", RIGHT, "2001:db8:8::1", limits, now=NOW).right
    assert ratelimit.check_password(client, "ann", RIGHT, "192.0.2.9", limits, now=NOW).right
    assert ratelimit.network_key("192.0.2.9") is None
    assert ratelimit.network_key("::ffff:192.0.2.9") is None
    assert ratelimit.network_key("2001:db8:8::1") == ("login-net/2001:db8:8::/48", "failures")
    assert ratelimit.check_password(client, "ann", RIGHT, "2001:db8:7:ff::1", limits,
                                    now=NOW + limits.network.delay).right


def test_counters_expire_once_their_window_and_wait_are_over(hashes, monkeypatch) -> None:
    """The store forgets the counters of an address that stopped trying (no sweeper):
    each lives until its window ends and its wait is over, plus the clocks' slack."""
    clock = [NOW]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the in-memory store's clock
    client = MemClient()
    for _ in range(6):  # past the free attempts: the address now waits 4 s
        ratelimit.check_password(client, "ann", "guess", "192.0.2.7", SMALL, now=clock[0])
    assert ("login-addr/192.0.2.7", "failures") in counters(client)
    clock[0] += SMALL.address.window - 1  # within the window: still counted
    assert ("login-addr/192.0.2.7", "failures") in counters(client)
    clock[0] += 1 + ratelimit._EXPIRY_SLACK + 1
    assert counters(client) == {}
    assert client.store.apply_entry([clock[0], {"op": "expire_cells", "cid": 2, "seq": 1}]
                                    )[0]["expired"] > 0
    assert client.store.stats()["cells"] == 0

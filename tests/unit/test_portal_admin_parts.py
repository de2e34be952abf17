"""The admin console's parts on the in-memory store: the raw data's pages across shards and
the times it recognises, the users' list over every shard, accounts disabled and reset, a
user's own quota, and where the charts find each process's metrics (portal/admin*.py)."""

from __future__ import annotations

import msgpack
import pytest

from deploy import processes as launcher_processes
from deploy.processes import process_specs
from portal import admin_metrics
from portal.admin import Place, page_at, place_before, show_value, times_in
from portal.admin_metrics import metrics_targets, processes, totals
from portal.admin_users import list_users
from raftkv.cluster import load_cluster
from raftkv.metrics import METRICS_ADDR_ENV
from shards.model import accounts, apppasswords, quota, ratelimit

from .._memstore import MemClient

SHARDS = 8  # MemClient's
LIMITS = ratelimit.Limits()


def _everything(client: MemClient, size: int) -> list[tuple[int, str]]:
    """Every row of the store by walking ``page_at`` forward from the start."""
    seen: list[tuple[int, str]] = []
    where: Place | None = Place(0)
    for _ in range(100):
        if where is None:
            return seen
        rows, where = page_at(client, SHARDS, where, size)
        seen += [(shard, row) for shard, row, _ in rows]
    raise AssertionError("no end")


def test_the_raw_data_pages_run_across_shard_boundaries_both_ways():
    client = MemClient()
    rows = [f"row{i:03}" for i in range(60)]
    for row in rows:
        client.put(row, "c", b"v")
    expected = sorted((client.shard_of(r), r) for r in rows)
    assert _everything(client, 7) == expected  # every row once, shard by shard
    # Some page ends in one shard and the next page starts in another.
    first, following = page_at(client, SHARDS, Place(0), 7)
    assert following is not None and len(first) == 7
    crossing = [i for i in range(1, len(expected)) if expected[i][0] != expected[i - 1][0]]
    assert crossing  # 60 rows over 8 shards: the data has boundaries to cross
    # "Previous" from any page start gives the page that ends right before it.
    for start in range(1, len(expected)):
        before = place_before(client, expected[start], 7)
        assert before is not None
        page, _ = page_at(client, SHARDS, before, 7)
        want = expected[max(0, start - 7):start] if start >= 7 else expected[:7]
        assert [(s, r) for s, r, _ in page] == want, start
    assert place_before(client, expected[0], 7) is None  # nothing before the first row


def test_times_in_values_are_recognised_and_other_numbers_are_not():
    created = 1_764_950_400.5  # 2025-12-05
    record = {"name": "ann", "created": created, "size": 1234, "s": {"expires": 1_765_000_000}}
    assert times_in(record) == [("created", created), ("s.expires", 1_765_000_000.0)]
    assert times_in(1_764_950_400) == [("", 1_764_950_400.0)]
    assert times_in(42) == [] and times_in(True) == [] and times_in("1764950400") == []
    shown = show_value(msgpack.packb(record))
    assert shown["kind"] == "msgpack" and shown["times"][0] == ("created", created)
    assert show_value(b"1764950400")["times"] == [("", 1_764_950_400.0)]  # text holding one
    assert show_value(b"hello")["times"] == []


def _users(client: MemClient, names: list[str]) -> None:
    for name in names:
        record = {"v": 1, "name": name, "hash": "x", "admin": False, "created": 0.0}
        client.put(accounts.account_row(name), accounts.ACCOUNT_COL, msgpack.packb(record))
    client.put("user", "x", b"not an account")  # rows around the accounts' range
    client.put("user.", "x", b"nor this")
    client.put("users/x", "x", b"nor this")


def test_the_users_list_merges_every_shard_in_name_order_a_page_at_a_time():
    client = MemClient()
    names = sorted(f"{first}{i}" for first in "abcz" for i in range(12))
    _users(client, names)
    assert len({client.shard_of(accounts.account_row(n)) for n in names}) == SHARDS
    seen, after = [], ""
    for _ in range(20):
        page, following = list_users(client, SHARDS, after=after, limit=5)
        seen += [name for name, _ in page]
        if following is None:
            break
        after = following
    assert seen == names
    page, following = list_users(client, SHARDS, "b", limit=5)
    assert [n for n, _ in page] == [n for n in names if n.startswith("b")][:5]
    rest, last = list_users(client, SHARDS, "b", after=following, limit=50)
    assert [n for n, _ in page + rest] == [n for n in names if n.startswith("b")] and last is None
    assert [n for n, _ in list_users(client, SHARDS, "b1")[0]] == ["b1", "b10", "b11"]
    assert list_users(client, SHARDS, "q")[0] == []


def test_a_disabled_account_signs_in_nowhere_until_enabled_and_a_reset_shows_a_new_password():
    client = MemClient()
    accounts.create_user(client, "ann", "old password 1")
    key = b"k" * 32
    app = apppasswords.create(client, "ann", "phone", key)
    assert accounts.set_disabled(client, "ann", True)
    assert not accounts.verify_password(client, "ann", "old password 1")
    assert not apppasswords.check_credential(client, "ann", app, "127.0.0.1", LIMITS, key).right
    assert accounts.set_disabled(client, "ann", False)
    assert accounts.verify_password(client, "ann", "old password 1")
    assert apppasswords.check_credential(client, "ann", app, "127.0.0.1", LIMITS, key).right
    new = accounts.reset_password(client, "ann")
    assert new and len(new) >= 16
    assert accounts.verify_password(client, "ann", new)
    assert not accounts.verify_password(client, "ann", "old password 1")
    assert not accounts.set_disabled(client, "nobody", True)
    assert accounts.reset_password(client, "nobody") is None


def test_a_users_own_quota_overrides_the_frontends_until_cleared():
    client = MemClient()
    assert quota.limit(client, "ann", 1000) == 1000 and quota.own_limit(client, "ann") is None
    quota.set_limit(client, "ann", 5 << 20)
    assert quota.limit(client, "ann", 1000) == 5 << 20 and quota.own_limit(client, "ann") == 5 << 20
    quota.set_limit(client, "ann", 0)
    assert quota.limit(client, "ann", 1000) == 0
    quota.set_limit(client, "ann", None)
    assert quota.limit(client, "ann", 1000) == 1000
    with pytest.raises(ValueError):
        quota.set_limit(client, "ann", -1)


CLUSTER = """
[cluster]
name = "c"
[[group]]
id = 1
replica = [
  {{ name = "g1a", raft = "127.0.0.1:7001", client = "127.0.0.1:7101" }},
  {{ name = "g1b", raft = "127.0.0.1:7002", client = "127.0.0.1:7102" }},
]
[[frontend]]
name = "web1"
listen = "127.0.0.1:8081"
[[frontend]]
name = "web2"
listen = "127.0.0.1:8082"
[smtpd]
inbound = "127.0.0.1:2525"
[imapd]
[balancer]
listen = "127.0.0.1:8000"
{metrics}
"""


def _cluster(tmp_path, metrics: str = ""):
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER.format(metrics=metrics))
    return load_cluster(path, secret=b"s" * 32), path


def test_the_charts_find_every_process_where_the_launcher_put_its_metrics(tmp_path):
    cluster, path = _cluster(tmp_path, "[metrics]\nbase_port = 9300")
    specs = process_specs(cluster, path, tmp_path / "data", None)
    assert processes(cluster) == [(s.name, s.kind, s.addr) for s in specs]  # the same order
    for ours, theirs in ((admin_metrics.SMTPD_DEFAULTS, launcher_processes.SMTPD_DEFAULTS),
                         (admin_metrics.IMAPD_DEFAULTS, launcher_processes.IMAPD_DEFAULTS),
                         (admin_metrics.BALANCER_DEFAULTS, launcher_processes.BALANCER_DEFAULTS)):
        assert ours.items() <= theirs.items()
    found = metrics_targets(cluster, "web2", environ={})
    assert [(t.name, t.addr) for t in found] == [
        ("g1a", "127.0.0.1:9300"), ("g1b", "127.0.0.1:9301"), ("web1", "127.0.0.1:9302"),
        ("web2", "127.0.0.1:9303"), ("smtpd", "127.0.0.1:9304"), ("imapd", "127.0.0.1:9305"),
        ("balancer", "127.0.0.1:9306")]
    plain, _ = _cluster(tmp_path)
    assert metrics_targets(plain, "web2", environ={}) is None  # metrics off
    # `raftcloud up --metrics` without a table: our own address and place give the base.
    on = metrics_targets(plain, "web2", environ={METRICS_ADDR_ENV: "127.0.0.1:9103"})
    assert on is not None and on[0].addr == "127.0.0.1:9100" and on[3].addr == "127.0.0.1:9103"


def test_a_metrics_page_gives_requests_and_latency_totals():
    page = """# HELP portal_http_requests_total HTTP requests answered
# TYPE portal_http_requests_total counter
portal_http_requests_total{route="drive",status="200"} 7.0
portal_http_requests_total{route="mail",status="200"} 3.0
# HELP portal_http_request_seconds latency
# TYPE portal_http_request_seconds histogram
portal_http_request_seconds_bucket{route="drive",le="+Inf"} 7.0
portal_http_request_seconds_count{route="drive"} 7.0
portal_http_request_seconds_sum{route="drive"} 0.5
portal_http_request_seconds_count{route="mail"} 3.0
portal_http_request_seconds_sum{route="mail"} 0.25
"""
    assert totals(page, "frontend") == {"requests": 10.0, "seconds": 0.75, "timed": 10.0}
    assert totals(page, "balancer") == {"requests": None, "seconds": None, "timed": None}

"""Configurations kept in a real raftkv group: numbered, queryable, and safe under racing changes."""

from __future__ import annotations

import threading

import pytest

from raftkv import Client
from shards.config import ConfigStore

pytestmark = pytest.mark.cluster


def test_racing_changes_each_get_their_own_number(fresh_cluster) -> None:
    group = fresh_cluster.cluster.groups[0]
    with Client(group.client_addrs, fresh_cluster.cluster.secret) as client:
        store = ConfigStore(client, shards=16)
        assert store.query().num == 0
        errors: list[BaseException] = []

        def joiner(gid: int) -> None:
            try:
                store.join({gid: [f"g{gid}:1"]})
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=joiner, args=(gid,)) for gid in range(1, 7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        latest = store.query()
        assert latest.num == 6 and set(latest.groups) == set(range(1, 7))
        for num in range(1, 7):   # every old configuration is still there, each one step on
            config = store.query(num)
            assert config.num == num and len(config.groups) == num
        left = store.leave([1, 2])
        assert left.num == 7 and set(left.owners) == {3, 4, 5, 6}

"""Cells that expire: decided by the entries' time alike on every replica, hidden by
every read, absent to conditions, removed through the log, kept by snapshots and moves."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest

from raftkv.errors import ConfigError
from raftkv.keys import shard_of
from raftkv.server import StoreSettings
from raftkv.store import EXPIRE_CELLS, MAX_TTL, Store
from tests._memstore import MemClient

SHARDS = 8
T0 = 1_000_000.0


class Group:
    """Entries as a leader's server makes them: its time, then one command."""

    def __init__(self, *stores: Store) -> None:
        self.stores = stores or (Store(SHARDS),)
        self.seq = 0

    def entry(self, now: float, **command: Any) -> dict[str, Any]:
        if command.get("op") not in ("get", "get_row", "scan", "noop"):
            self.seq += 1
            command = {**command, "cid": 7, "seq": self.seq, "ack": self.seq - 1}
        results = [store.apply_entry([now, command])[0] for store in self.stores]
        assert all(r == results[0] for r in results), results
        return results[0]

    @property
    def store(self) -> Store:
        return self.stores[0]


def test_a_cell_is_read_until_its_ttl_passes_on_the_entries_clock_then_never() -> None:
    group = Group()
    group.entry(T0, op="put", row="r", col="c", value=b"v", ttl=5.0)
    assert group.entry(T0 + 4.9, op="get", row="r", col="c")["found"]
    assert not group.entry(T0 + 5.0, op="get", row="r", col="c")["found"]
    # An entry stamped earlier (a new leader whose clock is behind) does not revive it.
    assert not group.entry(T0 + 1.0, op="get", row="r", col="c")["found"]
    assert group.store.clock == T0 + 5.0


def test_every_read_hides_an_expired_cell_stale_reads_too() -> None:
    group = Group()
    group.entry(T0, op="put", row="r", col="gone", value=b"1", ttl=1.0)
    group.entry(T0, op="put", row="r", col="kept", value=b"2")
    group.entry(T0, op="put", row="only", col="c", value=b"3", ttl=1.0)
    group.entry(T0 + 2, op="noop")
    store = group.store
    shard = shard_of("r", SHARDS)
    for read in (group.entry, lambda _now, **c: store.read(c)):
        assert not read(T0 + 2, op="get", row="r", col="gone")["found"]
        assert [c[0] for c in read(T0 + 2, op="get_row", row="r")["cells"]] == ["kept"]
        rows = {row: cells for row, cells in read(T0 + 2, op="scan", shard=shard)["rows"]}
        assert [c[0] for c in rows["r"]] == ["kept"]
        assert "only" not in rows
        only = read(T0 + 2, op="scan", shard=shard_of("only", SHARDS))["rows"]
        assert "only" not in {row for row, _ in only}
    # Readers get the cell in its usual shape, without its expiry.
    group.entry(T0 + 2, op="put", row="r", col="new", value=b"4", ttl=60)
    assert group.entry(T0 + 3, op="get_row", row="r", prefix="new")["cells"][0][1:] == \
        [store.read({"op": "get", "row": "r", "col": "new"})["version"], b"4", False]


def test_conditions_see_an_expired_cell_as_absent() -> None:
    group = Group()
    version = group.entry(T0, op="put", row="r", col="c", value=b"old", ttl=1.0)["version"]
    group.entry(T0 + 1, op="put", row="r", col="d", value=b"old", ttl=1.0)
    assert group.entry(T0 + 2, op="cput", row="r", col="c", value=b"a", old=b"old")["error"] \
        == "ConditionFailed"
    assert group.entry(T0 + 2, op="cput", row="r", col="c", value=b"new", if_version=version
                       )["error"] == "ConditionFailed"
    assert "version" in group.entry(T0 + 2, op="cput", row="r", col="c", value=b"new", old=None)
    assert group.entry(T0 + 3, op="mutate_row", row="r", conditions=[["absent", "d"]],
                       mutations=[["put", "d", b"x"]])["versions"]
    group.entry(T0 + 3, op="put", row="r", col="e", value=b"v", ttl=1.0)
    assert group.entry(T0 + 5, op="delete", row="r", col="e") == {"deleted": False}
    assert group.store.stats()["cells"] == 2


def test_a_write_without_ttl_makes_the_cell_permanent_and_ttl_applies_to_every_put() -> None:
    group = Group()
    group.entry(T0, op="put", row="r", col="c", value=b"v", ttl=1.0)
    group.entry(T0, op="put", row="r", col="c", value=b"v")
    group.entry(T0, op="mutate_row", row="r", conditions=[], ttl=2.0,
                mutations=[["put", "a", b"1"], ["put", "b", b"2"]])
    assert group.entry(T0 + 1.5, op="get", row="r", col="a")["found"]
    assert [c[0] for c in group.entry(T0 + 100, op="get_row", row="r")["cells"]] == ["c"]
    assert group.entry(T0 + 100, op="expire_cells") == {"expired": 2, "more": False}


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, "10", True, [1]])
def test_a_ttl_is_a_positive_finite_number(ttl: object) -> None:
    group = Group()
    assert group.entry(T0, op="put", row="r", col="c", value=b"v", ttl=ttl)["error"] == \
        "ProtocolError"
    assert group.store.stats()["cells"] == 0


def test_a_ttl_is_capped_at_ten_years() -> None:
    group = Group()
    group.entry(T0, op="put", row="r", col="c", value=b"v", ttl=1e12)
    assert not group.entry(T0 + MAX_TTL, op="get", row="r", col="c")["found"]


def test_expired_cells_are_removed_through_the_log_a_bounded_number_per_entry() -> None:
    group = Group()
    for i in range(EXPIRE_CELLS + 5):
        group.entry(T0, op="put", row=f"r{i % 7}", col=f"c{i}", value=b"v", ttl=1.0 + i % 3)
    keep = group.entry(T0, op="put", row="r0", col="keep", value=b"v", ttl=100)["version"]
    assert group.entry(T0 + 0.5, op="expire_cells") == {"expired": 0, "more": False}
    assert group.entry(T0 + 10, op="expire_cells") == {"expired": EXPIRE_CELLS, "more": True}
    assert group.entry(T0 + 10, op="expire_cells") == {"expired": 5, "more": False}
    assert group.store.stats()["cells"] == 1
    versions_moved = group.entry(T0 + 10, op="put", row="r0", col="c0", value=b"v")["version"]
    assert versions_moved > keep + 100  # each removal moves the counter, as a delete does


def test_replicas_applying_the_same_entries_agree_whatever_their_history() -> None:
    """One replica restarts from a snapshot midway (its derived expiry heap is rebuilt,
    without the stale entries of overwritten cells): every answer and the final
    state still agree."""
    rng = random.Random(14)
    a, b = Store(SHARDS), Store(SHARDS)
    group = Group(a, b)
    now = T0
    for step in range(3000):
        now += rng.random() * 0.3 - 0.05  # a leader change may stamp a little earlier
        row, col = f"r{rng.randrange(20)}", f"c{rng.randrange(5)}"
        kind = rng.random()
        if kind < 0.5:
            ttl = rng.choice([None, 0.5, 1.0, 3.0])
            group.entry(now, op="put", row=row, col=col, value=b"%d" % step,
                        **({} if ttl is None else {"ttl": ttl}))
        elif kind < 0.6:
            group.entry(now, op="delete", row=row, col=col)
        elif kind < 0.7:
            group.entry(now, op="cput", row=row, col=col, value=b"x", old=None, ttl=2.0)
        elif kind < 0.8:
            group.entry(now, op="expire_cells", limit=3)
        else:
            group.entry(now, op="get_row", row=row)
        if step == 1500:
            copy = Store(SHARDS)
            copy.restore(b.snapshot())
            group.stores = (a, copy)
            b = copy
    assert a.snapshot() == b.snapshot()


def test_a_snapshot_keeps_each_cells_expiry() -> None:
    group = Group()
    group.entry(T0, op="put", row="r", col="short", value=b"v", ttl=1.0)
    group.entry(T0, op="put", row="r", col="long", value=b"v", ttl=100.0)
    group.entry(T0, op="put", row="r", col="never", value=b"v")
    copy = Store(SHARDS)
    copy.restore(group.store.snapshot())
    group.stores = (group.store, copy)
    assert [c[0] for c in group.entry(T0 + 2, op="get_row", row="r")["cells"]] == \
        ["long", "never"]
    assert group.entry(T0 + 101, op="expire_cells") == {"expired": 2, "more": False}


def _managed(shards: list[int]) -> Group:
    group = Group(Store(SHARDS, managed=True))
    group.entry(T0, op="begin_config", config=1, shards=shards, incoming=[], outgoing=[])
    return group


def _row_in(shard: int) -> str:
    return next(f"{{r{i}}}" for i in range(10_000) if shard_of(f"{{r{i}}}", SHARDS) == shard)


def test_a_shard_move_carries_expiry_and_leaves_expired_cells_behind() -> None:
    row = _row_in(3)
    source = _managed(list(range(SHARDS)))
    source.entry(T0, op="put", row=row, col="gone", value=b"1", ttl=1.0)
    source.entry(T0, op="put", row=row, col="later", value=b"2", ttl=50.0)
    source.entry(T0, op="put", row=row, col="never", value=b"3")
    source.entry(T0 + 2, op="begin_config", config=2, shards=[s for s in range(SHARDS) if s != 3],
                 incoming=[], outgoing=[[3, 9, ["127.0.0.1:1"]]])
    page = source.store.read({"op": "export_shard", "config": 2, "shard": 3, "after": None})
    cells = {cell[0]: cell for _row, cells in page["rows"] for cell in cells}
    assert set(cells) == {"later", "never"}
    assert cells["later"][4] == T0 + 50.0 and len(cells["never"]) == 4
    # The frozen copy is left to the drop: expire_cells does not change a shard being exported.
    assert source.entry(T0 + 100, op="expire_cells") == {"expired": 0, "more": False}

    dest = _managed([s for s in range(SHARDS) if s != 3])
    dest.entry(T0 + 2, op="begin_config", config=2, shards=list(range(SHARDS)),
               incoming=[[3, 1, ["127.0.0.1:1"]]], outgoing=[])
    assert "error" not in dest.entry(T0 + 2, op="import_shard", config=2, shard=3,
                                     rows=page["rows"], counter=page["counter"])
    # Arrived but not served yet: its expired cells wait, then go once it is adopted.
    assert dest.entry(T0 + 60, op="expire_cells") == {"expired": 0, "more": False}
    dest.entry(T0 + 60, op="adopt_shard", config=2, shard=3)
    assert not dest.entry(T0 + 60, op="get", row=row, col="later")["found"]
    assert dest.entry(T0 + 60, op="get", row=row, col="never")["found"]
    assert dest.entry(T0 + 60, op="expire_cells") == {"expired": 1, "more": False}


def test_a_shard_served_again_expires_alike_on_a_replica_restored_meanwhile() -> None:
    # A configuration may give a shard up without moving it out (its rows stay);
    # expiry passes while it is not served, a replica is restored from a snapshot,
    # then the shard is served here again: both must remove the same cells.
    row = _row_in(3)
    group = _managed(list(range(SHARDS)))
    group.entry(T0, op="put", row=row, col="c", value=b"v", ttl=1.0)
    group.entry(T0 + 2, op="begin_config", config=2, shards=[s for s in range(SHARDS) if s != 3],
                incoming=[], outgoing=[])
    assert group.entry(T0 + 3, op="expire_cells") == {"expired": 0, "more": False}
    restored = Store(SHARDS, managed=True)
    restored.restore(group.store.snapshot())
    group.stores = (group.store, restored)
    group.entry(T0 + 4, op="begin_config", config=3, shards=list(range(SHARDS)),
                incoming=[[3, 9, ["127.0.0.1:1"]]], outgoing=[])
    group.entry(T0 + 4, op="adopt_shard", config=3, shard=3)
    assert group.entry(T0 + 5, op="expire_cells") == {"expired": 1, "more": False}


def test_a_now_written_by_a_client_never_moves_the_clock() -> None:
    group = Group()
    group.entry(T0, op="put", row="session", col="c", value=b"v", ttl=60.0)
    # A timed entry: the leader's time is the only time; the command's "now" is ignored.
    forged = {"op": "expire_intents", "now": 1e15, "cid": 8, "seq": 1, "ack": 0}
    assert "error" not in group.store.apply_entry([T0 + 1, forged])[0]
    assert group.store.clock == T0 + 1
    assert group.entry(T0 + 2, op="get", row="session", col="c")["found"]
    # An entry of the older format has no time: the "now" its leader wrote is the time.
    old = {"op": "expire_intents", "now": T0 + 5, "cid": 8, "seq": 2, "ack": 1}
    assert "error" not in group.store.apply_entry([old])[0]
    assert group.store.clock == T0 + 5


def test_the_in_memory_store_expires_cells_on_the_wall_clock(monkeypatch) -> None:
    now = [T0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    client = MemClient()
    client.put("r", "c", b"v", ttl=10)
    client.mutate_row("r", [], [("put", "d", b"w")], ttl=20)
    client.cput("r", "e", b"x", old=None, ttl=30)
    now[0] += 15
    assert client.get("r", "c") is None and set(client.get_row("r")) == {"d", "e"}
    client.cput("r", "c", b"again", old=None)
    now[0] += 1000
    assert set(client.get_row("r")) == {"c"}
    with pytest.raises(ValueError):
        client.put("r", "c", b"v", ttl=0)


@pytest.mark.parametrize("interval, ok", [(0.5, True), (10, True), (10.5, False), (0.01, False),
                                          ("5", False)])
def test_the_time_entry_interval_is_at_most_ten_seconds(interval: object, ok: bool) -> None:
    if ok:
        assert StoreSettings.from_table({"expiry_interval": interval}).expiry_interval == interval
    else:
        with pytest.raises(ConfigError):
            StoreSettings.from_table({"expiry_interval": interval})

"""shards.readonly: a request reads stale, marked, and writes nothing while a group lost its
majority; outside a request nothing changes (docs/store-promises.md, "Read-only while a
group has lost its majority")."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import pytest

from raftkv.errors import NoLeader, OutcomeUnknown, ReadOnly, UnavailableError
from raftkv.interface import Cell, Consistency, StaleCell, Unchanged
from shards.readonly import GroupHealth, ReadOnlyFallback, current_only, observing, read_state

from .._memstore import MemClient


class TwoGroups(MemClient):
    """The in-memory store as two groups (even and odd shards); a group in ``down`` has no
    majority: linearizable reads and writes fail, stale reads are answered."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[int] = set()
        self.tries: list[str] = []   # linearizable reads tried, by row

    def group_of_shard(self, shard: int) -> int:
        return 1 + shard % 2

    def _check(self, row: str, consistency: Consistency = "linearizable") -> None:
        if consistency == "linearizable":
            self.tries.append(row)
            if self.group_of_shard(self.shard_of(row)) in self.down:
                raise NoLeader("no majority")

    def get(self, row: str, col: str, *, consistency: Consistency = "linearizable") -> Cell | None:
        self._check(row, consistency)
        return super().get(row, col)

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        self._check(row, consistency)
        return super().get_row(row, prefix, after=after, limit=limit, reverse=reverse)

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        for row in dict.fromkeys(row for row, _ in cells):
            self._check(row, consistency)
        return super().get_cells(cells, known=known, consistency=consistency)

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> Any:
        self._check(row, consistency)
        return super().get_stream(row, col, offset=offset)

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        if self.group_of_shard(self.shard_of(row)) in self.down:
            raise OutcomeUnknown("not confirmed")
        return super().put(row, col, value, ttl=ttl)

    def status(self) -> list[dict[str, Any]]:
        return []

    def config_group(self) -> None:
        return None


def rows_of_each_group(store: TwoGroups) -> tuple[str, str]:
    found: dict[int, str] = {}
    for i in range(1000):
        row = f"{{u{i}}}/row"
        found.setdefault(store.group_of_shard(store.shard_of(row)), row)
        if len(found) == 2:
            return found[1], found[2]
    raise AssertionError("no row for each group")


@pytest.fixture
def parts() -> Any:
    store = TwoGroups()
    probes: list[int] = []

    def probe(gid: int) -> None:
        probes.append(gid)
        if gid in store.down:
            raise NoLeader("still none")
    # The store plays both the patient and the quick client: the tries are what count.
    fallback = ReadOnlyFallback(store, store, probe, store.group_of_shard, retry_pause=0.01,
                                probe_interval=0.02)
    yield store, fallback, probes
    fallback.health.stop()


def test_outside_a_request_a_lost_group_fails_as_before(parts: Any) -> None:
    store, fallback, _ = parts
    lost, _ = rows_of_each_group(store)
    store.put(lost, "c", b"v")
    store.down.add(1)
    with pytest.raises(NoLeader):
        fallback.get(lost, "c")
    assert not fallback.health.lost(1)  # background work never meets stale data


def test_a_request_reads_a_lost_group_stale_and_says_so(parts: Any) -> None:
    store, fallback, _ = parts
    lost, healthy = rows_of_each_group(store)
    store.put(lost, "c", b"mine")
    store.put(healthy, "c", b"other")
    store.down.add(1)
    with observing() as state:
        assert fallback.get(healthy, "c").value == b"other"
        assert not state.read_only
        assert fallback.get(lost, "c") == Cell(b"mine", 1)
        assert state.read_only and state.stale_groups == {1}
        assert store.tries.count(lost) == 2  # one try and one quick retry
        assert fallback.get_row(lost)["c"].value == b"mine"
        assert store.tries.count(lost) == 2  # marked: stale at once, no more waiting
    assert fallback.health.lost(1) and read_state() is None


def test_get_cells_reads_a_lost_group_stale_and_the_others_current(parts: Any) -> None:
    store, fallback, _ = parts
    lost, healthy = rows_of_each_group(store)
    mine = store.put(lost, "c", b"mine")
    other = store.put(healthy, "c", b"other")
    wanted = [(healthy, "c"), (lost, "c"), (lost, "gone")]
    with observing() as state:
        assert fallback.get_cells(wanted, known=[other, 0, 0]) == [
            Unchanged(other), Cell(b"mine", mine), None]
        assert not state.read_only
    store.down.add(1)
    with observing() as state:
        answers = fallback.get_cells(wanted, known=[0, mine, 0])
        assert answers == [Cell(b"other", other), Unchanged(mine, stale=True), None]
        assert not isinstance(answers[0], StaleCell)
        assert state.stale_groups == {1}
        tried = store.tries.count(lost)
        assert fallback.get_cells(wanted[1:2]) == [StaleCell(b"mine", mine)]
        assert store.tries.count(lost) == tried  # marked: stale at once
    with pytest.raises(NoLeader):
        fallback.get_cells(wanted)  # outside a request, as before


def test_a_transient_failure_is_retried_once_and_marks_nothing(parts: Any) -> None:
    store, fallback, _ = parts
    row, _ = rows_of_each_group(store)
    store.put(row, "c", b"v")
    calls = {"n": 0}

    def first_fails(s: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise NoLeader("electing")
        return s.get(row, "c")
    with observing() as state:
        assert fallback._read(1, first_fails, lambda s: None) == Cell(b"v", 1)
        assert not state.read_only
    assert not fallback.health.lost(1)


def test_writes_to_a_lost_group_are_refused_at_once(parts: Any) -> None:
    store, fallback, _ = parts
    lost, healthy = rows_of_each_group(store)
    store.down.add(1)
    with observing():
        fallback.get(lost, "c")
        ops = len(store.ops)
        with pytest.raises(ReadOnly, match="read-only"):
            fallback.put(lost, "c", b"new")
        with pytest.raises(ReadOnly):
            fallback.mutate_row(lost, [], [("delete", "c")])
        assert len(store.ops) == ops  # nothing was sent
        assert fallback.put(healthy, "c", b"fine") == 1
    assert fallback.lost(lost) and not fallback.lost(healthy)


def test_a_failed_write_marks_its_group_for_the_next_request(parts: Any) -> None:
    store, fallback, _ = parts
    lost, _ = rows_of_each_group(store)
    store.down.add(1)
    with observing():
        with pytest.raises(OutcomeUnknown):
            fallback.put(lost, "c", b"new")
    with observing(), pytest.raises(ReadOnly):
        fallback.put(lost, "c", b"new")


def test_current_only_reads_never_fall_back(parts: Any) -> None:
    store, fallback, _ = parts
    lost, _ = rows_of_each_group(store)
    store.put(lost, "c", b"secret")
    store.down.add(1)
    with observing() as state:
        with current_only(), pytest.raises(ReadOnly):
            fallback.get(lost, "c")
        assert not state.read_only and fallback.health.lost(1)
        with current_only(), pytest.raises(ReadOnly):
            fallback.get(lost, "c")  # marked: at once
        assert fallback.get(lost, "c") == Cell(b"secret", 1)  # the block ended


def test_downloads_read_the_cell_stale_and_stream_it(parts: Any) -> None:
    store, fallback, _ = parts
    lost, _ = rows_of_each_group(store)
    store.put(lost, "data", b"x" * 10_000)
    store.down.add(1)
    with observing() as state:
        found = fallback.get_stream(lost, "data")
        assert found is not None and b"".join(found[1]) == b"x" * 10_000
        out = io.BytesIO()
        assert fallback.get_into(lost, "data", out) == 1 and out.getvalue() == b"x" * 10_000
        assert state.read_only


def test_the_probe_clears_the_mark_once_the_group_answers(parts: Any) -> None:
    store, fallback, probes = parts
    lost, _ = rows_of_each_group(store)
    store.put(lost, "c", b"v")
    store.down.add(1)
    with observing():
        fallback.get(lost, "c")
    time.sleep(0.1)
    assert fallback.health.lost(1) and probes  # probed, still down
    store.down.clear()
    deadline = time.monotonic() + 2
    while fallback.health.lost(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fallback.health.lost(1)
    with observing() as state:
        assert fallback.get(lost, "c") == Cell(b"v", 1)
        assert not state.read_only


def test_the_probe_thread_sleeps_while_nothing_is_marked() -> None:
    health = GroupHealth(lambda gid: None)
    assert health.step() == float("inf")

    def failing(gid: int) -> None:
        raise UnavailableError("down")
    health = GroupHealth(failing)
    health._marked[3] = 0.0
    assert health.step() is None and health.lost(3)


def test_get_cells_tries_a_lost_group_once_whatever_else_it_reads(parts: Any) -> None:
    """A page's cells are on two groups (its session's row, the user's rows): the lost
    group's pair of tries is all the waiting there is, not one pair for the call and
    another for the group (a page must answer within 2 s)."""
    store, fallback, _ = parts
    lost, healthy = rows_of_each_group(store)
    store.put(lost, "c", b"mine")
    store.put(healthy, "c", b"other")
    store.down.add(1)
    with observing() as state:
        answers = fallback.get_cells([(healthy, "c"), (lost, "c")])
        assert [a.value for a in answers] == [b"other", b"mine"]  # type: ignore[union-attr]
        assert store.tries.count(lost) == 2 and state.stale_groups == {1}
        assert store.tries.count(healthy) == 1, "the healthy group read once, current"

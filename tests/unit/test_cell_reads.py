"""get_cells and get_row's pages: what every store answers (docs/store-promises.md,
"The interface"), on the in-memory store (the real state machine) and on the
state machine's own answers."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raftkv
from raftkv import diskkeys, protocol
from raftkv.client import INLINE_LIMIT
from raftkv.errors import ProtocolError, RaftKVError, TooLarge, from_wire
from raftkv.interface import MAX_CELLS, Cell, StaleCell, Unchanged
from raftkv.keys import shard_of
from raftkv.operations import unknown_operation
from raftkv.pagereads import MAX_ROW_CELLS_RETURNED
from raftkv.store import Store

from .._memstore import MemClient


@pytest.fixture
def store() -> MemClient:
    return MemClient()


# -- get_cells -----------------------------------------------------------------------


def test_get_cells_answers_each_cell_in_order_across_rows(store: MemClient) -> None:
    a = store.put("{u1}/a", "x", b"ax")
    b = store.put("{u2}/b", "y", b"by")
    assert store.get_cells([("{u2}/b", "y"), ("{u1}/a", "missing"), ("{u1}/a", "x")]) == [
        Cell(b"by", b), None, Cell(b"ax", a)]


def test_a_known_version_comes_back_unchanged_without_its_value(store: MemClient) -> None:
    old = store.put("r", "kept", b"same")
    moved = store.put("r", "moved", b"one")
    newer = store.put("r", "moved", b"two")
    answers = store.get_cells([("r", "kept"), ("r", "moved"), ("r", "gone"), ("r", "kept")],
                              known=[old, moved, 7, 0])
    assert answers == [Unchanged(old), Cell(b"two", newer), None, Cell(b"same", old)]
    assert not hasattr(answers[0], "value")  # nothing to mistake for b""


def test_unchanged_is_not_a_cell() -> None:
    assert not isinstance(Unchanged(3), Cell | tuple)
    assert Unchanged(3) != Cell(b"", 3)


def test_stale_reads_are_marked(store: MemClient) -> None:
    version = store.put("r", "c", b"v")
    changed, unchanged = store.get_cells([("r", "c"), ("r", "c")], known=[0, version],
                                         consistency="stale")
    assert isinstance(changed, StaleCell) and changed == Cell(b"v", version)
    assert unchanged == Unchanged(version, stale=True)


def test_an_expired_cell_is_absent(store: MemClient) -> None:
    version = store.put("r", "c", b"v", ttl=0.05)
    time.sleep(0.1)
    store.put("r", "other", b"moves the clock")
    assert store.get_cells([("r", "c")], known=[version]) == [None]


def test_get_cells_is_one_round_trip_and_none_for_no_cells(store: MemClient) -> None:
    store.ops.clear()
    assert store.get_cells([]) == []
    store.get_cells([("{a}/1", "c"), ("{b}/2", "c"), ("{a}/1", "d")])
    assert store.ops == [("get_cells", "{a}/1,{b}/2")]


def test_get_cells_is_bounded_with_a_clear_error(store: MemClient) -> None:
    assert store.get_cells([("r", f"c{i}") for i in range(MAX_CELLS)]) == [None] * MAX_CELLS
    store.ops.clear()
    with pytest.raises(TooLarge, match=f"at most {MAX_CELLS} cells"):
        store.get_cells([("r", f"c{i}") for i in range(MAX_CELLS + 1)])
    assert store.ops == []  # refused before sending
    with pytest.raises(ValueError, match="one version"):
        store.get_cells([("r", "a"), ("r", "b")], known=[1])


def test_the_state_machine_refuses_more_than_the_bound_too() -> None:
    answer = Store().read({"op": "get_cells", "cells": [["r", "c", 0]] * (MAX_CELLS + 1)})
    assert answer["error"] == "TooLarge"


def test_the_largest_get_cells_answer_fits_one_frame() -> None:
    """MAX_CELLS inline values of the largest size, with the longest row and column a
    key may have (their names are not sent back), fit a frame."""
    answer = {"id": 2**62, "ok": {"cells": [[2**63 - 1, b"x" * INLINE_LIMIT, False]] * MAX_CELLS,
                                  "stale": True}}
    assert len(protocol.encode(answer)) <= protocol.MAX_FRAME
    request = {"id": 2**62, "op": "get_cells", "consistency": "stale",
               "cells": [["r" * 250, "c" * 250, 2**63 - 1]] * MAX_CELLS}
    assert len(msgpack.packb(request)) <= protocol.MAX_FRAME


def test_a_group_refuses_get_cells_naming_a_shard_it_does_not_serve() -> None:
    group = Store(shards=4, managed=True)
    group.owned = {0, 1, 2}
    rows = {shard_of(f"r{i}", group.shard_count): f"r{i}" for i in range(50)}
    served = [[rows[0], "c", 0], [rows[2], "c", 0]]
    assert group.read({"op": "get_cells", "cells": served}) == {"cells": [None, None]}
    refused = group.read({"op": "get_cells", "cells": [*served, [rows[3], "c", 0]]})
    assert refused["error"] == "WrongShard" and refused["shard"] == 3


# -- get_row: ranges, limits, order ----------------------------------------------------


def _row(store: MemClient, cols: list[str], row: str = "r") -> dict[str, int]:
    return {col: store.put(row, col, col.encode()) for col in cols}


def test_get_row_pages_after_a_column_with_a_limit(store: MemClient) -> None:
    _row(store, ["a", "b", "c", "d", "e"])
    assert list(store.get_row("r", limit=2)) == ["a", "b"]
    assert list(store.get_row("r", after="b", limit=2)) == ["c", "d"]
    assert list(store.get_row("r", after="d")) == ["e"]
    assert store.get_row("r", limit=0) == {}


def test_get_row_in_reverse_is_newest_first(store: MemClient) -> None:
    _row(store, ["m:001", "m:002", "m:003", "m:004", "x"])
    assert list(store.get_row("r", "m:", reverse=True)) == ["m:004", "m:003", "m:002", "m:001"]
    first = store.get_row("r", "m:", reverse=True, limit=2)
    assert list(first) == ["m:004", "m:003"]
    assert list(store.get_row("r", "m:", after=list(first)[-1], reverse=True, limit=2)) == [
        "m:002", "m:001"]
    assert store.get_row("r", "m:", after="m:001", reverse=True) == {}
    assert list(store.get_row("r", reverse=True, limit=1)) == ["x"]


def test_get_row_values_and_stale_marks(store: MemClient) -> None:
    versions = _row(store, ["a", "b"])
    assert store.get_row("r", reverse=True) == {"b": Cell(b"b", versions["b"]),
                                                "a": Cell(b"a", versions["a"])}
    assert all(isinstance(c, StaleCell) for c in store.get_row("r", consistency="stale").values())


def test_get_row_pages_past_the_replicas_page_size(store: MemClient) -> None:
    cols = [f"c{i:05}" for i in range(MAX_ROW_CELLS_RETURNED + 50)]
    for col in cols:
        store.put("r", col, b"")
    store.ops.clear()
    assert list(store.get_row("r", reverse=True)) == cols[::-1]
    assert [m for m, _ in store.ops] == ["get_row", "get_row"]
    assert list(store.get_row("r", after=cols[10], limit=MAX_ROW_CELLS_RETURNED + 5)) == cols[
        11:11 + MAX_ROW_CELLS_RETURNED + 5]


def test_a_row_page_stops_at_its_byte_budget_and_the_client_goes_on(store: MemClient) -> None:
    big = b"v" * INLINE_LIMIT
    for i in range(100):  # 1.6 MB: two pages
        store.put("r", f"c{i:03}", big)
    page = store.store.read({"op": "get_row", "row": "r"})
    assert page["more"] and 60 <= len(page["cells"]) < 100
    store.ops.clear()
    assert len(store.get_row("r")) == 100 and len(store.ops) == 2


def test_a_reverse_page_reads_only_what_it_returns(store: MemClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Served off the cursor: a page of 3 from a row of 3000 cells unpacks 4 cells at
    most (the 4th says ``more``), whichever end it starts from."""
    for i in range(3000):
        store.put("r", f"c{i:05}", b"")
    unpacked: list[bytes] = []
    unpack = diskkeys.unpack_cell

    def counting(data: bytes) -> Any:
        unpacked.append(data)
        return unpack(data)
    monkeypatch.setattr(diskkeys, "unpack_cell", counting)
    for after, reverse in (("", True), ("c01500", True), ("c01500", False)):
        unpacked.clear()
        answer = store.store.read({"op": "get_row", "row": "r", "after": after,
                                   "reverse": reverse, "limit": 3})
        assert len(answer["cells"]) == 3 and answer["more"] and len(unpacked) <= 4
    assert [c[0] for c in answer["cells"]] == ["c01501", "c01502", "c01503"]


def test_expired_cells_are_skipped_in_both_directions(store: MemClient) -> None:
    _row(store, ["a", "c"])
    store.put("r", "b", b"short", ttl=0.05)
    time.sleep(0.1)
    store.put("other", "x", b"moves the clock")
    assert list(store.get_row("r", reverse=True)) == ["c", "a"]
    assert list(store.get_row("r", limit=2)) == ["a", "c"]


# -- against a model -------------------------------------------------------------------

COLUMNS = st.lists(st.text(alphabet="ab\x00é", max_size=3), unique=True, max_size=12)


@given(cols=COLUMNS, prefix=st.text(alphabet="ab", max_size=1),
       after=st.text(alphabet="ab\x00é", max_size=3), limit=st.none() | st.integers(0, 5),
       reverse=st.booleans())
@settings(max_examples=150, deadline=None)
def test_get_row_matches_a_sorted_model(cols: list[str], prefix: str, after: str,
                                        limit: int | None, reverse: bool) -> None:
    store = MemClient()
    for col in cols:
        store.put("row\x00", col, col.encode())
        store.put("row", col, b"a neighbour row")
    wanted = sorted((c for c in cols if c.startswith(prefix)), reverse=reverse)
    if reverse:
        wanted = [c for c in wanted if not after or c < after]
    else:
        wanted = [c for c in wanted if c > after]
    if limit is not None:
        wanted = wanted[:limit]
    got = store.get_row("row\x00", prefix, after=after, limit=limit, reverse=reverse)
    assert list(got) == wanted
    assert all(cell.value == col.encode() for col, cell in got.items())


# -- a replica of a release before these reads ---------------------------------------


class OnOldReplica(raftkv.Client):
    """A client whose one replica answers as releases before get_cells and reverse pages
    did: the real state machine behind, ``get_cells`` unknown, ``reverse`` ignored.
    (tests/integration/test_rolling_upgrade.py runs the old code itself.)"""

    def __init__(self, store: Store, refusal: RaftKVError | None = None) -> None:
        super().__init__(["127.0.0.1:9"], b"unused")
        self.store = store
        self.sent: list[str] = []
        self.refusal = refusal  # what get_cells gets (default: an unknown operation)

    def _send_to(self, addr: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.sent.append(request["op"])
        if request["op"] not in ("get", "get_row"):
            raise self.refusal or ProtocolError(unknown_operation(request["op"]))
        result = self.store.read({k: v for k, v in request.items() if k != "reverse"})
        if "error" in result:
            raise from_wire(result)
        return {**result, **({"stale": True} if request.get("consistency") == "stale" else {})}


def test_a_replica_without_get_cells_is_read_cell_by_cell(store: MemClient) -> None:
    versions = [store.put("r", c, c.encode()) for c in ("a", "b")]
    with OnOldReplica(store.store) as old:
        assert old.get_cells([("r", "a"), ("r", "b"), ("r", "c")], known=[versions[0], 0, 0]) == [
            Unchanged(versions[0]), Cell(b"b", versions[1]), None]
        assert old.sent == ["get_cells", "get", "get", "get"]
        assert old.get_cells([("r", "a")], consistency="stale") == [StaleCell(b"a", versions[0])]


def test_a_get_cells_above_the_entry_cap_is_read_cell_by_cell(store: MemClient) -> None:
    """While a group's reads go through its log (an upgrade in progress), a request of
    long names may not fit an entry: the server refuses it, the client reads each cell."""
    version = store.put("r", "a", b"a")
    refusal = TooLarge("request of 40000 bytes is above the 32768-byte entry cap")
    with OnOldReplica(store.store, refusal) as old:
        assert old.get_cells([("r", "a"), ("r", "b")]) == [Cell(b"a", version), None]
    with OnOldReplica(store.store, ProtocolError("malformed 'get_cells' request")) as old:
        with pytest.raises(ProtocolError, match="malformed"):
            old.get_cells([("r", "a")])  # any other refusal is the caller's


def test_a_replica_that_ignores_reverse_is_paged_forward_and_turned(store: MemClient) -> None:
    _row(store, [f"c{i:04}" for i in range(MAX_ROW_CELLS_RETURNED + 10)])
    with OnOldReplica(store.store) as old:
        assert list(old.get_row("r", reverse=True, limit=3)) == ["c1009", "c1008", "c1007"]
        assert list(old.get_row("r", after="c0003", reverse=True)) == ["c0002", "c0001", "c0000"]


def test_a_scan_page_stops_at_its_byte_budget_and_the_client_goes_on(store: MemClient) -> None:
    """Rows of 16 KiB values: ten of them are 9.6 MB, over a frame; the replica stops
    its answer near 1 MiB and the client asks for the rest, so the caller still gets
    every row it asked for, and fewer only at the shard's end."""
    big = b"v" * INLINE_LIMIT
    rows = [f"{{t}}/r{i}" for i in range(10)]
    for row in rows:
        for col in range(60):
            store.put(row, f"c{col:02}", big)
    shard = store.shard_of(rows[0])
    page = store.store.read({"op": "scan", "shard": shard, "limit": 10, "pages": True})
    assert page["more"] and len(page["rows"]) < 10
    # A client of an older release does not ask again: it gets the ten rows it asked for.
    assert len(store.store.read({"op": "scan", "shard": shard, "limit": 10})["rows"]) == 10
    assert len(protocol.encode({"id": 1, "ok": page})) <= protocol.MAX_FRAME
    store.ops.clear()
    assert [row for row, _cells in store.scan(shard, limit=10)] == rows
    # Only a page's first row could be cut, and these rows fit a page each: all whole.
    assert all(len(cells) == 60 for _row, cells in store.scan(shard, limit=10))
    assert len(store.ops) > 1
    assert [row for row, _cells in store.scan(shard, rows[7], limit=10)] == rows[8:]

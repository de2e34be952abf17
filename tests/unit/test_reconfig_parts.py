"""The pure parts of a group's reconfigurer: what a move's import batches and states mean."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from shards.config import Config
from shards.reconfig import IMPORT_BYTES, Moves, _batches, adopted, moves_of, settled

ADDRS = ["127.0.0.1:1"]


def _cell(col: str, size: int) -> list:
    return [col, 1, b"v" * size, False]


@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=4),
                          st.lists(st.integers(1, 9000), min_size=1, max_size=12)),
                min_size=0, max_size=15, unique_by=lambda r: r[0]))
def test_import_batches_keep_every_cell_in_order_and_stay_small(rows) -> None:
    page = [[row, [_cell(f"c{i}", size) for i, size in enumerate(sizes)]] for row, sizes in rows]
    batches = _batches(page)
    flat = [(row, cell[0]) for batch in batches for row, cells in batch for cell in cells]
    assert flat == [(row, cell[0]) for row, cells in page for cell in cells]
    for batch in batches:
        packed = sum(len(msgpack.packb(cell)) + len(row) for row, cells in batch for cell in cells)
        assert packed <= IMPORT_BYTES or sum(len(cells) for _r, cells in batch) == 1
        assert len({row for row, _cells in batch}) == len(batch)  # a row once per batch


def test_settled_and_adopted_read_a_groups_state() -> None:
    moving = {"config_num": 4, "incoming": [[7, 1, ADDRS]], "frozen": [[2, 3, ADDRS]]}
    assert not settled(moving, 4) and settled(moving, 3)
    assert settled({"config_num": 4, "incoming": [], "frozen": []}, 4)
    assert settled({"config_num": 5, "incoming": [[1, 1, ADDRS]], "frozen": []}, 4)
    assert not adopted(moving, 4, 7) and adopted(moving, 4, 8)
    assert not adopted({"config_num": 3, "incoming": [], "frozen": []}, 4, 7)  # not begun
    assert adopted({"config_num": 5, "incoming": [[7, 1, ADDRS]], "frozen": []}, 4, 7)


def test_beginning_a_configuration_names_every_move_with_its_peers_addresses() -> None:
    previous = Config(3, (1, 1, 2, 2, 3, 3), {1: ("a:1",), 2: ("b:1",), 3: ("c:1",)})
    config = Config(4, (1, 2, 2, 1, 1, 3), {1: ("a:1",), 2: ("b:1",), 3: ("c:1",)})
    assert moves_of(1, previous, config) == Moves(
        shards=[0, 3, 4], incoming=[[3, 2, ["b:1"]], [4, 3, ["c:1"]]],
        outgoing=[[1, 2, ["b:1"]]])
    # The first configuration: shards come from nobody, so nothing is awaited.
    first = Config(1, (1, 2, 1, 2, 1, 2), {1: ("a:1",), 2: ("b:1",)})
    assert moves_of(2, Config.empty(6), first).incoming == []
    # A group that left gives everything away and keeps nothing.
    gone = Config(5, (1, 1, 2, 2, 2, 3), {1: ("a:1",), 2: ("b:1",), 3: ("c:1",)})
    assert moves_of(1, Config(6, gone.owners, gone.groups), Config(
        7, (2, 2, 2, 2, 2, 3), {2: ("b:1",), 3: ("c:1",)})).outgoing == [
        [0, 2, ["b:1"]], [1, 2, ["b:1"]]]


def test_the_blob_scan_of_an_import_takes_cells_that_expire() -> None:
    """An exported cell that expires carries its expiry as a fifth field (raftkv.ownership);
    a web session on a moving shard made every import of it fail before."""
    from shards.reconfig import Reconfigurer

    batch = [["{u}/session", [["sid", 3, b"x", False, 1.9e9], ["plain", 1, b"y", False]]]]
    assert list(Reconfigurer._chunks_of(None, None, batch)) == []  # type: ignore[arg-type]

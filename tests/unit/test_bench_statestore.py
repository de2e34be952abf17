"""bench.statestore measures what it claims: the data set has the shape it says, and both
engines, fed the same batches, hold and read back the same table in key order."""

from __future__ import annotations

import random

import pytest

from bench.statestore.engines import open_engine
from bench.statestore.workload import (
    CELLS_PER_USER,
    WIDE_COLUMNS,
    Applier,
    Shape,
    commands,
    load,
    read_page,
    read_row,
)
from raftkv import diskkeys


def test_the_data_set_has_its_share_of_large_values_and_wide_rows():
    shape = Shape(cells=CELLS_PER_USER * 200)
    cells = [shape.row_col(i) for i in range(shape.cells)]
    assert len({(row, col) for row, col, _ in cells}) == shape.cells
    large = sum(1 for *_, is_large in cells if is_large) / shape.cells
    assert large == pytest.approx(shape.large_share, abs=0.03)
    index = [col for row, col, _ in cells if row == "{u7}/index"]
    assert len(index) == WIDE_COLUMNS


def _table(engine, shape):
    reader = engine.reader()
    try:
        return list(reader.cells(b"", diskkeys.prefix_end(b"")))
    finally:
        reader.close()


def test_both_engines_hold_and_read_the_same_table(tmp_path):
    shape = Shape(cells=CELLS_PER_USER * 40, shards=4)
    tables, rows, pages = [], [], []
    for name in ("lmdb", "sqlite"):
        engine = open_engine(name, tmp_path / name, 1 << 20)
        try:
            load(engine, shape, per_txn=500)
            applier = Applier(engine, shape)
            rng = random.Random(1)
            for op, large in (("put", False), ("put", True), ("cput", False)):
                applier.apply(commands(shape, rng, op, large, 16))
            tables.append(_table(engine, shape))
            reader = engine.reader()
            rows.append(read_row(reader, shape, random.Random(2)))
            pages.append(read_page(reader, shape, random.Random(3), 5))
            reader.close()
        finally:
            engine.close()
    assert tables[0] == tables[1]
    keys = [key for key, _ in tables[0]]
    assert keys == sorted(keys) and len(keys) == shape.cells
    assert rows == [WIDE_COLUMNS, WIDE_COLUMNS] and pages == [5, 5]

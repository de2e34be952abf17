"""The on-disk key layout keeps the order the store reads in (raftkv/diskkeys.py).

Reads become range reads only if byte order of the keys is the order of
(shard, row, column) as Python compares them, and only if a range built for one
row or shard holds nothing of the next.  Each property is checked against the
plain definition, on names full of the characters that could break it: U+0000
(escaped inside rows), U+0001 and U+00FF (whose UTF-8 neighbours the escape),
and characters of two to four UTF-8 bytes.
"""

from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv import diskkeys
from raftkv.diskkeys import CellKey

TRICKY = st.sampled_from(["\x00", "\x01", "a", "b", "\x7f", "\xff", "\u0100", "\uffff",
                          "\U0001f600"])
NAMES = st.one_of(st.text(TRICKY, max_size=4), st.text(max_size=6))
TRIPLES = st.lists(st.tuples(st.integers(0, 70_000), NAMES, NAMES), max_size=40)


def _keys(triples: list[tuple[int, str, str]]) -> list[bytes]:
    return sorted({diskkeys.cell_key(*t) for t in triples})


def _in_range(keys: list[bytes], start: bytes, end: bytes) -> list[bytes]:
    """The keys a cursor from ``start`` reads before reaching ``end``."""
    return keys[bisect.bisect_left(keys, start):bisect.bisect_left(keys, end)]


@given(TRIPLES)
def test_byte_order_is_shard_then_row_then_column(triples):
    by_name = sorted(set(triples))
    by_key = sorted(set(triples), key=lambda t: diskkeys.cell_key(*t))
    assert by_key == by_name


@given(st.integers(0, 2**32 - 1), NAMES, NAMES)
def test_a_key_names_its_cell(shard, row, col):
    assert diskkeys.decode_cell_key(diskkeys.cell_key(shard, row, col)) == CellKey(shard, row, col)


@given(TRIPLES, st.integers(0, 70_000), NAMES, NAMES, NAMES)
def test_a_row_range_holds_exactly_its_columns_from_prefix_and_after(triples, shard, row,
                                                                     prefix, after):
    triples = [*triples, (shard, row, prefix), (shard, row, prefix + "x"), (shard, row + "\x00", ""),
               (shard, row + "\x00\x00", prefix)]
    start, end = diskkeys.columns_range(shard, row, prefix, after)
    found = [diskkeys.decode_cell_key(k) for k in _in_range(_keys(triples), start, end)]
    wanted = sorted(CellKey(*t) for t in set(triples)
                    if t[:2] == (shard, row) and t[2].startswith(prefix) and t[2] > after)
    assert found == wanted


@given(TRIPLES, st.integers(0, 70_000), NAMES)
def test_a_shard_range_holds_exactly_the_rows_after_the_cursor(triples, shard, after):
    triples = [*triples, (shard, after, "c"), (shard, after + "\x00", ""), (shard + 1, "", ""),
               (shard, after + "\x01", "c")]
    start, end = diskkeys.rows_range(shard, after)
    found = [diskkeys.decode_cell_key(k) for k in _in_range(_keys(triples), start, end)]
    wanted = sorted(CellKey(*t) for t in set(triples) if t[0] == shard and t[1] > after)
    assert found == wanted


def test_rows_that_extend_one_another_stay_apart():
    # "a" < "a\0" < "a\0b" < "a\1" as strings; their cells must not interleave.
    names = ["a", "a\x00", "a\x00b", "a\x01", "ab"]
    keys = [diskkeys.cell_key(7, row, col) for row in names for col in ("", "x", "\U0001f600")]
    assert keys == sorted(keys)
    start, end = diskkeys.columns_range(7, "a")
    assert _in_range(sorted(keys), start, end) == keys[1:3]  # column "" is not after ""
    assert diskkeys.decode_cell_key(diskkeys.cell_key(7, "a\x00b", "\x00")) == (7, "a\x00b", "\x00")


def test_an_empty_range_when_after_passes_the_prefix():
    start, end = diskkeys.columns_range(1, "row", prefix="m:", after="n")
    assert start >= end


def test_a_key_that_is_no_cell_key_is_refused():
    for bad in (b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x01row-without-terminator",
                b"\x00\x00\x00\x01\xc3\x00col"):
        with pytest.raises(ValueError):
            diskkeys.decode_cell_key(bad)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=64), st.booleans(),
       st.one_of(st.none(), st.floats(0, 1e12)))
def test_a_cell_value_round_trips(version, value, is_blob, expires):
    packed = diskkeys.pack_cell(version, value, is_blob, expires)
    assert diskkeys.unpack_cell(packed) == (version, value, is_blob, expires)


@given(st.lists(st.tuples(st.floats(0, 1e12), NAMES), max_size=30), st.floats(0, 1e12))
def test_expiry_entries_sort_by_time_and_the_due_ones_are_a_prefix(entries, now):
    index = sorted(diskkeys.expiry_key(t, diskkeys.cell_key(0, "r", col)) for t, col in entries)
    times = [diskkeys.decode_expiry_key(e)[0] for e in index]
    assert times == sorted(times)
    due = _in_range(index, b"", diskkeys.due_end(now))
    assert [diskkeys.decode_expiry_key(e)[0] for e in due] == [t for t in times if t <= now]


def test_an_expiry_that_would_sort_wrongly_is_refused():
    assert diskkeys.expiry_key(-0.0, b"k") == diskkeys.expiry_key(0.0, b"k")
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            diskkeys.expiry_key(bad, b"k")


@given(st.lists(st.tuples(st.integers(1, 2**62), st.integers(1, 2**63)), max_size=30))
def test_results_sort_by_client_then_sequence(pairs):
    assert sorted(pairs, key=lambda p: diskkeys.result_key(*p)) == sorted(pairs)

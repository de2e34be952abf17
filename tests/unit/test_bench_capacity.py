"""bench.capacity's pure parts: the sizes it is asked for, what it reads from /proc and
the disk, the data it stores, and the table and aims it prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest

from bench.capacity.group import Shape
from bench.capacity.probes import dir_bytes, parse_proc_status, parse_sizes, process_memory
from bench.capacity.report import aims, table
from bench.capacity.steps import stalls

PROC_STATUS = """Name:\tpython
Umask:\t0077
State:\tS (sleeping)
VmPeak:\t  512000 kB
VmHWM:\t  204800 kB
VmRSS:\t  153600 kB
RssAnon:\t  102400 kB
RssFile:\t   51200 kB
RssShmem:\t       0 kB
Threads:\t7
"""


def test_sizes_are_increasing_positive_gigabytes() -> None:
    assert parse_sizes("0.5,1,2") == [0.5, 1.0, 2.0]
    assert parse_sizes(" 0.02 , 0.05 ") == [0.02, 0.05]
    for bad in ("", "1,0.5", "1,1", "0", "-1", "a,b", "1e9"):
        with pytest.raises(click.BadParameter):
            parse_sizes(bad)


def test_proc_status_fields_in_mib() -> None:
    assert parse_proc_status(PROC_STATUS) == {"VmHWM": 200.0, "VmRSS": 150.0, "RssAnon": 100.0,
                                              "RssFile": 50.0, "RssShmem": 0.0}
    with pytest.raises(ValueError, match="unit"):
        parse_proc_status("RssAnon:\t 12 MB\n")
    mine = process_memory(os.getpid())
    assert 0 < mine["RssAnon"] < mine["VmRSS"] <= mine["VmHWM"]


def test_dir_bytes_counts_allocated_blocks_of_the_whole_tree(tmp_path: Path) -> None:
    (tmp_path / "raft" / "deeper").mkdir(parents=True)
    (tmp_path / "raft" / "deeper" / "data").write_bytes(os.urandom(64 * 1024))
    with open(tmp_path / "sparse", "wb") as f:  # 100 MB apparent, nothing allocated
        f.truncate(100_000_000)
    os.symlink("/usr", tmp_path / "link")  # not followed
    assert 64 * 1024 <= dir_bytes(tmp_path) < 1_000_000


def test_the_data_set_is_inline_cells_in_wide_rows_each_key_once() -> None:
    shape = Shape(value_size=10 * 1024, columns=100)
    assert shape.cells_for(0.05) == 4883  # ceil(5e7 / 10240)
    keys = [shape.key(i) for i in range(1000)]
    assert len(set(keys)) == 1000 and len({row for row, _ in keys}) == 10
    assert len(shape.value(7)) == 10 * 1024 and shape.value(7) == shape.value(7) != shape.value(8)


def fake_result(gb: float, anon: float, restart_s: float, catch_up_s: float,
                term_changed: bool = False, gap: tuple[float, float] = (0.1, 0.3),
                stalls: int = 0) -> dict[str, Any]:
    memory = {"RssAnon": anon, "RssFile": 20.0}
    per_replica = {n: {"seconds": s, "snapshot_bytes": int(gb * 1e9), "log_entries_after": 3}
                   for n, s in (("g1a", 1.5), ("g1b", 2.5), ("g1c", 0.5))}
    return {"target_gb": gb, "stored_gb": gb, "cells": 1, "fill": {"mb_per_s": 12.0},
            "memory_after_fill": {"g1a": memory, "g1b": memory, "g1c": memory},
            "memory_at_end": {"g1a": memory, "g1b": {"RssAnon": anon + 1, "RssFile": 1.0}},
            "disk_mb": {"g1a": 3000.0, "g1b": 2500.0, "g1c": 2000.0},
            "snapshot": {"leader": "g1a", "per_replica": per_replica},
            "restart": {"SIGTERM": {"stop_s": 0.1, "up_s": 0.2, "caught_up_s": restart_s,
                                    "memory": memory},
                        "SIGKILL": {"stop_s": 0.0, "up_s": 0.3, "caught_up_s": restart_s / 2,
                                    "memory": memory, "dials_leader": False}},
            "stalls_fill": {n: {"longest_s": 0.01, "over_aim": stalls, "ticks": 9}
                            for n in ("g1a", "g1b", "g1c")},
            "stalls_snapshot": {n: {"longest_s": 0.012, "over_aim": stalls, "ticks": 9}
                                for n in ("g1a", "g1b", "g1c")},
            "stalls_catch_up": {"g1a": {"longest_s": "≤ 0.05", "over_aim": stalls, "ticks": 9},
                                "g1b": {"longest_s": 0.015, "over_aim": 0, "ticks": 9}},
            "catch_up": {"caught_up_s": catch_up_s, "leader": "g1a", "replica": "g1b",
                         "snapshot_installed_s": catch_up_s / 2,
                         "term_changed": term_changed, "memory": memory, "dials_leader": True,
                         "watcher_gap_before_s": gap[0], "watcher_gap_after_s": gap[1]}}


def rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in text.splitlines()[2:]
            if (cells := [c.strip() for c in line.strip("|").split("|")])}


def test_the_table_has_a_column_per_size_and_marks_what_was_not_measured() -> None:
    small = fake_result(0.5, 40.0, 1.25, 3.0, gap=(0.4, 0.2))
    big = fake_result(2.0, 1234.5, 6.0, 45.0, term_changed=True)
    del big["catch_up"]["snapshot_installed_s"]
    got = rows(table([small, big]))
    assert table([small]).splitlines()[0] == "| measurement | unit | aim | 0.5 GB |"
    assert got["RssAnon, largest replica after the fill"] == ["MiB", "≤ 150 at 2 GB", "40", "1,234"]
    assert got["snapshot creation, leader"][2:] == ["1.5", "1.5"]
    assert got["snapshot creation, slowest replica"][2:] == ["2.5", "2.5"]
    assert got["snapshot on disk, largest"][2:] == ["500", "2,000"]
    assert got["restart after SIGTERM: until caught up"][1:] == ["≤ 5", "1.25", "6"]
    assert got["wiped follower: until its snapshot is installed"][2:] == ["1.5", "–"]
    # The watcher's maximum did not grow during the first catch-up: only a bound is known.
    assert got["longest gap between the leader's messages during the catch-up"][2:] == ["≤ 0.4", "0.3"]
    assert got["term changed during the catch-up"][1:] == ["no", "no", "yes"]
    assert got["wiped follower dials the leader"][2:] == ["yes", "yes"]
    # A stall's length is exact when it set a new maximum, else a bound.
    assert got["longest tick-thread stall during the catch-up, leader"][2:] == ["≤ 0.05"] * 2
    assert got["longest tick-thread stall, wiped follower (since its start)"][2:] == ["0.015"] * 2
    assert [r for r in got if "dials" in r and got[r][2:] == ["no", "no"]]


def test_aims_are_checked_at_the_largest_size() -> None:
    good = fake_result(0.5, 40.0, 1.25, 3.0)
    text = aims([fake_result(2.0, 1000.0, 9.0, 99.0, term_changed=True), good])
    assert "below the 2 GB" in text and "**missed**" not in text and text.count(": met") == 5
    text = aims([good, fake_result(2.0, 151.0, 5.0, 30.0, term_changed=True, stalls=2)],
                kv_flagged=["put"])
    lines = text.splitlines()
    assert "below" not in lines[0]
    assert lines[1].endswith("152 MiB (aim ≤ 150 MiB): **missed**")  # at the end: 151 + 1
    assert lines[2].endswith("5 s (aim ≤ 5 s): met") and lines[3].endswith("30 s (aim ≤ 30 s): met")
    assert lines[4].endswith("**missed**") and lines[6].endswith("**missed** (put)")
    assert lines[5].endswith("4 (aim ≤ 0): **missed**")  # two writing, two sending
    assert aims([]) == "No size was measured."


def test_a_size_whose_run_stopped_shows_what_was_measured() -> None:
    stopped = fake_result(2.0, 60.0, 1.0, 1.0)
    del stopped["memory_at_end"]
    stopped["catch_up"].update(caught_up_s=None, error="g1c did not catch up within 600 s")
    stopped["error"] = "g1c did not catch up within 600 s"
    got = rows(table([fake_result(1.0, 50.0, 1.0, 2.0), stopped]))
    assert got["RssAnon, largest replica after the fill"][2:] == ["50", "60"]
    assert got["wiped follower: until caught up"][2:] == ["2", "not in time"]
    assert got["RssAnon, follower caught up from a snapshot"][2:] == ["50", "–"]
    assert got["data directory, largest replica (after the snapshot)"][2:] == ["3,000", "3,000"]
    text = aims([stopped])
    assert "- a wiped follower caught up: inf s (aim ≤ 30 s): **missed**" in text
    del stopped["catch_up"], stopped["restart"]
    assert rows(table([stopped]))["wiped follower: until caught up"][2:] == ["–"]
    text = aims([stopped])
    assert "- a wiped follower caught up: not measured" in text
    assert "- a restarted follower caught up (SIGTERM and SIGKILL): not measured" in text
    assert "- RssAnon of every replica, at every point measured: 60 MiB" in text



def test_stalls_of_a_phase_subtract_two_readings() -> None:
    def reading(longest: float, **counts: int) -> dict[str, Any]:
        buckets = {b: 0 for b in ("0.001", "0.02", "0.05", "0.1", "inf")}
        buckets.update({k.replace("_", "."): v for k, v in counts.items()})
        return {"longest": longest, "buckets": buckets}

    def counted(seen: dict[str, Any]) -> dict[str, Any]:
        return {k: seen[k] for k in ("longest_s", "over_aim", "ticks")}

    before = reading(0.3, **{"0_001": 100, "0_1": 1})
    grew = reading(0.3, **{"0_001": 150, "0_05": 2, "0_1": 1})
    assert counted(stalls(before, grew)) == {"longest_s": "≤ 0.05", "over_aim": 2, "ticks": 52}
    assert stalls(before, reading(0.4, **{"0_001": 101, "inf": 1}))["longest_s"] == 0.4
    assert counted(stalls(None, grew)) == {"longest_s": 0.3, "over_aim": 3, "ticks": 153}
    assert counted(stalls(before, before)) == {"longest_s": 0.0, "over_aim": 0, "ticks": 0}


def test_the_stall_sites_of_a_phase_are_what_grew_in_it() -> None:
    def reading(seconds: float, cpu: float, stacks: dict[str, int]) -> dict[str, Any]:
        return {"longest": 0.0, "buckets": {"inf": 0}, "over_aim_seconds": seconds,
                "over_aim_cpu_seconds": cpu, "over_aim_switches": {"waited": 1, "preempted": 2},
                "sites": {"stacks": stacks, "seconds": seconds / 2, "cpu_seconds": cpu / 2,
                          "runqueue_seconds": 0.0}}

    before = reading(1.0, 0.25, {"a": 5, "b": 3})
    after = reading(1.5, 0.5, {"a": 5, "b": 7, "c": 1})
    seen = stalls(before, after)
    assert seen["sites"] == {"b": 4, "c": 1}      # "a" did not grow: not this phase's
    assert (seen["over_aim_s"], seen["over_aim_cpu_s"]) == (0.5, 0.25)
    assert seen["over_aim_switches"] == {"waited": 0, "preempted": 0}
    assert seen["sampled"] == {"seconds": 0.25, "cpu_seconds": 0.125, "runqueue_seconds": 0.0}

"""bench.ab's arithmetic: medians per side, the new/old ratio, and which workloads it flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.ab import Side, compare, render


def kv_output(numbers: dict[str, tuple[float, float]], errors: int = 0) -> dict[str, Any]:
    """What one ``bench.kv --json`` run prints, for workloads ``name: (ops/s, p50 ms)``."""
    return {"runs": [{"run": 0, "system": "raftkv", "workload": name, "ops_per_s": ops,
                      "p50_ms": p50, "errors": errors} for name, (ops, p50) in numbers.items()]}


def test_medians_ratio_and_the_pairs_in_which_the_new_code_was_slower() -> None:
    before = [kv_output({"put": (1000, 2.0), "get": (500, 4.0)}),
              kv_output({"put": (1100, 2.2), "get": (520, 3.0)}),
              kv_output({"put": (900, 1.0), "get": (510, 5.0)}, errors=1)]
    after = [kv_output({"put": (1050, 1.5), "get": (470, 4.5)}),
             kv_output({"put": (1000, 1.9), "get": (480, 4.0)}),
             kv_output({"put": (1200, 2.5), "get": (490, 4.2)})]
    put, get = compare({"before": before, "after": after}, max_slowdown=5)
    assert (put.workload, put.before_ops_per_s, put.after_ops_per_s) == ("put", 1000, 1050)
    assert put.ratio == pytest.approx(1.05)
    assert (put.before_p50_ms, put.after_p50_ms) == (2.0, 1.9)
    assert (put.slower_pairs, put.pairs, put.errors, put.flagged) == (1, 3, 1, False)
    assert put.before_spread == pytest.approx(0.2)
    assert put.after_spread == pytest.approx(0.2 / 1.05)
    assert get.ratio == pytest.approx(480 / 510)  # 5.9% slower
    assert (get.slower_pairs, get.flagged, get.errors) == (3, True, 1)


def test_the_threshold_is_the_median_ratio_and_is_inclusive() -> None:
    runs = {"before": [kv_output({"w": (1000, 1.0)})], "after": [kv_output({"w": (950, 1.0)})]}
    assert not compare(runs, max_slowdown=5)[0].flagged
    assert compare(runs, max_slowdown=4.9)[0].flagged


def test_a_workload_only_one_side_ran_is_left_out_and_etcd_never_counts() -> None:
    before = [kv_output({"old only": (10, 1.0), "both": (100, 1.0)})]
    after = [kv_output({"both": (50, 1.0), "new only": (10, 1.0)})]
    after[0]["runs"].append({"run": 0, "system": "etcd", "workload": "both", "ops_per_s": 1e9,
                             "p50_ms": 0.1, "errors": 0})
    (both,) = compare({"before": before, "after": after}, max_slowdown=5)
    assert (both.workload, both.after_ops_per_s, both.flagged) == ("both", 50, True)


def test_a_side_that_did_nothing_is_flagged_not_divided_by_zero() -> None:
    runs = {"before": [kv_output({"w": (0, float("nan"))})], "after": [kv_output({"w": (10, 1)})]}
    assert compare(runs, max_slowdown=5)[0].flagged


def test_the_table_names_both_sides_and_marks_the_slower_workloads() -> None:
    runs = {"before": [kv_output({"fast": (100, 1.0), "slow": (100, 1.0)})],
            "after": [kv_output({"fast": (101, 1.0), "slow": (90, 1.2)})]}
    text = render(compare(runs, max_slowdown=5), Side("before", "abc1234", Path("/old")),
                  Side("after", "def5678 + uncommitted changes", Path("/new")), 1, 5)
    assert text.startswith("old: abc1234; new: this tree, def5678 + uncommitted changes")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| ") and "ops/s" not in line}
    assert "slower" not in rows["fast"] and "| 1.010 | 0/1 | 0% | 0% |" in rows["fast"]
    assert "**> 5% slower**" in rows["slow"] and "| 0.900 | 1/1 |" in rows["slow"]

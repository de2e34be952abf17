"""The tick thread's stalls are measured where a peer feels them: between two waits."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from raftkv.node import tickwatch

from .._engine import Harness, variant


def test_the_gap_between_two_waits_is_what_is_recorded() -> None:
    read, write = os.pipe()
    try:
        watch = tickwatch.TickWatch(select.poll())
        watch.register(read, select.POLLIN)
        os.write(write, b"x")
        assert watch.poll(0) == [(read, select.POLLIN)]  # passes events through
        time.sleep(0.03)                 # the tick's work, away from poll()
        watch.poll(0)
        watch.poll(0.05)                 # waiting itself is no stall
        watch.poll(0)
        seen = watch.snapshot()
        assert 0.03 <= seen["longest"] < 0.05
        assert seen["buckets"]["0.05"] == 1            # the one 30 ms gap
        assert sum(seen["buckets"].values()) == 3      # three gaps between four waits
        assert seen["buckets"]["0.001"] == 2
        # The 30 ms gap was a sleep: little CPU, and the thread gave its CPU up itself.
        assert 0.03 <= seen["over_aim_seconds"] < 0.05 and seen["over_aim_cpu_seconds"] < 0.01
        assert seen["over_aim_switches"]["waited"] >= 1
    finally:
        os.close(read)
        os.close(write)


def test_the_engine_reports_a_stall_of_its_own_tick(tmp_path: Path) -> None:
    harness = Harness(tmp_path, variant(None))
    try:
        engine = harness.engine
        engine.doTick(0)
        # A tick that takes 60 ms, the way a slow apply or fsync would.
        engine.addOnTickCallback(lambda: time.sleep(0.06))
        engine.doTick(0)
        engine.doTick(0)
        seen = engine.tick_watch.snapshot()
        assert seen["longest"] >= 0.06
        assert seen["buckets"]["0.1"] >= 1
    finally:
        harness.close()


def test_the_stack_of_a_long_stall_is_counted_and_a_short_tick_costs_nothing(tmp_path: Path) -> None:
    harness = Harness(tmp_path, variant(None))
    try:
        engine = harness.engine

        slow = [0.1]

        def slow_apply_for_the_test() -> None:
            time.sleep(slow.pop() if slow else 0)  # once

        engine.doTick(0)
        engine.doTick(0)
        assert engine.stall_sites.snapshot()["stacks"] == {}
        engine.addOnTickCallback(slow_apply_for_the_test)
        engine.doTick(0)
        engine.doTick(0)  # the gap ends here: read at once (this thread is "away" after it)
        seen = engine.stall_sites.snapshot()
        where = [stack for stack in seen["stacks"] if "slow_apply_for_the_test" in stack]
        assert where and where[0].startswith("[S] ")  # asleep, innermost frame first
        assert sum(seen["stacks"].values()) >= 10     # every 2 ms from 20 ms on
        assert 0.04 <= seen["seconds"] < 0.1 and seen["cpu_seconds"] < 0.02
    finally:
        harness.close()

"""The tick thread's stalls are measured where a peer feels them: between two waits."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from raftkv.node import tickwatch

from .test_engine_fixes import Harness, _variant


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
    finally:
        os.close(read)
        os.close(write)


def test_the_engine_reports_a_stall_of_its_own_tick(tmp_path: Path) -> None:
    harness = Harness(tmp_path, _variant(None))
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

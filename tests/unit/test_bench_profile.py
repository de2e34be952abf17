"""bench.profile's reading of py-spy's raw stacks, and bench.kv --profile without py-spy."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import kv, profile
from bench.profile import function_of, is_wait, parse_collapsed, render, summarize

TICK = "thread (26132): Thread-1 (_autoTickThread)"
MAIN = "thread (26126): MainThread"
BOOT = "Thread._bootstrap (threading.py:1030);Thread.run (threading.py:1010)"
# py-spy 0.4.3 record --threads --format raw, shortened: "frame;frame;... count", root first.
RAW = f"""\
{TICK};{BOOT};SyncObj._onTick (pysyncobj/syncobj.py:699);SegmentJournal.sync (raftkv/node/journal.py:282) 30
{TICK};{BOOT};SyncObj._onTick (pysyncobj/syncobj.py:699);SegmentJournal.sync (raftkv/node/journal.py:285) 10
{TICK};{BOOT};SyncObj._onTick (pysyncobj/syncobj.py:706);TickWatch.poll (raftkv/node/tickwatch.py:52) 20
{TICK};{BOOT};EntryTransactions._commit (raftkv/transactions.py:88) 5
{MAIN};run (asyncio/runners.py:194);EpollSelector.select (selectors.py:468) 25
{MAIN};run (asyncio/runners.py:194);_SelectorSocketTransport.write (asyncio/selector_events.py:1069) 8
{MAIN};run (asyncio/runners.py:194);decode_body (raftkv/protocol.py:151) 2
thread (26137): raftkv-expiry;{BOOT};Condition.wait (threading.py:355) 40
"""


def test_raw_stacks_are_read_root_first_with_their_counts() -> None:
    stacks = parse_collapsed(RAW + "\nnot a stack line\n")
    assert sum(stacks.values()) == 140
    first = next(iter(stacks))
    assert first[0] == TICK and first[-1] == "SegmentJournal.sync (raftkv/node/journal.py:282)"
    assert function_of(first[-1]) == "SegmentJournal.sync (raftkv/node/journal.py)"
    assert function_of("<module> (shards/node.py:36)") == "<module> (shards/node.py)"
    assert function_of("_run_module_as_main (<frozen runpy>:198)") == \
        "_run_module_as_main (<frozen runpy>)"


def test_waits_for_work_are_told_from_work_and_from_the_journals_fsync() -> None:
    assert is_wait("Condition.wait (threading.py)")
    assert is_wait("EpollSelector.select (selectors.py)")
    assert is_wait("TickWatch.poll (raftkv/node/tickwatch.py)")
    assert not is_wait("SegmentJournal.sync (raftkv/node/journal.py)")
    assert not is_wait("_SelectorSocketTransport.write (asyncio/selector_events.py)")


def test_the_summary_gives_each_threads_waits_and_the_functions_by_own_time() -> None:
    summary = summarize(parse_collapsed(RAW))
    assert (summary.samples, summary.waiting) == (140, 85)
    tick, expiry, main = summary.threads  # most samples first
    assert (tick.name, tick.samples, tick.waiting) == (TICK, 65, 20)
    # Two lines of one function add up, and the share is of the thread's samples.
    assert tick.busy[0].name == "SegmentJournal.sync (raftkv/node/journal.py)"
    assert (tick.busy[0].samples, tick.busy[0].fraction) == (40, pytest.approx(40 / 65))
    assert (expiry.samples, expiry.waiting, expiry.busy) == (40, 40, [])
    assert [s.name for s in main.busy] == [
        "_SelectorSocketTransport.write (asyncio/selector_events.py)",
        "decode_body (raftkv/protocol.py)"]
    assert [(s.name.split(" ")[0], s.samples) for s in summary.busy] == [
        ("SegmentJournal.sync", 40), ("_SelectorSocketTransport.write", 8),
        ("EntryTransactions._commit", 5), ("decode_body", 2)]
    assert summary.busy[0].fraction == pytest.approx(40 / 140)
    text = render(summary, "leader")
    assert f"| {TICK} | 65 | 20 | 45 | `SegmentJournal.sync (raftkv/node/journal.py)` 62%" in text
    assert "| `SegmentJournal.sync (raftkv/node/journal.py)` | 40 | 28.6% |" in text


def test_py_spy_is_found_beside_the_interpreter_before_path(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    scripts, elsewhere = tmp_path / "venv-bin", tmp_path / "path"
    for folder in (scripts, elsewhere):
        folder.mkdir()
        (folder / "py-spy").write_text("#!/bin/sh\n")
        (folder / "py-spy").chmod(0o755)
    monkeypatch.setattr(profile.sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.setenv("PATH", str(elsewhere))
    assert profile.py_spy_binary() == str(scripts / "py-spy")
    (scripts / "py-spy").unlink()
    assert profile.py_spy_binary() == str(elsewhere / "py-spy")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert profile.py_spy_binary() is None


def test_profile_without_py_spy_says_how_to_install_it_and_starts_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "py_spy_binary", lambda: None)

    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(kv, "start_raftkv", no_cluster)
    result = CliRunner().invoke(kv.main, ["--profile", "--ops", "1", "--time-limit", "0.1"])
    assert result.exit_code == 1
    assert "py-spy not found" in result.output and "pip install" in result.output

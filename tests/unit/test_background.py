"""The one background-loop shape (raftkv/background.py): steps, wakes, failures, stopping."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings

import pytest

from raftkv.background import STOP_TIMEOUT, UNTIL_WOKEN, BackgroundLoop


class Counting(BackgroundLoop):
    """Counts its steps; a test can make a step fail, block, or return a delay."""

    def __init__(self, interval: float = 60.0, *, first_delay: float = 0.0,
                 delay: float | None = None) -> None:
        super().__init__("test-loop", interval, first_delay=first_delay)
        self.steps = 0
        self.stepped = threading.Condition()
        self.fail_next = 0
        self.block: threading.Event | None = None
        self.delay = delay
        self.finished = 0

    def step(self) -> float | None:
        if self.block is not None:
            self.block.wait(30)
        with self.stepped:
            self.steps += 1
            self.stepped.notify_all()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("a bug in the step")
        return self.delay

    def finish(self) -> None:
        self.finished += 1

    def wait_steps(self, n: int, timeout: float = 5.0) -> bool:
        with self.stepped:
            return self.stepped.wait_for(lambda: self.steps >= n, timeout)


def threads_named(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def test_steps_every_interval_then_stop_runs_finish_once() -> None:
    loop = Counting(interval=0.01).start()
    assert loop.wait_steps(3)
    assert loop.stop()
    assert not loop.running and loop.finished == 1
    steps = loop.steps
    time.sleep(0.05)
    assert loop.steps == steps  # no step after stop


def test_first_delay_holds_the_first_step_and_wake_makes_it_run_now() -> None:
    loop = Counting(interval=60.0, first_delay=60.0).start()
    try:
        time.sleep(0.1)
        assert loop.steps == 0
        started = time.monotonic()
        loop.wake()
        assert loop.wait_steps(1, timeout=2.0)
        assert time.monotonic() - started < 1.0
        loop.wake()  # and again: each wake is a step, not only the first
        assert loop.wait_steps(2, timeout=2.0)
    finally:
        loop.stop()


def test_a_step_may_wait_until_woken() -> None:
    loop = Counting(interval=0.01, delay=UNTIL_WOKEN).start()
    try:
        assert loop.wait_steps(1)
        time.sleep(0.1)
        assert loop.steps == 1
        loop.wake()
        assert loop.wait_steps(2)
    finally:
        assert loop.stop()  # stop wakes it too


def test_a_failing_step_is_logged_with_the_loop_name_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = Counting(interval=0.01)
    loop.fail_next = 2
    with caplog.at_level(logging.ERROR):
        loop.start()
        try:
            assert loop.wait_steps(4)
        finally:
            loop.stop()
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert all("test-loop" in r.getMessage() and r.exc_info for r in failures)
    assert failures[0].name == __name__  # the subclass's logger, not the base's


def test_a_failure_while_stopping_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    class ClosedUnderIt(BackgroundLoop):
        def step(self) -> float | None:
            self.wait_stopping(30)
            raise OSError("connection closed by stop")

    loop = ClosedUnderIt("closing-loop", 60.0)
    with caplog.at_level(logging.DEBUG):
        loop.start()
        time.sleep(0.05)
        assert loop.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("closing-loop" in r.getMessage() for r in caplog.records)


def test_stop_joins_a_quick_step_well_within_the_timeout() -> None:
    loop = Counting(interval=0.01).start()
    assert loop.wait_steps(1)
    started = time.monotonic()
    assert loop.stop(timeout=STOP_TIMEOUT)
    assert time.monotonic() - started < 1.0
    assert threads_named("test-loop") == 0


def test_a_long_step_does_not_hold_stop_beyond_its_timeout() -> None:
    loop = Counting(interval=0.01)
    loop.block = threading.Event()
    loop.start()
    time.sleep(0.05)  # the first step is blocked now
    started = time.monotonic()
    assert not loop.stop(timeout=0.2)  # still running: stop says so, and returns
    assert 0.15 < time.monotonic() - started < 1.0
    started = time.monotonic()
    assert not loop.stop(timeout=0)     # 0: do not wait at all
    assert time.monotonic() - started < 0.1
    loop.block.set()  # the step ends by itself, and no other follows
    assert loop.stop(timeout=5.0)
    assert loop.steps == 1 and loop.finished == 1


def test_start_twice_is_one_thread_and_stop_twice_is_harmless() -> None:
    loop = Counting(interval=0.01)
    assert loop.start() is loop
    loop.start()
    assert loop.wait_steps(2)
    assert threads_named("test-loop") == 1
    assert loop.stop() and loop.stop()
    loop.start()  # a stopped loop stays stopped
    time.sleep(0.05)
    assert not loop.running and loop.finished == 1


def test_stop_before_start_means_it_never_runs() -> None:
    loop = Counting(interval=0.01)
    assert loop.stop()
    loop.start()
    time.sleep(0.05)
    assert loop.steps == 0 and loop.finished == 0 and not loop.running


def test_a_step_may_stop_its_own_loop() -> None:
    class Once(Counting):
        stop_returned: bool | None = None

        def step(self) -> float | None:
            super().step()
            # From the loop's own thread: must not wait for (or try to join) itself.
            self.stop_returned = self.stop()
            return None

    loop = Once(interval=0.01).start()
    assert loop.wait_steps(1)
    deadline = time.monotonic() + 2.0
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.running and loop.steps == 1 and loop.finished == 1
    assert loop.stop_returned is False  # it was still running: its own step called stop


def test_interrupt_is_called_before_stop_waits() -> None:
    class Interruptible(Counting):
        def interrupt(self) -> None:
            assert self.block is not None
            self.block.set()  # like closing the connection a step waits on

    loop = Interruptible(interval=0.01)
    loop.block = threading.Event()
    loop.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert loop.stop(timeout=5.0)
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_loop_in_its_own_thread() -> None:
    loop = Counting(interval=0.01).start()
    try:
        assert loop.wait_steps(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
            pid = os.fork()
        if pid == 0:  # the child: the parent's thread is not here, so start runs one
            loop.stepped = threading.Condition()  # the parent's thread may have held the old one
            ok = not loop.running
            before = loop.steps
            loop.start()
            ok = ok and loop.wait_steps(before + 2) and loop.stop()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert loop.running  # the parent's loop went on
    finally:
        loop.stop()

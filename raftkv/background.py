"""One shape for every background loop of a process: a thread that takes a step now and then.

A :class:`BackgroundLoop` runs :meth:`~BackgroundLoop.step` in a daemon thread
of its own, every :attr:`~BackgroundLoop.interval` seconds (or after the delay
the step returns), sooner when :meth:`~BackgroundLoop.wake` is called, until
:meth:`~BackgroundLoop.stop`.  The keeper of a replica's chunks, the
reconfigurer, the registry heartbeat, the outbound mail queue, the balancer's
health checks and the frontend's last-seen writer are all one.

The decisions they share are made here, once:

- **A step that fails never ends the loop.**  A step handles the errors it
  expects (a store outage, usually) itself; anything else is logged with the
  loop's name, through the logger of the subclass's module, and the next step
  comes at the usual time.  While the loop is stopping, a failure is only
  logged at debug level: stopping may close the step's connections under it.
- **Stopping never hangs a shutdown** (the join policy).  :meth:`stop` asks
  the loop to end, wakes it, lets the subclass interrupt a step in flight
  (:meth:`interrupt`), then waits for the thread at most ``timeout`` seconds,
  :data:`STOP_TIMEOUT` unless the caller says otherwise (``0``: do not wait).
  A step still running then is left to finish on its own: the thread is a
  daemon, so it never keeps the process alive, and it takes no further step.
  A step that may run long checks :attr:`stopping` (or waits with
  :meth:`wait_stopping`) so that it ends early when asked.
- **Start and stop are idempotent.**  Starting a running loop does nothing;
  stopping twice does nothing more; a loop stopped (even before it started)
  stays stopped; stop from the loop's own thread (a step that decides the loop
  is done) does not wait for itself.
- **A forked child starts afresh.**  A child inherits the loop object but not
  its thread: after a fork the loop is as if never started, so the child's
  first :meth:`start` runs it there (gunicorn forks the frontend's workers).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from typing import Self

STOP_TIMEOUT = 5.0     # seconds stop() waits for a step in flight, unless told otherwise
UNTIL_WOKEN = math.inf  # a step's delay: no step until wake() (or stop)

_loops: weakref.WeakSet[BackgroundLoop] = weakref.WeakSet()


class BackgroundLoop:
    """A daemon thread that runs :meth:`step` every ``interval`` seconds until stopped.

    :param name: the thread's name, and how log lines name the loop.
    :param interval: seconds between steps, when :meth:`step` returns None.
    :param first_delay: seconds before the first step (0: at once).
    """

    def __init__(self, name: str, interval: float, *, first_delay: float = 0.0) -> None:
        self.name = name
        self.interval = interval
        self.first_delay = first_delay
        self._loop_log = logging.getLogger(type(self).__module__)
        self._loop_reset(stopped=False)
        _loops.add(self)

    def _loop_reset(self, *, stopped: bool) -> None:
        # Fresh primitives: a fork may have copied a lock held by a thread the child lacks.
        self._loop_lock = threading.Lock()
        self._loop_stop = threading.Event()
        self._loop_wake = threading.Event()
        self._loop_thread: threading.Thread | None = None
        if stopped:
            self._loop_stop.set()

    # -- what a subclass provides -----------------------------------------------------------

    def step(self) -> float | None:
        """One round of the loop's work; the delay until the next (None: :attr:`interval`).

        Runs in the loop's thread.  Return :data:`UNTIL_WOKEN` to wait for :meth:`wake`.
        """
        raise NotImplementedError

    def interrupt(self) -> None:
        """Called by :meth:`stop` before it waits: make a step in flight end sooner
        (close its connections, say).  Does nothing unless overridden."""

    def finish(self) -> None:
        """Called once in the loop's thread after its last step (a final flush, say)."""

    # -- control ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Run the loop in its thread; does nothing if it runs already or was stopped."""
        with self._loop_lock:
            if self._loop_thread is None and not self._loop_stop.is_set():
                self._loop_thread = threading.Thread(target=self._loop_run, name=self.name,
                                                     daemon=True)
                self._loop_thread.start()
        return self

    def wake(self) -> None:
        """Take the next step now (after the one in progress, if any)."""
        self._loop_wake.set()

    def stop(self, timeout: float | None = STOP_TIMEOUT) -> bool:
        """Stop the loop; whether its thread has ended (or never ran) when this returns.

        :param timeout: seconds to wait for a step in flight (None: for ever; 0: not at all).
        """
        self._loop_stop.set()
        self._loop_wake.set()
        self.interrupt()
        with self._loop_lock:
            thread = self._loop_thread
        if thread is None:
            return True
        if thread is not threading.current_thread() and timeout != 0:
            thread.join(timeout)
        return not thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has been called: a long step checks it to end early."""
        return self._loop_stop.is_set()

    def wait_stopping(self, seconds: float) -> bool:
        """Sleep inside a step for up to ``seconds``; True as soon as the loop is stopping."""
        return self._loop_stop.wait(seconds)

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive in this process."""
        thread = self._loop_thread
        return thread is not None and thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------

    def _loop_run(self) -> None:
        delay = self.first_delay
        while not self._loop_pause(delay):
            delay = self._loop_step()
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - logged; the thread ends anyway
            self._loop_log.exception("%s: finishing failed", self.name)

    def _loop_pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds or until woken; whether the loop is stopping."""
        if not self._loop_stop.is_set():
            self._loop_wake.wait(None if delay == UNTIL_WOKEN else max(0.0, delay))
            self._loop_wake.clear()
        return self._loop_stop.is_set()

    def _loop_step(self) -> float:
        try:
            delay = self.step()
        except Exception:  # noqa: BLE001 - the loop must outlive any one bad step
            if self._loop_stop.is_set():
                self._loop_log.debug("%s: step ended by stopping", self.name, exc_info=True)
            else:
                self._loop_log.exception("%s: step failed; carrying on", self.name)
            return self.interval
        return self.interval if delay is None else delay


def _after_fork_in_child() -> None:
    for loop in list(_loops):
        loop._loop_reset(stopped=loop._loop_stop.is_set())


os.register_at_fork(after_in_child=_after_fork_in_child)

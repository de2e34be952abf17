"""What every long-running app process (smtpd, balancer) does around its work."""

from __future__ import annotations

import signal
import threading


def wait_for_shutdown() -> None:
    """Block until SIGTERM (the supervisor's stop) or SIGINT (Ctrl-C) arrives."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda sig, frame: stop.set())
    stop.wait()

"""Start real processes for tests: reserve ports, wait until ready, stop, show logs."""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

SECRET = b"test-secret-0123456789abcdef"
# smtpd's outbound worker asks DNS only for queued remote mail; tests that do not
# mean to send any still point it at loopback (docs/testing.md: never the system resolver).
NO_DNS = "127.0.0.1:9"


_handed_out: set[int] = set()
_ports = random.Random()


def free_port() -> int:
    """A port nobody listens on, below the kernel's ephemeral range (32768-60999).

    A port from the ephemeral range may be taken as the source port of some
    outgoing connection between this check and the test process binding it;
    below the range only listeners compete, and each port is handed out once.
    """
    for _ in range(1000):
        port = _ports.randrange(20_000, 32_768)
        if port in _handed_out:
            continue
        with closing(socket.socket()) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def fresh_address() -> str:
    """A loopback address no other test uses (Linux answers on all of 127/8)."""
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(250) + 1}." \
           f"{secrets.randbelow(250) + 1}"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    # Only the last failure's text is kept: the exception itself would hold its traceback,
    # this frame and so itself in a cycle, alive until a later garbage collection; an HTTP
    # error keeps its socket open that long, and its ResourceWarning fails a later test.
    last = ""
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the predicate probes a starting process
            last = f": {exc!r}"
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}{last}")


def port_open(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


class Proc:
    """One child process with its log in a file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd  # ``python -m`` imports from here first
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                      env=self.env, cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """A real crash: SIGKILL to the whole process group."""
        if self.alive:
            assert self.popen is not None
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group (SIGSTOP/SIGCONT pause and resume it)."""
        if self.alive:
            assert self.popen is not None
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def python_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]

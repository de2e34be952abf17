"""The supervisor's processes: spawn, crash (kill -9), respawn, and wait until they answer."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.cluster import split_addr
from raftkv.logs import LOG_FORMAT_ENV

from .logfiles import ChildLog, LogSettings

log = logging.getLogger("deploy.supervisor")


@dataclass(frozen=True)
class ProcessSpec:
    name: str                    # unique in the cluster file
    kind: str                    # storage, frontend, smtpd or balancer
    host: str                    # the cluster file's host name
    addr: str                    # host:port it answers on when ready
    argv: list[str]              # the command line
    env: dict[str, str] = field(default_factory=dict)
    health_path: str | None = None  # HTTP path that answers 200 when ready (else: port open)
    tls: bool = False               # it answers HTTPS ([web] tls_cert), health_path too


class Supervisor:
    """Owns the child processes of one host.  Thread-safe (the control API calls it)."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path, env: dict[str, str],
                 logs: LogSettings | None = None) -> None:
        self.specs = specs
        self._by_name = {s.name: s for s in specs}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_dir = log_dir
        self._logs = logs or LogSettings()
        self._files: dict[str, ChildLog] = {}
        self._env = env
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def names(self) -> list[str]:
        return list(self._by_name)

    def start(self, name: str) -> None:
        """Spawn the process unless it runs; it recovers its state from its data dir."""
        spec = self._by_name[name]
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                return
            if name not in self._files:
                self._files[name] = ChildLog(self._log_dir / f"{name}.log", self._logs)
            # Its own session: a crash of the launcher's terminal group does
            # not take the children with it before we stop them ourselves.
            proc = subprocess.Popen(
                spec.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **self._env, **spec.env,
                     LOG_FORMAT_ENV: self._logs.format})
            self._files[name].follow(proc, name)
            self._procs[name] = proc
            log.info("started %s (pid %d)", name, proc.pid)

    def crash(self, name: str) -> None:
        """kill -9 the process (and its children, e.g. gunicorn workers): a real crash."""
        with self._lock:
            proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.info("killed %s (pid %d) on request", name, proc.pid)

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "kind": s.kind, "host": s.host, "addr": s.addr,
                 "alive": self.alive(s.name),
                 "pid": self._procs[s.name].pid if s.name in self._procs else None}
                for s in self.specs]

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM everything (apps first, the store last), then SIGKILL what lingers."""
        order = [s for s in reversed(self.specs)]
        for spec in order:
            proc = self._procs.get(spec.name)
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for spec in order:
            proc = self._procs.get(spec.name)
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s: killed", spec.name, proc.pid,
                            timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for child_log in self._files.values():
            child_log.close()


def is_ready(spec: ProcessSpec) -> bool:
    """Does the process answer: its health page says 200, or its port accepts."""
    host, port = split_addr(spec.addr)
    if spec.health_path:
        scheme = "https" if spec.tls else "http"
        # Our own child's readiness, by the address it binds: its certificate is for the
        # name browsers use, so it is not checked here (only "does it answer 200").
        context = ssl._create_unverified_context() if spec.tls else None  # noqa: S323
        try:
            with urllib.request.urlopen(f"{scheme}://{spec.addr}{spec.health_path}",
                                        timeout=1, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ready(supervisor: Supervisor, stop: threading.Event, timeout: float) -> None:
    """Block until every process answers (or ``stop`` is set); raise on timeout or death."""
    deadline = time.monotonic() + timeout
    waiting = list(supervisor.specs)
    while waiting and not stop.is_set():
        dead = [s.name for s in waiting if not supervisor.alive(s.name)]
        if dead:
            raise RuntimeError(f"exited during start-up: {', '.join(dead)} (see the logs dir)")
        waiting = [s for s in waiting if not is_ready(s)]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(s.name for s in waiting)
            raise RuntimeError(f"not ready after {timeout:.0f}s: {names} (see the logs dir)")
        if waiting:
            stop.wait(0.2)

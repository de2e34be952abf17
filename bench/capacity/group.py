"""One real 3-replica group on loopback for the bench: start it, fill it with inline
cells, ask its replicas how they are, and restart or wipe one of them."""

from __future__ import annotations

import hashlib
import math
import shutil
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import raftkv
from tests.cluster import KVCluster

from ..common import closed_loop
from .probes import dir_bytes, process_memory

STATUS_TIMEOUT = 2.0   # raftkv.Client.status's own bound per replica
POLL = 0.05            # seconds between two looks at the replicas while waiting


class BenchError(RuntimeError):
    """The group did not do what a measurement needs within its bound."""


@dataclass(frozen=True)
class Shape:
    """The stored data: ``value_size``-byte cells, ``columns`` to a row, as a mailbox
    row holds many bodies.  Values are incompressible (hash output): the Raft transport
    compresses its frames, and mail bodies' text would flatter it by an unknown amount."""

    value_size: int = 10 * 1024
    columns: int = 100

    def cells_for(self, gb: float) -> int:
        return math.ceil(gb * 1e9 / self.value_size)

    def key(self, cell: int) -> tuple[str, str]:
        return f"{{u{cell // self.columns:06d}}}/mail", f"body:{cell % self.columns:04d}"

    def value(self, cell: int) -> bytes:
        return hashlib.shake_128(cell.to_bytes(8, "big")).digest(self.value_size)


class Group:
    """The group's processes (``tests.cluster.KVCluster``) and one ``raftkv.Client``."""

    def __init__(self, stack: ExitStack, root: Path, snapshot_entries: int,
                 client_timeout: float) -> None:
        self.cluster = KVCluster(root, extra=f"\n[raft]\nsnapshot_entries = {snapshot_entries}\n")
        stack.callback(self.cluster.stop)
        self.cluster.start()
        self.cluster.leader(timeout=30)
        self.root = root
        self.snapshot_entries = snapshot_entries
        self.names = [r.name for r in self.cluster.cluster.groups[0].replicas]
        self.client = raftkv.Client([r.client for r in self.cluster.cluster.groups[0].replicas],
                                    self.cluster.cluster.secret, timeout=client_timeout)
        stack.callback(self.client.close)

    # -- looking --------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each answering replica's status, by name (one busy past 2 s is left out)."""
        return {s["name"]: s for s in self.client.status() if s.get("alive")}

    def leader(self, timeout: float) -> tuple[str, dict[str, dict[str, Any]]]:
        """The one leader's name, and the statuses that showed it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.statuses()
            leaders = [n for n, s in seen.items() if s.get("role") == "leader"]
            if len(leaders) == 1:
                return leaders[0], seen
            time.sleep(POLL)
        raise BenchError(f"no single leader within {timeout:g} s")

    def followers(self, leader: str) -> list[str]:
        return [n for n in self.names if n != leader]

    def settle(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every replica has applied what the leader had committed."""
        leader, seen = self.leader(timeout)
        target = seen[leader]["commit_index"]
        self.wait_applied(self.names, target, timeout)
        return self.statuses()

    def wait_applied(self, names: list[str], index: int, timeout: float) -> float:
        """Seconds until each of ``names`` has applied ``index``."""
        began = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.statuses()
            if all(n in seen and seen[n]["applied_index"] >= index for n in names):
                return time.perf_counter() - began
            time.sleep(POLL)
        raise BenchError(f"{', '.join(names)} did not apply index {index} within {timeout:g} s")

    def dials(self, name: str, peer: str) -> bool:
        """Whether ``name`` opens the Raft connection to ``peer``: pysyncobj lets the
        replica whose address sorts higher dial, and the other wait for it; a dialer
        whose peer went away tries again every 5 s (its ``connectionRetryTime``)."""
        raft = {r.name: r.raft for r in self.cluster.cluster.groups[0].replicas}
        return raft[name] > raft[peer]

    def pid(self, name: str) -> int:
        popen = self.cluster.procs[name].popen
        if popen is None or popen.poll() is not None:
            raise BenchError(f"{name} is not running")
        return popen.pid

    def memory(self, name: str) -> dict[str, float]:
        return process_memory(self.pid(name))

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def disk_mb(self, name: str) -> float:
        return dir_bytes(self.data_dir(name)) / 1e6

    # -- doing ----------------------------------------------------------------

    def fill(self, shape: Shape, first: int, end: int, clients: int,
             time_limit: float) -> dict[str, float]:
        """Put cells ``first`` .. ``end - 1``, ``clients`` at a time."""
        def put(t: int, i: int) -> bool:
            if i < 0:
                return True  # closed_loop's untimed first call
            cell = first + i * clients + t
            self.client.put(*shape.key(cell), shape.value(cell))
            return True

        run = closed_loop(put, clients, end - first, time_limit, straggler=60.0)
        stored = len(run.latencies)
        if stored < end - first:
            raise BenchError(f"the fill stored {stored} of {end - first} cells "
                             f"({run.errors} failed) within {time_limit:g} s")
        return {"cells": stored, "seconds": run.elapsed,
                "mb_per_s": stored * shape.value_size / 1e6 / run.elapsed,
                "p99_ms": run.percentile_ms(0.99)}

    def stop(self, name: str, how: signal.Signals, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM (a clean stop, SIGKILL if it takes past ``timeout``) or SIGKILL."""
        proc = self.cluster.procs[name]
        began = time.perf_counter()
        if how == signal.SIGTERM:
            proc.stop(timeout)
        else:
            proc.kill()
        popen = proc.popen
        return {"stop_s": time.perf_counter() - began,
                "exit": None if popen is None else popen.returncode}

    def start(self, name: str) -> None:
        self.cluster.procs[name].start()

    def wipe(self, name: str) -> None:
        """Remove a stopped replica's whole data directory: journal, snapshot, chunks."""
        if self.cluster.procs[name].alive:
            raise BenchError(f"{name} must be stopped before its data is wiped")
        shutil.rmtree(self.data_dir(name))

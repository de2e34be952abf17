"""What every benchmark here shares: a clean stop on SIGTERM, medians over runs, and the
closed loop of client threads that the throughput benchmarks time."""

from __future__ import annotations

import math
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the clusters


def stop_cleanly_on_sigterm() -> None:
    """Let SIGTERM unwind the benchmark, so the clusters and servers it started stop too."""
    signal.signal(signal.SIGTERM, _raise_exit)


def medians[R](runs: list[dict[str, Any]], by: str, result: type[R]) -> dict[Any, dict[str, R]]:
    """Per ``run[by]`` and workload, the median of each of ``result``'s numbers over the runs."""
    out: dict[Any, dict[str, R]] = {}
    for key, name in dict.fromkeys((r[by], r["workload"]) for r in runs):
        mine = [r for r in runs if r[by] == key and r["workload"] == name]
        out.setdefault(key, {})[name] = result(*(statistics.median(r[f.name] for r in mine)
                                                 for f in fields(result)))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Run:
    """What :func:`closed_loop` saw: sorted latencies (seconds) of the right answers."""

    latencies: list[float]
    errors: int      # operations that raised
    wrong: int       # operations that answered, wrongly
    elapsed: float   # wall seconds from the start signal to the last thread's end

    @property
    def ops_per_s(self) -> float:
        return len(self.latencies) / self.elapsed if self.latencies else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return math.nan
        return self.latencies[min(len(self.latencies) - 1, int(len(self.latencies) * fraction))] * 1000


def closed_loop(op: Callable[[int, int], bool], clients: int, ops: int, time_limit: float, *,
                on_start: Callable[[], None] = lambda: None, straggler: float = 15.0) -> Run:
    """``clients`` threads call ``op(thread, i)`` back to back, ``ops`` calls in all, until
    ``time_limit`` seconds have passed.

    ``op`` answers whether the result was right, and raises when the call failed.
    Each thread's first call (``i = -1``) is untimed: it opens connections before
    the clock starts.  ``on_start`` runs just before the clock does (to sample CPU
    counters); a last call may run ``straggler`` seconds past the time limit.
    """
    latencies: list[float] = []
    errors = wrong = 0
    lock = threading.Lock()
    go = threading.Event()
    ready = threading.Semaphore(0)
    deadline = [math.inf]

    def worker(t: int) -> None:
        nonlocal errors, wrong
        mine, failed, bad = [], 0, 0
        try:
            op(t, -1)
        except Exception:  # noqa: BLE001 - counted like any failed operation
            failed += 1
        ready.release()
        go.wait()
        for i in range(ops // clients + (t < ops % clients)):
            if time.perf_counter() >= deadline[0]:
                break
            start = time.perf_counter()
            try:
                ok = op(t, i)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                failed += 1
                continue
            if ok:
                mine.append(time.perf_counter() - start)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors += failed
            wrong += bad

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        ready.acquire(timeout=time_limit)
    on_start()
    began = time.perf_counter()
    deadline[0] = began + time_limit
    go.set()
    for thread in threads:
        thread.join(max(0.0, deadline[0] - time.perf_counter()) + straggler)
    elapsed = time.perf_counter() - began
    with lock:
        return Run(sorted(latencies), errors, wrong, elapsed)

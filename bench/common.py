"""What every benchmark here shares: a clean stop on SIGTERM, and medians over runs."""

from __future__ import annotations

import signal
import statistics
from dataclasses import fields
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

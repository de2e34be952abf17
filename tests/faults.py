"""Recorded concurrent traffic for fault tests, checked for linearizability afterwards.

Clients run PUT/GET/CPUT/DELETE on a few cells while a test injects one fault;
every call is recorded (:mod:`tests.lincheck`).  Writes carry unique values,
which keeps the checker fast.  A write that errs in any other way than a
refused condition is recorded as "outcome unknown": it may still commit
(docs/testing.md) and is never retried with a new id.  A read that errs is dropped,
since a read changes nothing.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from raftkv.errors import ConditionFailed, RaftKVError

from .lincheck import Recorder, check

ROW = "lin"


class Workload:
    """``clients`` threads, each bounded by ``ops`` calls and by ``seconds``.

    The first ``readers`` clients only read: a reader stays with whichever
    replica answered it last, so it is the one to catch a deposed leader
    serving reads while the writers have moved on to its successor.
    """

    def __init__(self, make_client, *, clients: int = 6, readers: int = 2, keys: int = 4,
                 ops: int = 400, seconds: float = 20.0, seed: int = 0,
                 rows: tuple[str, ...] = (ROW,), pause: float = 0.0) -> None:
        """Key ``i`` is a column of ``rows[i % len(rows)]``: rows in several shards spread
        the cells over several groups.  ``pause``: seconds each client waits between two
        calls, so that a budget of ``ops`` lasts through a longer test."""
        self.recorder = Recorder()
        self.keys = [f"k{i}" for i in range(keys)]
        self._row_of = {key: rows[i % len(rows)] for i, key in enumerate(self.keys)}
        self._make_client = make_client
        self._clients = clients
        self._readers = readers
        self._ops = ops
        self._seconds = seconds
        self._seed = seed
        self._pause = pause
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.completed = 0

    def start(self) -> None:
        deadline = time.monotonic() + self._seconds
        for n in range(self._clients):
            thread = threading.Thread(target=self._run, args=(n, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._seconds + 30)
            assert not thread.is_alive(), "a client thread did not stop"

    def _run(self, n: int, deadline: float) -> None:
        rng = random.Random(self._seed * 1000 + n)
        seen: dict[str, bytes | None] = {}
        weights = [0, 1, 0, 0] if n < self._readers else [3, 4, 3, 1]
        with self._make_client() as client:
            for i in range(self._ops):
                if self._stop.wait(self._pause) or time.monotonic() > deadline:
                    return
                key = rng.choice(self.keys)
                value = f"c{n}-{i}".encode()
                kind = rng.choices(["put", "get", "cput", "delete"], weights)[0]
                arg = {"put": value, "get": None, "delete": None,
                       "cput": (seen.get(key), value)}[kind]
                handle = self.recorder.call(n, kind, key, arg)
                # Half the reads are get_cells, beside another key (possibly another
                # group): the recorded read of ``key`` must hold on that path too.
                beside = rng.choice(self.keys) if rng.random() < 0.5 else None
                try:
                    result = self._do(client, kind, key, arg, beside)
                except ConditionFailed:
                    self.recorder.ok(handle, False)
                    continue
                except RaftKVError:
                    if kind == "get":
                        self.recorder.fail(handle)
                    else:
                        self.recorder.unknown(handle)
                    continue
                self.recorder.ok(handle, result)
                self.completed += 1
                if kind == "get":
                    seen[key] = result
                elif kind in ("put", "cput"):
                    seen[key] = value
                else:
                    seen[key] = None

    def _do(self, client, kind: str, key: str, arg, beside: str | None = None):
        row = self._row_of[key]
        if kind == "put":
            client.put(row, key, arg)
            return True
        if kind == "get" and beside is not None:
            cell = client.get_cells([(row, key), (self._row_of[beside], beside)])[0]
            return None if cell is None else cell.value
        if kind == "get":
            cell = client.get(row, key)
            return None if cell is None else cell.value
        if kind == "cput":
            old, new = arg
            client.cput(row, key, new, old=old)
            return True
        return client.delete(row, key)

    def check(self, keep: Path) -> None:
        """Assert the history is linearizable; keep it in ``keep`` when it is not."""
        history = self.recorder.history
        assert self.completed > 20, f"only {self.completed} operations completed"
        result = check(history)
        if not result.ok:
            self.recorder.dump(keep / "history.jsonl")
        assert result.ok, f"{result} (history kept in {keep / 'history.jsonl'})"

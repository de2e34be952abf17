"""Linearizability checking of recorded client histories against the per-cell register model.

Each key is a register holding ``bytes`` or ``None`` (absent), initially ``None``:
``put(v)`` -> ``True``; ``get`` -> the value; ``cput((old, new))`` -> ``True`` and writes ``new`` if
the value equals ``old`` (``None``: must be absent), else ``False``; ``delete`` -> whether there was
a value, then absent. A history is linearizable if every completed operation can be given a point
between its call and its return such that the points, in order, form a run of that model.
Equal timestamps count as overlapping, so a coarse clock can only make the check more lenient.

An operation whose outcome is unknown (``ret is None``: timeout, lost connection) has no return: it
may take effect at any point after its call, or never, and its result is not checked.

Linearizability is local (Herlihy & Wing 1990), so each key is checked on its own, with the search
of Wing & Gong ("Testing and verifying concurrent objects", 1993) as made iterative and memoized by
Lowe ("Testing for linearizability", 2017): depth-first over which pending call to linearize next,
never revisiting a (linearized set, state) configuration. Unknown-outcome ops stay pending to the
end and would multiply the configurations, so the search also

- skips a configuration if one with the same state and completed ops but a subset of its unknown
  ops was seen: more unknown ops left to place can only help, they have no deadline;
- places an unknown op only right before an op that needs it (else it can be dropped or moved
  later), and identical unknown ops only in call order (an earlier call can go wherever a later one
  can);
- treats all values that no get returns and no cput expects as one.

The search is still exponential in the worst case, mostly in unknown ops that could explain many
reads: tests that write unique values are far cheaper to check than ones reusing a few. ``check``
stops after ``max_states`` configurations for one key, or ``timeout`` seconds for the whole call,
by raising `BudgetExceeded`: a test then errors out instead of hanging, and an undecided history
passes neither for linearizable nor for a violation.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

KINDS = ("put", "get", "cput", "delete")


@dataclass(frozen=True)
class Op:
    """One operation of one client on one key, with its real-time interval."""

    client: int          # which client issued it; only used in explanations
    kind: str            # "put" | "get" | "cput" | "delete"
    key: str             # e.g. "row/col"; ops on different keys are independent
    arg: Any             # put: bytes; cput: (old: bytes | None, new: bytes); get, delete: None
    call: int            # time.monotonic_ns() at invocation
    ret: int | None      # time.monotonic_ns() at completion; None: outcome unknown
    result: Any = None   # put, cput: bool; get: bytes | None; delete: bool; ignored if ret is None


@dataclass(frozen=True)
class Result:
    """Outcome of `check`: ``ok``, or the first non-linearizable key and why."""

    ok: bool
    key: str | None = None     # the key whose history is not linearizable
    explanation: str = ""      # longest linearizable prefix found and the ops that cannot follow it
    explored: int = 0          # configurations visited, over all keys checked

    def __str__(self) -> str:
        return self.explanation or f"linearizable ({self.explored} configurations)"


class BudgetExceeded(Exception):
    """The search gave up before deciding; the message shows how far it got."""

    def __init__(self, key: str, explored: int, elapsed: float, explanation: str) -> None:
        super().__init__(f"lincheck gave up on key {key!r} after {explored} configurations,"
                         f" {elapsed:.1f}s; so far:\n{explanation}")
        self.key = key
        self.explored = explored
        self.elapsed = elapsed


def apply(state: bytes | None, kind: str, arg: Any) -> tuple[Any, bytes | None]:
    """The sequential model: ``(result, new state)`` of one operation on one register."""
    if kind == "put":
        return True, arg
    if kind == "get":
        return state, state
    if kind == "cput":
        old, new = arg
        return (True, new) if state == old else (False, state)
    if kind == "delete":
        return state is not None, None
    raise ValueError(f"unknown op kind {kind!r}")


def check(history: list[Op], *, max_states: int = 2_000_000, timeout: float = 60.0) -> Result:
    """Check that ``history`` is linearizable, key by key.

    :param max_states: configurations to visit per key before giving up. A linearizable history
        takes about 1.5 per op; a violation takes every configuration reachable before it, which
        unknown-outcome ops multiply. The default is some 40 s and 200 MB on a 2,000-op key.
    :param timeout: seconds for the whole call before giving up (checked every 4096 configurations).
    :raises BudgetExceeded: when either limit is hit.
    :raises ValueError: on an unknown kind or a return before its call.
    """
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind not in KINDS:
            raise ValueError(f"unknown op kind {op.kind!r}")
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"op returns before its call: {op}")
        if op.ret is not None or op.kind != "get":  # an unknown get changes nothing
            by_key[op.key].append(op)
    deadline = time.monotonic() + timeout
    explored = 0
    for key in sorted(by_key):
        n, explanation = _Search(key, by_key[key], max_states, deadline).run()
        explored += n
        if explanation:
            return Result(False, key, f"key {key!r} is not linearizable ({n} configurations)\n"
                          + explanation, explored)
    return Result(True, explored=explored)


class _Entry:
    """A call or return event in the doubly linked list of Wing & Gong."""

    __slots__ = ("idx", "is_call", "bit", "known", "twin", "match", "prev", "next")

    def __init__(self, idx: int = -1, is_call: bool = False, bit: int = 0, known: bool = True) -> None:
        self.idx, self.is_call, self.bit, self.known = idx, is_call, bit, known
        self.twin = 0  # unknown outcome: bit of the identical op called just before, if any
        self.match: _Entry = self
        self.prev: _Entry = self
        self.next: _Entry = self

    def lift(self) -> None:
        for e in (self, self.match):
            e.prev.next = e.next
            e.next.prev = e.prev

    def unlift(self) -> None:
        for e in (self.match, self):
            e.prev.next = e
            e.next.prev = e


class _Search:
    """Lowe's iterative Wing & Gong search over the ops of one key."""

    def __init__(self, key: str, ops: list[Op], max_states: int, deadline: float) -> None:
        self.key, self.ops, self.max_states, self.deadline = key, ops, max_states, deadline
        never = max(max(op.call, op.ret or 0) for op in ops) + 1  # after every known return
        events: list[tuple[int, int, int]] = []
        counts = [0, 0]  # unknown, known
        self.entries: list[_Entry] = []
        for i, op in enumerate(ops):
            known = op.ret is not None
            call = _Entry(i, True, 1 << counts[known], known)
            call.match = _Entry(i, False)
            call.match.match = call
            counts[known] += 1
            self.entries.append(call)
            events += [(op.call, 0, i), (op.ret if known else never, 1, i)]  # calls first on ties
        self.known = counts[True]
        read = {op.result for op in ops if op.kind == "get"} | {op.arg[0] for op in ops if op.kind == "cput"}
        self.args = [_abstract(op, read) for op in ops]
        last: dict[tuple[str, Any], _Entry] = {}
        for e in sorted(self.entries, key=lambda e: ops[e.idx].call):
            if not e.known:
                twin = last.get((ops[e.idx].kind, self.args[e.idx]))
                e.twin = twin.bit if twin else 0
                last[(ops[e.idx].kind, self.args[e.idx])] = e
        self.head = _Entry()
        prev = self.head
        for _, is_ret, i in sorted(events):
            e = self.entries[i].match if is_ret else self.entries[i]
            prev.next, e.prev, prev = e, prev, e
        prev.next, self.head.prev = self.head, prev  # circular: the head doubles as the tail

    def run(self) -> tuple[int, str]:
        """``(configurations visited, explanation)``; the explanation is empty if linearizable."""
        started = time.monotonic()
        state: Any = None
        kmask = umask = placed = 0
        path: tuple | None = None  # linearized ops as a cons list: (index, rest)
        seen: dict[tuple[int, Any], list[int]] = {(0, None): [0]}
        stack: list[tuple[_Entry, bool, Any, int, int, tuple | None]] = []
        best = (0, path, kmask, umask)
        entry, unknown = self.head.next, False  # unknown: second pass, for unknown-outcome ops
        explored = 1
        while placed < self.known:
            if entry.is_call:
                op = self.ops[entry.idx]
                expected, new = apply(state, op.kind, self.args[entry.idx])
                if entry.known != unknown and (op.result == expected if entry.known
                                               else umask & entry.twin == entry.twin and new != state
                                               and self._needed(entry, state, new)):
                    nk, nu = (kmask, umask | entry.bit) if unknown else (kmask | entry.bit, umask)
                    if _fresh(seen, nk, new, nu):
                        stack.append((entry, unknown, state, kmask, umask, path))
                        entry.lift()
                        state, kmask, umask, path = new, nk, nu, (entry.idx, path)
                        placed += entry.known
                        if placed > best[0]:
                            best = (placed, path, kmask, umask)
                        explored += 1
                        if placed < self.known and (explored >= self.max_states or (
                                explored % 4096 == 0 and time.monotonic() > self.deadline)):
                            raise BudgetExceeded(self.key, explored, time.monotonic() - started,
                                                 self.explain(*best, decided=False))
                        entry, unknown = self.head.next, False
                        continue
                entry = entry.next
            elif not unknown:  # a pending return: no completed op fits next, try unknown ones
                entry, unknown = self.head.next, True
            else:  # nothing fits here: backtrack
                if not stack:
                    return explored, self.explain(*best)
                entry, unknown, state, kmask, umask, path = stack.pop()
                entry.unlift()
                placed -= entry.known
                entry = entry.next
        return explored, ""

    def _needed(self, entry: _Entry, state: Any, new: Any) -> bool:
        """Whether an op that can come right after unknown-outcome ``entry`` needs it first.

        If none does, ``entry`` can be dropped or moved past the next op; so a linearization that
        places unknown ops only where needed exists whenever any does.
        """
        kind, arg = self.ops[entry.idx].kind, self.args[entry.idx]
        e = self.head.next
        while e.is_call:
            x, x_arg = self.ops[e.idx], self.args[e.idx]
            if e is not entry and x.kind != "put":  # a put overwrites it: no need
                after, end = apply(new, x.kind, x_arg)
                if not e.known or after == x.result:
                    alone, end_alone = apply(state, x.kind, x_arg)
                    same = not e.known or alone == after
                    if not (same and end_alone == end) and not (  # droppable, or else movable:
                            e.known and same and apply(end_alone, kind, arg)[1] == end):
                        return True
            e = e.next
        return False

    def explain(self, placed: int, path: tuple | None, kmask: int, umask: int, decided: bool = True) -> str:
        """The longest linearizable prefix found, and the completed ops that could come next."""
        t0 = min(op.call for op in self.ops)
        prefix: list[int] = []
        while path is not None:
            idx, path = path
            prefix.append(idx)
        states: list[tuple[int, bytes | None]] = []
        state = None  # replayed on the real values, not on the stand-in of `_abstract`
        for i in reversed(prefix):
            state = apply(state, self.ops[i].kind, self.ops[i].arg)[1]
            states.append((i, state))
        left = [e.idx for e in self.entries if not e.bit & (kmask if e.known else umask)]
        due = min((self.ops[i] for i in left if self.ops[i].ret is not None), key=lambda o: o.ret or 0)
        lines = [f"longest linearizable prefix: {placed} of {self.known} completed ops"
                 f" and {len(prefix) - placed} unknown-outcome ones" + (", ending:" if prefix else "")]
        lines += [f"  {_show(self.ops[i], t0)}  => {_val(after)}" for i, after in states[-10:]]
        lines.append(f"then the value is {_val(state)}, {_show(due, t0)} must come by its return,"
                     " and the completed ops that could come next are:")
        for i in left:
            op = self.ops[i]
            if op.ret is not None and op.call <= (due.ret or 0):
                expected = apply(state, op.kind, op.arg)[0]
                why = (f"would return {_val(expected)}" if op.result != expected
                       else "fits, but nothing linearizable follows" if decided else "fits")
                lines.append(f"  {_show(op, t0)}: {why}")
        return "\n".join(lines)


_UNREAD = object()  # stands for every written value that no get returns and no cput expects


def _abstract(op: Op, read: set[Any]) -> Any:
    """``op.arg`` with a written value that nothing reads replaced by `_UNREAD`."""
    if op.kind == "put":
        return op.arg if op.arg in read else _UNREAD
    if op.kind == "cput":
        return op.arg if op.arg[1] in read else (op.arg[0], _UNREAD)
    return op.arg


def _fresh(seen: dict[tuple[int, Any], list[int]], kmask: int, state: Any, umask: int) -> bool:
    """Record a configuration; False if it or one with fewer unknown ops placed was seen."""
    masks = seen.setdefault((kmask, state), [])
    if any(not m & ~umask for m in masks):
        return False
    masks.append(umask)
    return True


def _val(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


def _show(op: Op, t0: int) -> str:
    arg = "" if op.arg is None else " " + (
        f"{_val(op.arg[0])}->{_val(op.arg[1])}" if op.kind == "cput" else _val(op.arg))
    ret = "?" if op.ret is None else f"{(op.ret - t0) / 1e6:.3f}ms"
    res = "unknown" if op.ret is None else _val(op.result)
    return f"c{op.client} {op.kind}{arg} -> {res} [{(op.call - t0) / 1e6:.3f}ms, {ret}]"


class Recorder:
    """Thread-safe history of client operations, for `check`.

    Call `call` right before sending a request and `ok`, `unknown` or `fail` as soon as its outcome
    is known, so the recorded interval contains the real one. Ops never resolved count as unknown.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: list[Op] = []
        self._pending: dict[int, Op] = {}
        self._next = 0

    def call(self, client: int, kind: str, key: str, arg: Any = None) -> int:
        """Record an invocation; returns the handle for its outcome."""
        if kind not in KINDS:
            raise ValueError(f"unknown op kind {kind!r}")
        op = Op(client, kind, key, arg, time.monotonic_ns(), None)
        with self._lock:
            self._next += 1
            self._pending[self._next] = op
            return self._next

    def ok(self, handle: int, result: Any) -> None:
        """The op completed with ``result`` (a cput that raised `ConditionFailed`: ``False``)."""
        ret = time.monotonic_ns()
        self._resolve(handle, lambda op: Op(op.client, op.kind, op.key, op.arg, op.call, ret, result))

    def unknown(self, handle: int) -> None:
        """The outcome is unknown (timeout, connection lost): it may or may not have happened."""
        self._resolve(handle, lambda op: op)

    def fail(self, handle: int) -> None:
        """The op definitely did not happen (e.g. refused by a follower): drop it."""
        self._resolve(handle, None)

    def _resolve(self, handle: int, done: Callable[[Op], Op] | None) -> None:
        with self._lock:
            op = self._pending.pop(handle, None)
            if op is None:
                raise ValueError(f"handle {handle} is unknown or already resolved")
            if done:
                self._done.append(done(op))

    @property
    def history(self) -> list[Op]:
        """All ops so far, by call time; unresolved ones with an unknown outcome."""
        with self._lock:
            return sorted([*self._done, *self._pending.values()], key=lambda op: op.call)

    def dump(self, path: str | Path) -> None:
        """Write the history to ``path``, see `dump`."""
        dump(self.history, path)


def dump(history: list[Op], path: str | Path) -> None:
    """Write ``history`` as JSON lines, one op per line, bytes as hex strings.

    The results of unknown-outcome ops are not kept.
    """
    with open(path, "w") as f:
        for op in history:
            arg = [_hex(op.arg[0]), _hex(op.arg[1])] if op.kind == "cput" else _hex(op.arg)
            result = None if op.ret is None else _hex(op.result) if op.kind == "get" else op.result
            f.write(json.dumps({"client": op.client, "kind": op.kind, "key": op.key, "arg": arg,
                                "call": op.call, "ret": op.ret, "result": result}) + "\n")


def load(path: str | Path) -> list[Op]:
    """Read a history written by `dump`."""
    ops = []
    with open(path) as f:
        for line in filter(str.strip, f):
            d = json.loads(line)
            arg = tuple(map(_unhex, d["arg"])) if d["kind"] == "cput" else _unhex(d["arg"])
            result = _unhex(d["result"]) if d["kind"] == "get" else d["result"]
            ops.append(Op(d["client"], d["kind"], d["key"], arg, d["call"], d["ret"], result))
    return ops


def _hex(v: bytes | None) -> str | None:
    return None if v is None else v.hex()


def _unhex(v: str | None) -> bytes | None:
    return None if v is None else bytes.fromhex(v)

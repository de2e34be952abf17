"""The linearizability checker on hand-written, generated and recorded histories."""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ..lincheck import BudgetExceeded, Op, Recorder, apply, check, dump, load

A, B, C = b"a", b"b", b"c"


def put(client: int, value: bytes, call: int, ret: int | None, key: str = "k") -> Op:
    return Op(client, "put", key, value, call, ret, True)


def get(client: int, result: bytes | None, call: int, ret: int | None, key: str = "k") -> Op:
    return Op(client, "get", key, None, call, ret, result)


def cput(client: int, old: bytes | None, new: bytes, call: int, ret: int | None, result: bool) -> Op:
    return Op(client, "cput", "k", (old, new), call, ret, result)


def delete(client: int, call: int, ret: int | None, result: bool) -> Op:
    return Op(client, "delete", "k", None, call, ret, result)


GOOD = {
    "sequential": [put(1, A, 0, 10), get(1, A, 20, 30), put(2, B, 40, 50), get(3, B, 60, 70)],
    "get overlapping a put sees the old value": [put(1, A, 0, 10), put(1, B, 20, 50), get(2, A, 30, 40)],
    "get overlapping a put sees the new value": [put(1, A, 0, 10), put(1, B, 20, 50), get(2, B, 30, 40)],
    "empty key reads None": [get(1, None, 0, 10), put(1, A, 20, 30), get(2, A, 40, 50)],
    "cput race, one wins": [put(1, A, 0, 10), cput(2, A, B, 20, 40, True), cput(3, A, C, 21, 41, False),
                            get(1, B, 50, 60)],
    "cput race, the later call wins": [put(1, A, 0, 10), cput(2, A, B, 20, 40, False),
                                       cput(3, A, C, 21, 41, True), get(1, C, 50, 60)],
    "cput on absent": [cput(1, None, A, 0, 10, True), cput(2, None, B, 20, 30, False), get(3, A, 40, 50)],
    "delete results": [delete(1, 0, 10, False), put(1, A, 20, 30), delete(2, 40, 50, True),
                       delete(3, 60, 70, False), get(1, None, 80, 90)],
    "delete overlapping a put": [put(1, A, 0, 10), delete(2, 20, 50, True), put(3, B, 30, 40),
                                 get(1, None, 60, 70)],
    "unknown put observed later": [put(1, A, 0, None), get(2, None, 10, 20), get(2, A, 50, 60),
                                   get(3, A, 70, 80)],
    "unknown put never observed": [put(1, A, 0, None), get(2, None, 50, 60), get(2, None, 70, 80)],
    "unknown cput and delete": [put(1, A, 0, 10), cput(2, A, B, 20, None, False), delete(3, 30, None, False),
                                get(1, B, 40, 50), get(1, None, 60, 70)],
    "a chain of unknown ops": [put(1, A, 0, None), cput(2, A, B, 5, None, False), get(3, B, 20, 30)],
    "two unknown deletes explain two reads": [put(1, A, 0, 10), delete(2, 5, None, False),
                                              delete(3, 6, None, False), get(4, None, 20, 30),
                                              put(1, B, 40, 50), get(4, None, 60, 70)],
    "equal timestamps overlap": [put(1, A, 0, 10), put(2, B, 10, 20), get(3, A, 20, 30)],
    "keys are independent": [put(1, A, 0, 10, key="x"), put(1, B, 20, 30, key="y"),
                             get(2, A, 40, 50, key="x"), get(2, None, 40, 50, key="z")],
}

BAD = {
    "stale read after a completed put (deposed leader)": [put(1, A, 0, 10), put(2, B, 20, 30),
                                                          get(3, A, 40, 50)],
    "read of a value never written": [put(1, A, 0, 10), get(2, C, 20, 30)],
    "two cputs with the same old both succeed": [put(1, A, 0, 10), cput(2, A, B, 20, 40, True),
                                                 cput(3, A, C, 21, 41, True)],
    "lost write": [put(1, A, 0, 10), get(2, None, 20, 30)],
    "delete of an absent key reports True": [delete(1, 0, 10, True)],
    "delete succeeds twice": [put(1, A, 0, 10), delete(2, 20, 30, True), delete(3, 40, 50, True)],
    "reads go backwards across clients": [put(1, A, 0, 10), put(2, B, 20, 60), get(3, B, 30, 40),
                                          get(4, A, 45, 55)],
    "unknown put takes effect twice": [put(1, A, 0, None), get(2, A, 10, 20), put(3, B, 30, 40),
                                       get(2, A, 50, 60)],
    "one unknown delete cannot explain two reads": [put(1, A, 0, 10), delete(2, 5, None, False),
                                                    get(4, None, 20, 30), put(1, B, 40, 50),
                                                    get(4, None, 60, 70)],
    "cput fails though the value matched": [put(1, A, 0, 10), cput(2, A, B, 20, 30, False)],
    "one bad key among good ones": [put(1, A, 0, 10, key="x"), get(2, A, 20, 30, key="x"),
                                    get(2, C, 20, 30, key="y")],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_history(name: str) -> None:
    result = check(GOOD[name])
    assert result.ok, result
    assert check(list(reversed(GOOD[name]))).ok  # order in the list does not matter


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_history(name: str) -> None:
    result = check(BAD[name])
    assert not result.ok
    assert result.key == BAD[name][-1].key
    assert f"key {result.key!r} is not linearizable" in result.explanation


def test_explanation_names_the_offending_op() -> None:
    history = [put(1, A, 0, 1_000_000), put(2, B, 2_000_000, 3_000_000), get(3, A, 4_000_000, 5_500_000)]
    assert str(check(history)) == """\
key 'k' is not linearizable (3 configurations)
longest linearizable prefix: 2 of 3 completed ops and 0 unknown-outcome ones, ending:
  c1 put b'a' -> True [0.000ms, 1.000ms]  => b'a'
  c2 put b'b' -> True [2.000ms, 3.000ms]  => b'b'
then the value is b'b', c3 get -> b'a' [4.000ms, 5.500ms] must come by its return, \
and the completed ops that could come next are:
  c3 get -> b'a' [4.000ms, 5.500ms]: would return b'b'"""


def test_budget_raises_instead_of_hanging() -> None:
    history = [put(i, bytes([i]), 0, 100) for i in range(14)] + [get(99, C, 200, 300)]
    with pytest.raises(BudgetExceeded, match="(?s)after 100 configurations.*so far:.*c99 get") as info:
        check(history, max_states=100)
    assert info.value.key == "k" and info.value.explored == 100
    with pytest.raises(BudgetExceeded, match="after 4096 configurations"):
        check(history, timeout=-1)  # the clock is read every 4096 configurations
    assert not check(history).ok  # the full search decides it


def test_invalid_ops_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        check([Op(1, "incr", "k", None, 0, 1, 1)])
    with pytest.raises(ValueError, match="before its call"):
        check([put(1, A, 10, 5)])


def linearizable_by_brute_force(history: list[Op]) -> bool:
    """Try every order of every subset of the ops that includes all completed ones."""
    def extend(state: bytes | None, left: frozenset[Op]) -> bool:
        if all(op.ret is None for op in left):
            return True
        for op in left:
            if any(o.ret is not None and o.ret < op.call for o in left):
                continue  # some op still to place returned before this one was called
            result, new = apply(state, op.kind, op.arg)
            if (op.ret is None or op.result == result) and extend(new, left - {op}):
                return True
        return False

    return extend(None, frozenset(history))


SMALL_OP = st.builds(
    lambda client, kind, value, old, call, length, known, result: Op(
        client, kind, "k", {"put": value, "cput": (old, value)}.get(kind), call,
        call + length if known else None, result if kind == "get" else bool(result)),
    st.integers(0, 5), st.sampled_from(["put", "get", "cput", "delete"]), st.sampled_from([A, B]),
    st.sampled_from([None, A, B]), st.integers(0, 20), st.integers(0, 10), st.booleans(),
    st.sampled_from([None, A, B, True]))


@settings(max_examples=400, deadline=None)
@given(st.lists(SMALL_OP, max_size=7, unique=True))
def test_small_histories_agree_with_brute_force(history: list[Op]) -> None:
    assert check(history).ok == linearizable_by_brute_force(history)


# Generated histories: a sequential run of the model at linearization points 1000 apart, each op
# given a real-time window around its point. "applied" ops took effect but their outcome is
# unknown; "lost" ones never took effect and their outcome is unknown too.

VALUES = [A, B, C]
SPEC = st.tuples(st.integers(0, 3), st.sampled_from(["put", "get", "cput", "delete"]),
                 st.sampled_from(["k1", "k2"]), st.integers(0, 2), st.integers(0, 3),
                 st.integers(0, 3000), st.integers(0, 3000),
                 st.sampled_from(["ok", "ok", "ok", "ok", "applied", "lost"]))


def build(specs: list[tuple[int, str, str, int, int, int, int, str]]) -> list[Op]:
    """A linearizable history from op specs; each client's completed ops stay sequential."""
    state: dict[str, bytes | None] = {}
    ops: list[Op] = []
    for i, (client, kind, key, value, old, pre, post, fate) in enumerate(specs):
        arg = {"put": VALUES[value], "cput": ([None, *VALUES][old], VALUES[value])}.get(kind)
        result = None
        if fate != "lost":
            result, state[key] = apply(state.get(key), kind, arg)
        point = 1000 * (i + 1)
        ops.append(Op(client, kind, key, arg, point - pre, point + post if fate == "ok" else None, result))
    # Where a client's windows overlap, end the earlier one before the later one starts; both
    # still contain their points. Ops of unknown outcome do not hold their client up.
    later: dict[int, int] = {}
    for i in reversed(range(len(ops))):
        op, j = ops[i], later.get(ops[i].client)
        if op.ret is not None and j is not None:
            ops[i] = dataclasses.replace(op, ret=min(op.ret, 1000 * (j + 1) - 1))
            ops[j] = dataclasses.replace(ops[j], call=max(ops[j].call, ops[i].ret + 1))
        later[op.client] = i
    return ops


@settings(max_examples=150, deadline=None)
@given(st.lists(SPEC, max_size=40))
def test_generated_histories_are_linearizable(specs: list) -> None:
    history = build(specs)
    result = check(history)
    assert result.ok, result


@settings(max_examples=100, deadline=None)
@given(st.lists(SPEC, min_size=1, max_size=30), st.data())
def test_mutated_histories(specs: list, data: st.DataObject) -> None:
    history = build(specs)
    reads = [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]
    assume(reads)
    i = data.draw(st.sampled_from(reads))
    other = data.draw(st.sampled_from([None, True, False, *VALUES]))
    j = data.draw(st.integers(0, len(history) - 1))
    mutated = list(history)
    mutated[j] = dataclasses.replace(history[j], result=other)
    assert isinstance(check(mutated).ok, bool)  # any answer, but no crash
    history[i] = dataclasses.replace(history[i], result=b"never written")
    assert not check(history).ok


def simulate(n: int, keys: int, clients: int, seed: int, unknown: int) -> list[Op]:
    """``n`` ops, about ``clients`` at a time, ``unknown`` % of them with an unknown outcome."""
    rng = random.Random(seed)
    fates = ["ok", "applied", "lost"], [100 - unknown, unknown / 2, unknown / 2]
    return build([(rng.randrange(clients), rng.choice(["put", "get", "get", "cput", "delete"]),
                   f"k{rng.randrange(keys)}", rng.randrange(3), rng.randrange(4),
                   rng.randrange(4000), rng.randrange(4000), rng.choices(*fates)[0]) for _ in range(n)])


def test_large_history_checks_within_budget() -> None:
    history = simulate(2000, keys=3, clients=8, seed=7, unknown=4)
    assert sum(op.ret is None for op in history) > 40
    result = check(history)
    assert result.ok, result


def test_large_history_with_a_late_violation() -> None:
    # Unknown outcomes are left out: with only three values to write, each could explain many
    # reads, and a violation needs every configuration before it explored (see the module).
    history = simulate(2000, keys=1, clients=8, seed=8, unknown=0)
    i = max(i for i, op in enumerate(history) if op.kind == "get")
    history[i] = dataclasses.replace(history[i], result=b"never written")
    result = check(history)
    assert not result.ok and "get -> b'never written'" in result.explanation


# The recorder.


def test_recorder_threads_on_a_locked_dict_are_linearizable() -> None:
    rec = Recorder()
    store: dict[str, bytes] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(n)
        for _ in range(60):
            kind, key = rng.choice(["put", "get", "cput", "delete"]), f"k{rng.randrange(2)}"
            value, old = rng.choice(VALUES), rng.choice([None, *VALUES])
            arg = {"put": value, "cput": (old, value)}.get(kind)
            handle = rec.call(n, kind, key, arg)
            if rng.random() < 0.05:
                rec.fail(handle)
                continue
            with lock:
                result, new = apply(store.get(key), kind, arg)
                if new is None:
                    store.pop(key, None)
                else:
                    store[key] = new
            if rng.random() < 0.05:
                rec.unknown(handle)
            else:
                rec.ok(handle, result)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = rec.history
    assert 300 < len(history) < 360
    result = check(history)
    assert result.ok, result


def test_recorder_handles() -> None:
    rec = Recorder()
    done, dropped, pending = rec.call(1, "put", "k", A), rec.call(2, "get", "k"), rec.call(3, "delete", "k")
    rec.ok(done, True)
    rec.fail(dropped)
    with pytest.raises(ValueError, match="already resolved"):
        rec.ok(dropped, None)
    with pytest.raises(ValueError, match="kind"):
        rec.call(1, "incr", "k")
    assert [(op.client, op.ret is None) for op in rec.history] == [(1, False), (3, True)]
    rec.unknown(pending)
    assert [op.client for op in rec.history] == [1, 3]


def test_dump_load_round_trip(tmp_path: Path) -> None:
    history = [put(1, b"\x00\xff", 0, 10), get(2, b"\x00\xff", 5, 15), get(2, None, 20, 30),
               cput(3, None, A, 1, 2, False), cput(3, A, B, 3, None, False), delete(4, 40, 50, True),
               delete(4, 60, None, False), put(5, b"", 70, None)]
    dump(history, tmp_path / "h.jsonl")
    loaded = load(tmp_path / "h.jsonl")
    # Results of unknown-outcome ops are not kept.
    assert loaded == [op if op.ret is not None else dataclasses.replace(op, result=None) for op in history]
    rec = Recorder()
    rec.ok(rec.call(1, "cput", "r/c", (None, A)), True)
    rec.dump(str(tmp_path / "r.jsonl"))
    assert load(str(tmp_path / "r.jsonl")) == rec.history

"""The state machine against a plain-dict model, driven by hypothesis."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftkv.store import Store

ROWS = st.sampled_from(["a", "b", "{u}/x", "{u}/y"])
COLS = st.sampled_from(["c1", "c2", "c3"])
VALUES = st.binary(max_size=8)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = Store(shards=4)
        self.model: dict[tuple[str, str], bytes] = {}
        self.versions: dict[tuple[str, str], int] = {}   # last version seen per cell, ever
        self.seq = 0

    def write(self, **command: object) -> dict:
        self.seq += 1
        return self.store.apply({**command, "cid": 7, "seq": self.seq, "ack": self.seq - 1})

    def _saw(self, key: tuple[str, str], version: int) -> None:
        assert version > self.versions.get(key, 0), "versions must grow strictly per cell"
        self.versions[key] = version

    @rule(row=ROWS, col=COLS, value=VALUES)
    def put(self, row: str, col: str, value: bytes) -> None:
        result = self.write(op="put", row=row, col=col, value=value)
        self.model[(row, col)] = value
        self._saw((row, col), result["version"])

    @rule(row=ROWS, col=COLS)
    def delete(self, row: str, col: str) -> None:
        result = self.write(op="delete", row=row, col=col)
        assert result["deleted"] == ((row, col) in self.model)
        self.model.pop((row, col), None)

    @rule(row=ROWS, col=COLS, old=st.one_of(st.none(), VALUES), new=VALUES)
    def cput_value(self, row: str, col: str, old: bytes | None, new: bytes) -> None:
        result = self.write(op="cput", row=row, col=col, old=old, value=new)
        holds = self.model.get((row, col)) == old if old is not None else (row, col) not in self.model
        if holds:
            self.model[(row, col)] = new
            self._saw((row, col), result["version"])
        else:
            assert result["error"] == "ConditionFailed"

    @rule(row=ROWS, col=COLS, new=VALUES, stale=st.booleans())
    def cput_version(self, row: str, col: str, new: bytes, stale: bool) -> None:
        current = self.store.apply({"op": "get", "row": row, "col": col}).get("version", 0)
        wanted = current + 1 if stale else current
        result = self.write(op="cput", row=row, col=col, if_version=wanted, value=new)
        if stale:
            assert result["error"] == "ConditionFailed" and result["version"] == current
        else:
            self.model[(row, col)] = new
            self._saw((row, col), result["version"])

    @rule(row=ROWS, col=COLS, other=COLS, value=VALUES, absent=st.booleans())
    def mutate_row(self, row: str, col: str, other: str, value: bytes, absent: bool) -> None:
        conditions = [["absent", col]] if absent else []
        result = self.write(op="mutate_row", row=row, conditions=conditions,
                            mutations=[["put", col, value], ["delete", other]] if other != col
                            else [["put", col, value]])
        if absent and (row, col) in self.model:
            assert result["error"] == "ConditionFailed"
            return
        self.model[(row, col)] = value
        self._saw((row, col), result["versions"][col])
        if other != col:
            self.model.pop((row, other), None)

    @rule()
    def retry_last_write_is_answered_from_the_table(self) -> None:
        if self.seq == 0:
            return
        before = self.store.snapshot()
        again = self.store.apply({"op": "put", "row": "a", "col": "c1", "value": b"dup",
                                  "cid": 7, "seq": self.seq, "ack": self.seq - 1})
        assert "error" not in again or again["error"] != "ProtocolError"
        after = self.store.snapshot()
        assert before["shards"] == after["shards"], "a retried write must not apply twice"

    @rule()
    def snapshot_round_trip(self) -> None:
        copy = Store()
        copy.restore(self.store.snapshot())
        assert copy.snapshot() == self.store.snapshot()
        self.store = copy

    @invariant()
    def matches_model(self) -> None:
        for (row, col), value in self.model.items():
            assert self.store.apply({"op": "get", "row": row, "col": col})["value"] == value
        for row in {"a", "b", "{u}/x", "{u}/y"}:
            cells = self.store.apply({"op": "get_row", "row": row})["cells"]
            assert {c[0] for c in cells} == {c for (r, c) in self.model if r == row}
        # get_cells over every row at once: a version known is answered without its value.
        wanted = [[row, col, self.versions.get((row, col), 0) if col == "c1" else 0]
                  for row in ("a", "b", "{u}/x", "{u}/y") for col in ("c1", "c2", "c3")]
        answers = self.store.read({"op": "get_cells", "cells": wanted})["cells"]
        for (row, col, known), answer in zip(wanted, answers, strict=True):
            if (row, col) not in self.model:
                assert answer is None
            elif known and known == self.versions[(row, col)]:
                assert answer == [known]
            else:
                assert answer[1] == self.model[(row, col)]


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_out_of_order_pipelined_requests_apply_once_each() -> None:
    store = Store()
    second = store.apply({"op": "put", "row": "r", "col": "c", "value": b"2", "cid": 1, "seq": 2, "ack": 0})
    first = store.apply({"op": "put", "row": "r", "col": "c", "value": b"1", "cid": 1, "seq": 1, "ack": 0})
    assert first["version"] > second["version"]
    assert store.apply({"op": "put", "row": "r", "col": "c", "value": b"2", "cid": 1, "seq": 2,
                        "ack": 0}) == second
    assert store.apply({"op": "get", "row": "r", "col": "c"})["value"] == b"1"


def test_acknowledged_request_is_refused_not_reapplied() -> None:
    store = Store()
    store.apply({"op": "put", "row": "r", "col": "c", "value": b"1", "cid": 1, "seq": 1, "ack": 0})
    store.apply({"op": "put", "row": "r", "col": "c", "value": b"2", "cid": 1, "seq": 2, "ack": 1})
    late = store.apply({"op": "put", "row": "r", "col": "c", "value": b"1", "cid": 1, "seq": 1, "ack": 0})
    assert late["error"] == "ProtocolError"
    assert store.apply({"op": "get", "row": "r", "col": "c"})["value"] == b"2"


def test_version_grows_across_delete_and_recreate() -> None:
    store = Store()
    v1 = store.apply({"op": "put", "row": "r", "col": "c", "value": b"1", "cid": 1, "seq": 1})["version"]
    store.apply({"op": "delete", "row": "r", "col": "c", "cid": 1, "seq": 2})
    v2 = store.apply({"op": "put", "row": "r", "col": "c", "value": b"1", "cid": 1, "seq": 3})["version"]
    assert v2 > v1


def test_bad_commands_get_error_results() -> None:
    store = Store()
    assert store.apply({"op": "nope"})["error"] == "ProtocolError"
    assert store.apply({"op": "put", "row": "r", "col": "c", "value": "text", "cid": 1,
                        "seq": 1})["error"] == "ProtocolError"
    assert store.apply({"op": "put", "row": 5, "col": "c", "value": b"", "cid": 1,
                        "seq": 2})["error"] == "ProtocolError"
    assert store.apply({"op": "put", "row": "r"})["error"] == "ProtocolError"
    assert store.apply({"op": "mutate_row", "row": "r", "conditions": [["weird", "c"]],
                        "mutations": [], "cid": 1, "seq": 3})["error"] == "ProtocolError"

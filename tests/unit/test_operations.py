"""The operation registry: every operation has one line and one handler, and every
operation on shard data gets the WrongShard check."""

from __future__ import annotations

from typing import Any

import pytest

from raftkv import server, store
from raftkv.operations import OPERATIONS, Kind, ShardBy, bind_handlers
from raftkv.store import Store

# Operations that touch no shard's data through the WrongShard check: barriers,
# intents, the configuration steps (they check their configuration number) and the
# node's own.  A new operation on shard data must say ShardBy.ROW or NUMBER instead.
NOT_SHARD_DATA = {"noop", "intent", "intent_end", "expire_intents", "expire_cells",
                  "begin_config", "import_shard", "adopt_shard", "drop_shard",
                  "export_shard", "shard_state", "status", "blob_put", "blob_get",
                  "snapshot_read", "snapshot_done",
                  # a backup freezes and reads the group's whole state, every shard it holds
                  "freeze", "thaw", "backup_open", "backup_read", "backup_done"}


def test_every_operation_has_exactly_one_handler_where_it_is_answered() -> None:
    in_log = {name for name, op in OPERATIONS.items() if op.kind is not Kind.NODE}
    assert set(store._HANDLERS) == in_log
    assert set(server._SERVED) == set(OPERATIONS) - in_log
    for name, (operation, handler) in store._HANDLERS.items():
        assert operation is OPERATIONS[name] and handler is getattr(Store, f"_op_{name}")


def test_a_handler_without_a_line_or_a_line_without_a_handler_fails_at_import() -> None:
    class Unregistered(Store):
        def _op_frobnicate(self, c: dict[str, Any]) -> dict[str, Any]:
            return {}

    with pytest.raises(ImportError, match="frobnicate"):
        bind_handlers(Unregistered, "_op_", (Kind.READ, Kind.WRITE))

    class Missing:
        def _op_get(self) -> None: ...

    with pytest.raises(ImportError, match="without a handler"):
        bind_handlers(Missing, "_op_", (Kind.READ,))


def test_only_the_listed_operations_skip_the_wrong_shard_check() -> None:
    skipping = {name for name, op in OPERATIONS.items() if op.shard is ShardBy.NONE}
    assert skipping <= NOT_SHARD_DATA


@pytest.mark.parametrize("name", sorted(n for n, op in OPERATIONS.items()
                                        if op.shard is not ShardBy.NONE))
def test_every_data_operation_is_refused_on_a_shard_the_group_does_not_serve(name: str) -> None:
    group = Store(shards=4, managed=True)  # before its first configuration: serves nothing
    command = {"op": name, "row": "r", "col": "c", "shard": 1, "value": b"v", "old": None,
               "conditions": [], "mutations": [], "cells": [["r", "c", 0]], "cid": 1, "seq": 1, "ack": 0}
    answer = group.apply(command)
    assert answer["error"] == "WrongShard", answer
    if OPERATIONS[name].kind is Kind.READ:
        assert group.read(command)["error"] == "WrongShard"
    assert group.stats()["cells"] == 0


def test_a_stale_read_of_a_write_or_a_node_operation_is_refused() -> None:
    for name in ("put", "status", "no such thing"):
        assert Store().read({"op": name, "row": "r", "col": "c"})["error"] == "ProtocolError"

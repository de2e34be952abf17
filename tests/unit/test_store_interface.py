"""Every store implements the one declared interface (raftkv.interface).

mypy checks this module (setup.cfg lists it): each assignment below fails the
lint if a store's method is missing or its signature differs from the
Protocol's.  The test functions check the same at run time, parameter by
parameter, so a drift shows in the unit tests too.
"""

from __future__ import annotations

import ast
import inspect
import io
from pathlib import Path

import raftkv
import shards
from raftkv.interface import KeyValueStore, ShardedStore

from .._memstore import MemClient


def _typed_as_the_interface(memory: MemClient, group: raftkv.Client,
                            routed: shards.Client) -> list[KeyValueStore]:
    """Never called: mypy checks that each store is assignable to the Protocols."""
    sharded: list[ShardedStore] = [memory, routed]
    return [group, *sharded]


def _members(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def _differences(store: type, protocol: type) -> list[str]:
    wrong = []
    for name, wanted in _members(protocol).items():
        method = getattr(store, name, None)
        if method is None:
            wrong.append(f"{store.__qualname__} lacks {name}")
            continue
        got = inspect.signature(method)
        shape = [(p.name, p.kind, p.default) for p in got.parameters.values()]
        if shape != [(p.name, p.kind, p.default) for p in wanted.parameters.values()]:
            wrong.append(f"{store.__qualname__}.{name}{got} is not {name}{wanted}")
    return wrong


def test_every_store_has_the_interface_methods_with_the_same_parameters() -> None:
    for store in (raftkv.Client, shards.Client, MemClient):
        assert _differences(store, KeyValueStore) == []
    for store in (shards.Client, MemClient):
        assert _differences(store, ShardedStore) == []


def test_the_comparison_sees_a_drifted_signature() -> None:
    class Drifted(MemClient):
        def put(self, row: str, col: str, data: bytes) -> int:  # type: ignore[override]  # drifted on purpose
            return super().put(row, col, data)

    [difference] = _differences(Drifted, KeyValueStore)
    assert difference.startswith(f"{Drifted.__qualname__}.put(")


def test_the_in_memory_store_streams_both_ways() -> None:
    store = MemClient()
    version = store.put_stream("r", "c", io.BytesIO(b"x" * 100_000))
    assert store.put_stream("r", "d", b"small") == version + 1
    out = io.BytesIO()
    assert store.get_into("r", "c", out) == version and out.getvalue() == b"x" * 100_000
    assert store.get_into("r", "missing", out) is None


def _private_client_uses(source: str) -> list[str]:
    """``x._name`` where ``x`` is a client: ``client``, ``self._client`` or ``self.client``."""
    def is_client(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id == "client"
        return (isinstance(node, ast.Attribute) and node.attr in ("_client", "client")
                and isinstance(node.value, ast.Name) and node.value.id == "self")
    return [f"line {node.lineno}: .{node.attr}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and is_client(node.value)]


def test_raftkv_helpers_use_only_the_public_client() -> None:
    package = Path(raftkv.__file__).parent
    for module in ("transfer.py", "repair.py"):
        assert _private_client_uses((package / module).read_text()) == [], module


def test_the_private_use_check_finds_one() -> None:
    assert _private_client_uses("self._client._call({}, write=True)\n") == ["line 1: ._call"]

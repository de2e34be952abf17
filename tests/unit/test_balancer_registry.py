"""The node registry's decoding and key rules, which the balancer's discovery relies on."""

from __future__ import annotations

import time

import msgpack
import pytest

from raftkv.errors import UnavailableError
from shards.model import registry


def test_registry_cells_decode_with_aliveness():
    cell = msgpack.packb({"addr": "127.0.0.1:1", "info": {"load": 2}, "heartbeat": 100.0})
    node = registry.decode_node("frontend/f1", cell, now=105.0)
    assert node == registry.NodeInfo("frontend", "f1", "127.0.0.1:1", {"load": 2}, 100.0, True)
    stale = registry.decode_node("frontend/f1", cell, now=100.0 + registry.ALIVE_WINDOW + 0.1)
    assert stale is not None and not stale.alive


@pytest.mark.parametrize("column, value", [
    ("frontend/f1", b"\xc1"),
    ("frontend/f1", msgpack.packb({"addr": "a"})),
    ("frontend/f1", msgpack.packb({"addr": "a", "heartbeat": "soon"})),
    ("frontend/f1", msgpack.packb({"addr": "a", "heartbeat": 1.0, "info": [1]})),
    ("no-slash", msgpack.packb({"addr": "a", "heartbeat": 1.0})),
])
def test_malformed_registry_cells_are_skipped(column, value):
    assert registry.decode_node(column, value, now=0.0) is None


@pytest.mark.parametrize("kind, name", [("", "x"), ("a/b", "x"), ("frontend", "")])
def test_registry_keys_are_checked(kind, name):
    with pytest.raises(ValueError):
        registry.register(None, kind=kind, name=name, addr="h:1")  # type: ignore[arg-type]


class _FlakyStore:
    """Stands in for the store's put only: the Heartbeat's error handling is under test."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.puts: list[tuple[str, str, bytes]] = []

    def config_group(self) -> None:
        return None  # no config group: the registry row is in the storage groups

    def put(self, row: str, col: str, value: bytes) -> int:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("no leader")
        self.puts.append((row, col, value))
        return len(self.puts)


def test_heartbeat_rides_out_store_outages():
    store = _FlakyStore(failures=2)
    beat = registry.Heartbeat(store, kind="smtpd", name="s1", addr="h:25",  # type: ignore[arg-type]
                              info=lambda: {"load": 3})
    for _ in range(3):
        beat.beat()
    assert len(store.puts) == 1
    row, col, value = store.puts[0]
    assert (row, col) == (registry.REGISTRY_ROW, "smtpd/s1")
    assert msgpack.unpackb(value)["info"] == {"load": 3}


def test_heartbeat_thread_beats_until_stopped():
    store = _FlakyStore(failures=0)
    beat = registry.Heartbeat(store, kind="balancer", name="b", addr="h:80",  # type: ignore[arg-type]
                              interval=0.01).start()
    deadline = time.monotonic() + 5
    while len(store.puts) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    count = len(store.puts)
    assert count >= 3
    time.sleep(0.05)
    assert len(store.puts) == count

"""One in-process engine driven by hand, for the unit tests of raftkv.node's fixes: no tick
thread, every message it sends recorded, messages injected as a peer would send them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raftkv import node
from raftkv.node import fixes, replica
from raftkv.store import Store

from ._procs import SECRET, free_port


def variant(without: type | tuple[type, ...] | None) -> type:
    """The hardened engine, or the same engine with one fix (or several) taken out."""
    if without is None:
        return replica._Engine
    out = without if isinstance(without, tuple) else (without,)
    bases = tuple(b for b in replica._Engine.__bases__ if b not in out)
    return type("EngineWithout" + "And".join(c.__name__ for c in out), bases or (fixes._EngineBase,), {})


class Harness:
    """One engine, ticked by hand, with every message it sends recorded."""

    def __init__(self, root: Path, engine_class: type, transport: type | None = None) -> None:
        peers = tuple(f"127.0.0.1:{free_port()}" for _ in range(2))
        self.config = node.ReplicaConfig(raft_addr=f"127.0.0.1:{free_port()}", peers=peers,
                                         data_dir=root, secret=SECRET, shards=4)
        conf = replica._engine_conf(self.config, Store(4))
        conf.autoTick = False
        if transport is not None:
            engine_class = type("WithTransport", (engine_class,), {"transport_class": transport})
        self.engine = engine_class(self.config, Store(4), conf)
        self.log = self.engine._SyncObj__raftLog
        self.peer = next(n for n in self.engine._SyncObj__otherNodes
                         if n.address == peers[0])

    def deliver(self, message: dict[str, Any]) -> None:
        self.engine._SyncObj__onMessageReceived(self.peer, message)

    def last_index(self) -> int:
        return self.log[-1][1]

    def close(self) -> None:
        self.engine.destroy()
        if self.engine._snapshot_context.serializer is not None:
            self.engine._snapshot_context.serializer.stop()


def leader_with_a_confirmed_noop(h: Harness) -> int:
    """Make the engine the leader of term 1; one follower confirms its no-op (2 of 3)."""
    h.engine._SyncObj__raftCurrentTerm = 1
    h.engine._SyncObj__onBecomeLeader()   # appends its no-op entry
    noop = h.last_index()
    h.deliver({"type": "next_node_idx", "next_node_idx": noop + 1, "reset": False,
               "success": True})
    return noop

"""One append_entries per follower per tick (raftkv/node/sending.py; docs/engine-fixes.md,
"Hand-offs"), on an engine driven by hand, with the fix and without it."""

from __future__ import annotations

import msgpack
import pytest

from raftkv.node import sending

from .._engine import Harness, leader_with_a_confirmed_noop, variant
from .._procs import wait_for


@pytest.mark.parametrize("fixed", [True, False], ids=["hardened", "stock"])
def test_a_leader_sends_each_follower_one_message_a_tick(tmp_path, events, fixed) -> None:
    h = Harness(tmp_path, variant(None if fixed else sending._LeaderSendsOncePerTick))
    try:
        noop = leader_with_a_confirmed_noop(h)
        h.engine._journal.request_sync()  # what a tick would ask
        wait_for(lambda: h.log.synced_index == noop, 10, "the syncer's round", interval=0.005)
        # Both followers count as connected, so the engine sends them what it would.
        h.engine._SyncObj__connectedNodes.update(h.engine._SyncObj__otherNodes)
        for _ in range(3):
            h.engine.apply_batch(msgpack.packb([1.0]), callback=lambda *_: None)
        events.clear()
        # One tick: the no-op commits and is applied (the new commit index is news for
        # the followers), and three entries are appended.
        h.engine.doTick(0.0)
        assert h.engine._SyncObj__raftCommitIndex == noop
        assert h.last_index() == noop + 3
        sent = sum(1 for kind, what in events if (kind, what) == ("send", "append_entries"))
        # Stock: after applying, then after each entry, to each of the two followers.
        assert sent == (2 if fixed else 2 * (1 + 3))
    finally:
        h.close()

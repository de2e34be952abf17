"""The store on disk against input and accidents that must not stop or split a group.

A failure below the store stops the replica (``StateFailure``), so anything a
client can send must be an error answer instead, the same on every replica,
and must leave nothing half-done; a store a machine crash may have torn must
never be opened, nor trusted again until it has been rebuilt.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raftkv import snapshots
from raftkv.keys import shard_of
from raftkv.statedb import BOOT_FILE, StateDB, StateFailure
from raftkv.store import Store


class _Group:
    """One store fed entries in order, each a command of client 1."""

    def __init__(self, store: Store) -> None:
        self.store, self.index = store, 0

    def __call__(self, **command: object) -> dict:
        self.index += 1
        return self.store.apply_entry(
            [1000.0 + self.index, {**command, "cid": 1, "seq": self.index, "ack": self.index - 1}],
            self.index)[0]


def test_numbers_too_large_for_the_store_are_error_answers_not_failures() -> None:
    store = Store(shards=8, managed=True)
    send = _Group(store)
    assert send(op="begin_config", config=1, shards=[0, 1], incoming=[],
                outgoing=[[2, 1 << 64, ["127.0.0.1:1"]]])["error"] == "ProtocolError"
    assert store.config_num == 0  # nothing of it stayed, in memory either
    assert send(op="begin_config", config=1, shards=[0, 1], incoming=[[1, 3, ["a:1"]]],
                outgoing=[])["config_num"] == 1
    row = next(f"r{i}" for i in range(10_000) if shard_of(f"r{i}", 8) == 1)
    huge_version = send(op="import_shard", config=1, shard=1, counter=1,
                        rows=[[row, [["c", 1 << 64, b"v", False]]]])
    huge_counter = send(op="import_shard", config=1, shard=1, counter=1 << 64, rows=[])
    assert huge_version["error"] == huge_counter["error"] == "ProtocolError"
    assert store.snapshot()["shards"] == {}


def test_a_mutation_refused_half_way_leaves_nothing_behind() -> None:
    store = Store(shards=8)
    answer = _Group(store)(op="mutate_row", row="r", conditions=[],
                           mutations=[["put", "a", b"1"], ["put", "c" * 600, b"2"]])
    assert answer["error"] == "TooLarge"
    assert not store.read({"op": "get", "row": "r", "col": "a"})["found"]
    assert store.counters == {}  # no version was spent either
    # and the exactly-once table still answers the retry with the same refusal
    assert store.apply_entry([1002.0, {"op": "mutate_row", "row": "r", "conditions": [],
                                       "mutations": [], "cid": 1, "seq": 1, "ack": 0}], 2)[0] == answer


def _crash_and_reboot(state: Path) -> None:
    (state / BOOT_FILE).write_text("a boot before this one\n")


def test_a_store_a_machine_crash_may_have_torn_is_never_opened(tmp_path: Path) -> None:
    store = Store(shards=8, path=tmp_path / "state")
    _Group(store)(op="put", row="r", col="c", value=b"v")
    store.db.env.close()   # killed
    with open(tmp_path / "state" / "data.mdb", "r+b") as f:
        f.write(os.urandom(8192))   # its meta pages never reached the disk
    _crash_and_reboot(tmp_path / "state")
    again = Store(shards=8, path=tmp_path / "state")  # opens: the torn file was set aside
    assert not again.db.trusted and again.applied_index == 0


def test_an_untrusted_store_stays_so_until_it_is_rebuilt(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state")
    db.env.close()
    _crash_and_reboot(tmp_path / "state")
    first = StateDB(tmp_path / "state")
    assert not first.trusted
    first.env.close()   # the replica dies before the snapshot replaced the store
    second = StateDB(tmp_path / "state")
    assert not second.trusted, "trusted on the next start of the same boot"
    second.reset()
    second.env.close()
    assert StateDB(tmp_path / "state").trusted


def test_a_follower_ahead_of_the_send_rate_is_held_back_briefly_not_spun(tmp_path: Path) -> None:
    """The engine asks for pieces in a loop for its whole heartbeat period; each
    answer becomes a message, so the wait must be a sleep, not a flood of Nones."""
    image = tmp_path / "snapshot"
    image.write_bytes(b"x" * (8 << 20))
    outgoing = snapshots.Outgoing(image, 256 * 1024, 1e6)
    started, answers = time.monotonic(), 0
    while time.monotonic() - started <= 0.1:
        outgoing.next_piece()
        answers += 1
    outgoing.close()
    assert answers <= 0.1 / snapshots.MAX_WAIT + 3, answers


def test_a_piece_that_does_not_follow_the_last_drops_the_transfer(tmp_path: Path) -> None:
    incoming = snapshots.Incoming(tmp_path / "in")
    assert incoming.add(b"abc", 0) and incoming.add(b"de", 3)
    assert not incoming.add(b"g", 6)   # the piece at 5 was lost with a connection
    incoming.abandon()
    assert not (tmp_path / "in").exists()


class _SlowSocket:
    """A connection whose socket takes ``drains`` bytes at each flush."""

    def __init__(self, drains: int) -> None:
        self.pending, self.drains = 0, drains

    def pending_bytes(self) -> int:
        return self.pending

    def flush(self) -> None:
        self.pending = max(0, self.pending - self.drains)


def test_a_piece_waits_while_the_followers_connection_is_full(tmp_path: Path) -> None:
    """The engine appends each piece to the connection's buffer, copying it whole:
    pieces handed out faster than the socket takes them made that copying quadratic."""
    image = tmp_path / "snapshot"
    image.write_bytes(b"x" * (8 << 20))
    socket = _SlowSocket(drains=64 * 1024)
    outgoing = snapshots.Outgoing(image, 256 * 1024, 1e12, lambda: socket)
    started = time.monotonic()
    while time.monotonic() - started <= 0.1:
        if (piece := outgoing.next_piece()) is not None:
            socket.pending += len(piece[0])
        assert socket.pending <= snapshots.MAX_PENDING + 256 * 1024
    outgoing.close()


def test_the_entries_of_one_pass_commit_together_with_their_index(tmp_path: Path) -> None:
    store = Store(shards=8, path=tmp_path / "state")
    send = _Group(store)
    send(op="put", row="r", col="before", value=b"0")
    with store.applying_entries():
        for n in range(3):
            assert send(op="put", row="r", col=f"c{n}", value=b"x")["version"] > 0
        # Another thread (a stale read, the garbage collector) sees the last commit,
        # and the published count has not moved: it is set by the commit.
        with ThreadPoolExecutor(1) as other:
            assert not other.submit(store.read, {"op": "get", "row": "r", "col": "c0"}).result()["found"]
        assert store.applied == 1
        assert store.apply_entry([1.0, {"op": "put"}], 2) == []  # applied in this pass
    assert store.applied == 4 and store.applied_index == 4
    assert all(store.read({"op": "get", "row": "r", "col": f"c{n}"})["found"] for n in range(3))
    store.close()
    reopened = Store(shards=8, path=tmp_path / "state")
    assert (reopened.applied_index, reopened.applied) == (4, 4)
    reopened.close()


def test_a_failure_in_a_pass_leaves_the_store_at_the_pass_before(tmp_path: Path) -> None:
    store = Store(shards=8, path=tmp_path / "state")
    send = _Group(store)
    send(op="put", row="r", col="before", value=b"0")
    failed = False
    try:
        with store.applying_entries():
            send(op="put", row="r", col="c", value=b"x")
            store.db.env.close()  # the disk goes away under the pass
            send(op="put", row="r", col="d", value=b"x")
    except StateFailure:
        failed = True
    assert failed
    store.db.env, store.db.tables = store.db._open()
    store.reload()
    assert store.applied_index == 1  # nothing of the pass: the journal will replay it
    assert not store.read({"op": "get", "row": "r", "col": "c"})["found"]

"""get_cells on real groups: one request per group, all groups at once, answered by the
leader without a log entry (docs/store-promises.md, "The interface"; docs/engine-fixes.md,
"Reads without a log entry").  Requests are counted where the client puts them on its sockets."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import shards
from raftkv.client import INLINE_LIMIT
from raftkv.connection import Connection
from raftkv.interface import Cell, StaleCell, Unchanged

from ..cluster import KVCluster, row_per_shard, running

pytestmark = pytest.mark.cluster

DELAY = 0.3  # seconds a group's requests are held back in the concurrency check


@dataclass
class Sent:
    op: str
    addr: str
    at: float
    answered: float = 0.0


@contextmanager
def sockets_watched(hold: frozenset[str] = frozenset()) -> Iterator[list[Sent]]:
    """Every request this process sends, with when it left and when its answer came;
    requests to the addresses in ``hold`` leave :data:`DELAY` late."""
    sent: list[Sent] = []
    lock = threading.Lock()
    original = Connection.send

    def send(conn: Connection, request: dict[str, Any], payload: bytes | None = None) -> Any:
        if conn.addr in hold:
            time.sleep(DELAY)
        record = Sent(str(request.get("op")), conn.addr, time.monotonic())
        with lock:
            sent.append(record)
        future = original(conn, request, payload)
        future.add_done_callback(lambda _f: setattr(record, "answered", time.monotonic()))
        return future

    Connection.send = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Connection.send = original  # type: ignore[method-assign]


def _group_rows(client: shards.Client) -> dict[int, list[str]]:
    rows: dict[int, list[str]] = {}
    for shard, row in sorted(row_per_shard(client, "u").items()):
        rows.setdefault(client.shard_map.group_of(shard), []).append(row)
    return rows


def _applied_commands(client: shards.Client) -> dict[str, int]:
    return {s["name"]: s["applied_commands"] for s in client.status()
            if s["alive"] and s.get("role") == "leader"}


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVCluster]:
    with running(KVCluster(tmp_path_factory.mktemp("cells") / "kv", groups=2)) as cluster:
        yield cluster


def test_get_cells_reads_both_groups_with_one_request_each(two_groups: KVCluster) -> None:
    with two_groups.client() as client, two_groups.client() as writer:
        rows = _group_rows(client)
        (a, a2), (b, _b2) = rows[1][:2], rows[2][:2]
        big = os.urandom(3 * INLINE_LIMIT)  # a blob: its bytes come back as get's do
        versions = [writer.put(a, "x", b"ax"), writer.put(b, "y", b"by"),
                    writer.put(b, "blob", big), writer.put(a2, "x", b"a2")]
        wanted = [(a, "x"), (b, "y"), (b, "blob"), (a2, "x"), (a, "absent")]
        addrs = {gid: set(client.group_client(gid).addrs) for gid in (1, 2)}
        client.get_cells(wanted[:2])  # each group's leader found (a NotLeader hint costs one)

        with sockets_watched() as sent:
            answers = client.get_cells(wanted)
        assert answers == [Cell(b"ax", versions[0]), Cell(b"by", versions[1]),
                           Cell(big, versions[2]), Cell(b"a2", versions[3]), None]
        reads = [s for s in sent if s.op == "get_cells"]
        assert len(reads) == 2, [(s.op, s.addr) for s in sent]
        assert {gid for gid, a in addrs.items() for s in reads if s.addr in a} == {1, 2}

        # What the caller holds comes back Unchanged, with no value and no chunk fetched.
        with sockets_watched() as sent:
            answers = client.get_cells(wanted, known=[*versions, 0])
        assert answers == [*(Unchanged(v) for v in versions), None]
        assert sorted(s.op for s in sent) == ["get_cells", "get_cells"]

        stale = client.get_cells(wanted[:2], consistency="stale")
        assert all(isinstance(c, StaleCell) for c in stale)


def test_get_cells_sees_each_write_acknowledged_before_it(two_groups: KVCluster) -> None:
    """Linearizable: a write acknowledged to one client is in the next get_cells of
    another, on either group; and the reads add no entry to either group's log."""
    with two_groups.client() as reader, two_groups.client() as writer:
        rows = _group_rows(reader)
        cells = [(rows[1][0], "n"), (rows[2][0], "n")]
        known = [0, 0]
        before = _applied_commands(reader)
        for i in range(30):
            target = i % 2
            known_before = list(known)
            known[target] = writer.put(*cells[target], b"%d" % i)
            answers = reader.get_cells(cells, known=known_before)
            fresh = answers[target]
            assert isinstance(fresh, Cell) and fresh == Cell(b"%d" % i, known[target]), answers
            if known_before[1 - target]:
                assert answers[1 - target] == Unchanged(known_before[1 - target])
        after = _applied_commands(reader)
    # 30 writes, 15 to each group; the reads are not there (a time entry may be).
    assert set(before) == set(after) and len(after) == 2
    assert all(after[name] - before[name] <= 15 + 2 for name in after), (before, after)


@pytest.mark.parametrize("held", [1, 2])
def test_get_cells_sends_to_every_group_before_any_answers(two_groups: KVCluster,
                                                           held: int) -> None:
    """The requests leave together: one group's held back, the other's is sent (and
    answered) meanwhile, whichever group comes first."""
    with two_groups.client() as client:
        rows = _group_rows(client)
        wanted = [(rows[1][0], "c"), (rows[2][0], "c")]
        client.get_cells(wanted)  # connections open, leaders known
        hold = frozenset(client.group_client(held).addrs)
        with sockets_watched(hold) as sent:
            client.get_cells(wanted)
    [slow] = [s for s in sent if s.addr in hold]
    [quick] = [s for s in sent if s.addr not in hold]
    assert quick.at < slow.at and quick.answered < slow.answered, sent

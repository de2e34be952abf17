"""Shard ownership in the state machine, and the steps by which a group changes configuration."""

from __future__ import annotations

from raftkv import protocol
from raftkv.keys import shard_of
from raftkv.store import Store
from tests._memstore import blob_cells_of, intents_of, shards_of

SHARDS = 8


class Writer:
    """One client's session: every write carries (cid, seq, ack)."""

    def __init__(self, cid: int) -> None:
        self.cid, self.seq = cid, 0

    def __call__(self, store: Store, **command) -> dict:
        self.seq += 1
        return store.apply({**command, "cid": self.cid, "seq": self.seq, "ack": self.seq - 1})

    def retry(self, store: Store, **command) -> dict:
        """The last request again, with the same sequence number."""
        return store.apply({**command, "cid": self.cid, "seq": self.seq, "ack": self.seq - 1})


def _row_in(shard: int, n: int = 0) -> str:
    i, found = 0, -1
    while True:
        row = f"{{r{i}}}/x"
        if shard_of(row, SHARDS) == shard:
            found += 1
            if found == n:
                return row
        i += 1


ADDRS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def _peers(pairs) -> list[list]:
    return [[shard, gid, ADDRS] for shard, gid in pairs]


def _begin(store: Store, admin: Writer, config: int, shards, incoming=(), outgoing=()) -> dict:
    """``incoming``: (shard, old owner) pairs; ``outgoing``: (shard, new owner) pairs."""
    return admin(store, op="begin_config", config=config, shards=list(shards),
                 incoming=_peers(incoming), outgoing=_peers(outgoing))


def _export_all(source: Store, shard: int, config: int) -> list[dict]:
    pages, after = [], None
    for _ in range(1000):
        page = source.read({"op": "export_shard", "config": config, "shard": shard,
                            "after": after})
        assert "error" not in page, page
        pages.append(page)
        after = page["after"]
        if after is None:
            return pages
    raise AssertionError("the export never ended")


def _move(source: Store, dest: Store, admin: Writer, shard: int, config: int) -> None:
    """``shard`` from ``source`` (holding shards 0..SHARDS-1) to ``dest`` (holding none)."""
    keep = [s for s in range(SHARDS) if s != shard]
    assert "error" not in _begin(source, admin, config, keep, outgoing=[(shard, 2)])
    assert "error" not in _begin(dest, admin, config, [shard], incoming=[(shard, 1)])
    for page in _export_all(source, shard, config):
        done = admin(dest, op="import_shard", config=config, shard=shard,
                     rows=page["rows"], counter=page["counter"])
        assert "error" not in done, done
    assert "error" not in admin(dest, op="adopt_shard", config=config, shard=shard)
    assert "error" not in admin(dest, op="adopt_shard", config=config, shard=shard)  # a retry
    assert "error" not in admin(source, op="drop_shard", config=config, shard=shard)
    assert "error" not in admin(source, op="drop_shard", config=config, shard=shard)
    for store in (source, dest):
        state = store.apply({"op": "shard_state"})
        assert state["config_num"] == config and not state["incoming"] and not state["frozen"]


def test_an_unmanaged_group_serves_every_shard_and_a_managed_one_only_its_own() -> None:
    store, admin = Store(SHARDS), Writer(1)
    row0, row1 = _row_in(0), _row_in(1)
    assert "error" not in admin(store, op="put", row=row1, col="c", value=b"v")
    assert _begin(store, admin, 1, [0])["config_num"] == 1
    assert "error" not in admin(store, op="put", row=row0, col="c", value=b"v")
    refused = store.apply({"op": "get", "row": row1, "col": "c"})
    assert refused["error"] == "WrongShard" and refused["shard"] == 1
    assert refused["config_num"] == 1
    assert store.read({"op": "get", "row": row1, "col": "c"})["error"] == "WrongShard"
    assert store.apply({"op": "scan", "shard": 1})["error"] == "WrongShard"


def test_moving_a_shard_keeps_cells_versions_and_exactly_once() -> None:
    source, dest, admin, user = Store(SHARDS), Store(SHARDS), Writer(1), Writer(2)
    _begin(source, admin, 1, range(SHARDS))
    _begin(dest, admin, 1, [])
    shard = 3
    rows = [_row_in(shard, n) for n in range(5)]
    versions = {row: user(source, op="put", row=row, col="c", value=row.encode())["version"]
                for row in rows}
    user(source, op="put", row=rows[0], col="big", value=b"manifest", blob=True)
    last = user(source, op="put", row=rows[1], col="c", value=b"last")  # its answer may be lost

    _move(source, dest, admin, shard, config=2)

    # The retried write that the source applied before the freeze gets its stored answer...
    assert user.retry(source, op="put", row=rows[1], col="c", value=b"last") == last
    # ...while a new write there is refused, and lands at the destination instead.
    assert user(source, op="put", row=rows[2], col="c", value=b"new")["error"] == "WrongShard"
    moved = dest.apply({"op": "get", "row": rows[0], "col": "c"})
    assert moved["value"] == rows[0].encode() and moved["version"] == versions[rows[0]]
    assert dest.apply({"op": "get", "row": rows[1], "col": "c"})["value"] == b"last"
    assert blob_cells_of(dest)[(rows[0], "big")] == b"manifest"
    newer = user(dest, op="put", row=rows[2], col="c", value=b"new")["version"]
    assert newer > max(versions.values())  # versions keep growing across the move
    # The source holds nothing of the shard any more, blobs included.
    assert shard not in shards_of(source) and (rows[0], "big") not in blob_cells_of(source)


def test_steps_are_refused_out_of_order_or_with_another_configuration() -> None:
    store, admin = Store(SHARDS), Writer(1)
    assert store.apply({"op": "export_shard", "config": 1, "shard": 2})["error"] == "ConfigurationPending"
    assert admin(store, op="drop_shard", config=1, shard=2)["error"] == "ConfigurationPending"
    assert _begin(store, admin, 2, [0])["error"] == "ConfigurationPending"  # configurations go in order
    _begin(store, admin, 1, [0, 1, 4])
    _begin(store, admin, 2, [0, 1, 4, 5], incoming=[(5, 7)], outgoing=[(2, 7)])
    # Not settled yet: configuration 3 must wait; a stale or future step is refused.
    assert _begin(store, admin, 3, [0])["error"] == "ConfigurationPending"
    for config in (1, 3):
        for command in ({"op": "import_shard", "shard": 5, "rows": [], "counter": 0},
                        {"op": "adopt_shard", "shard": 5}, {"op": "drop_shard", "shard": 2}):
            assert admin(store, config=config, **command)["error"] == "ConfigurationPending"
    assert store.apply({"op": "export_shard", "config": 1, "shard": 2})["error"] == "ConfigurationPending"
    assert store.apply({"op": "export_shard", "config": 3, "shard": 2})["error"] == "ConfigurationPending"
    assert "error" not in store.apply({"op": "export_shard", "config": 2, "shard": 2})
    assert admin(store, op="import_shard", config=2, shard=4, rows=[],
                 counter=0)["error"] == "ConfigurationPending"  # shard 4 is served here
    wrong_row = [[_row_in(6), [["c", 1, b"v", False]]]]
    assert admin(store, op="import_shard", config=2, shard=5, rows=wrong_row,
                 counter=1)["error"] == "ProtocolError"
    assert store.apply({"op": "get", "row": _row_in(5), "col": "c"})["error"] == "WrongShard"


def test_ownership_survives_a_snapshot() -> None:
    store, admin = Store(SHARDS), Writer(1)
    _begin(store, admin, 1, [0, 1, 2])
    _begin(store, admin, 2, [0, 2, 3], incoming=[(3, 9)], outgoing=[(1, 8)])
    copy = Store(SHARDS)
    copy.restore(store.snapshot())
    assert (copy.config_num, copy.owned) == (2, {0, 2})
    assert copy.incoming == {3: (9, tuple(ADDRS))} and copy.frozen == {1: (8, tuple(ADDRS))}
    # A managed group's snapshot from before its first configuration serves nothing.
    fresh = Store(SHARDS, managed=True)
    fresh.restore(Store(SHARDS, managed=True).snapshot())
    assert fresh.owned == set()


def test_malformed_commands_get_error_results_never_exceptions() -> None:
    # An exception out of apply would stop the Raft engine at that entry on every replica.
    store, admin = Store(SHARDS), Writer(1)
    _begin(store, admin, 1, [0])
    for command in ({"op": "scan", "shard": [1]}, {"op": "scan", "shard": "x"},
                    {"op": "get", "row": 5, "col": "c"}, {"op": "export_shard", "shard": None},
                    {"op": "export_shard", "shard": 0}):
        assert "error" in store.apply(command), command
        assert "error" in store.read(command), command
    _begin(store, admin, 2, [3], incoming=[(3, 2)], outgoing=[(0, 2)])
    for bad in ({"shards": "x", "incoming": [], "outgoing": []},
                {"shards": [99], "incoming": [], "outgoing": []},
                {"shards": [1], "incoming": [[2, 1, ADDRS]], "outgoing": []},
                {"shards": [1], "incoming": [], "outgoing": [[1, 2, ADDRS]]},
                {"shards": [1], "incoming": [[1, 2]], "outgoing": []},
                {"shards": [1], "incoming": [[1, 2, []]], "outgoing": []},
                {"shards": [1], "incoming": [[1, 2, [7]]], "outgoing": []}, {"shards": [1]}):
        assert "error" in admin(Store(SHARDS), op="begin_config", config=1, **bad), bad
    good = [_row_in(3), [["c", 1, b"v", False]]]
    for rows in ([[5, []]], [good, ["{r0}/x", [[1, 2, 3, 4]]]], "not rows", [[None]],
                 [good, [_row_in(3, 1), [["c", 1, "not bytes", False]]]]):
        result = admin(store, op="import_shard", config=2, shard=3, rows=rows, counter=0)
        assert result["error"] == "ProtocolError", result
        assert 3 not in shards_of(store)  # all or nothing: the good row before it stayed out
    for after in ("row", [1, 2], ["a"]):
        command = {"op": "export_shard", "config": 2, "shard": 0, "after": after}
        assert store.read(command)["error"] == "ProtocolError", after
    nan_lease = admin(store, op="intent", upload=1, digests=[], lease=float("nan"), now=1.0,
                      new=True)
    assert nan_lease["error"] == "ProtocolError" and not intents_of(store)


def test_a_refused_write_keeps_its_upload_intent() -> None:
    store, admin, user = Store(SHARDS), Writer(1), Writer(2)
    _begin(store, admin, 1, [0])
    assert "error" not in user(store, op="intent", upload=7, digests=[b"d" * 32], lease=60.0,
                               now=1.0, new=True)
    refused = user(store, op="put", row=_row_in(1), col="c", value=b"manifest", blob=True,
                   upload=7)
    assert refused["error"] == "WrongShard"
    assert 7 in intents_of(store)  # the chunks stay protected while the client goes elsewhere


def test_a_managed_group_serves_nothing_before_its_first_configuration() -> None:
    # It may have come up late: others serve its future shards meanwhile.
    store, admin = Store(SHARDS, managed=True), Writer(1)
    for shard in range(SHARDS):
        refused = admin(store, op="put", row=_row_in(shard), col="c", value=b"v")
        assert refused["error"] == "WrongShard", shard
    _begin(store, admin, 1, [0, 1])
    assert "error" not in admin(store, op="put", row=_row_in(1), col="c", value=b"v")
    assert admin(store, op="put", row=_row_in(2), col="c", value=b"v")["error"] == "WrongShard"


def test_a_row_larger_than_a_frame_is_exported_in_pages_within_the_row() -> None:
    source, dest, admin, user = Store(SHARDS), Store(SHARDS), Writer(1), Writer(2)
    _begin(source, admin, 1, range(SHARDS))
    _begin(dest, admin, 1, [])
    wide, small = _row_in(3, 0), _row_in(3, 1)
    for i in range(2500):  # 2500 cells of 2 KB: 5 MB, more than one answer frame
        user(source, op="put", row=wide, col=f"c{i:05}", value=bytes([i % 251]) * 2000)
    user(source, op="put", row=small, col="only", value=b"x")
    keep = [s for s in range(SHARDS) if s != 3]
    _begin(source, admin, 2, keep, outgoing=[(3, 2)])
    _begin(dest, admin, 2, [3], incoming=[(3, 1)])
    pages = _export_all(source, 3, 2)
    assert len(pages) >= 5
    for page in pages:
        assert len(protocol.encode({"id": 1, "ok": page})) < protocol.MAX_FRAME
        assert "error" not in admin(dest, op="import_shard", config=2, shard=3,
                                    rows=page["rows"], counter=page["counter"])
    assert shards_of(dest)[3] == shards_of(source)[3]


def test_an_import_needs_its_pull_intent_alive_and_retires_it() -> None:
    dest, admin = Store(SHARDS), Writer(1)
    _begin(dest, admin, 1, [])
    _begin(dest, admin, 2, [4], incoming=[(4, 1)])
    rows = [[_row_in(4), [["big", 7, b"manifest", True]]]]
    expired = admin(dest, op="import_shard", config=2, shard=4, rows=rows, counter=7, upload=5)
    assert expired["error"] == "UploadExpired" and 4 not in shards_of(dest)
    assert "error" not in admin(dest, op="intent", upload=5, digests=[b"d" * 32], lease=60.0,
                                now=1.0, new=True)
    assert "error" not in admin(dest, op="import_shard", config=2, shard=4, rows=rows,
                                counter=7, upload=5)
    assert 5 not in intents_of(dest) and blob_cells_of(dest)[(_row_in(4), "big")] == b"manifest"
    # The same cell again, now small: it no longer holds chunks alive.
    small = [[_row_in(4), [["big", 8, b"small", False]]]]
    assert "error" not in admin(dest, op="import_shard", config=2, shard=4, rows=small,
                                counter=8)
    assert (_row_in(4), "big") not in blob_cells_of(dest)

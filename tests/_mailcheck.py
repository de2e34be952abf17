"""Invariants of a mailbox (shards.model.mail) that every test of it can check.

Read straight from the store: each folder's counts against its records, every
pointer against the record it names, the usage cell against the sizes, and
every listed message's bytes present.
"""

from __future__ import annotations

import msgpack

from shards.model.mail import layout


def check_mailbox(client, user: str) -> dict[int, list[dict]]:
    """Assert the invariants; the records by folder id (UID order)."""
    row = layout.mailbox_row(user)
    cells = client.get_row(row)
    folders = {int(c[2:]): msgpack.unpackb(v.value) for c, v in cells.items() if c.startswith("f:")}
    records: dict[int, list[dict]] = {fid: [] for fid in folders}
    for column, cell in cells.items():
        if column.startswith("u:"):
            _, fid, uid = column.split(":")
            assert int(fid) in folders, f"record {column} in no folder"
            records[int(fid)].append({**msgpack.unpackb(cell.value), "uid": int(uid)})
    for fid, folder in folders.items():
        mine = records[fid]
        assert folder["exists"] == len(mine), (fid, folder, len(mine))
        assert folder["unseen"] == sum("\\Seen" not in r["flags"] for r in mine), (fid, folder)
        assert all(r["uid"] < folder["uidnext"] for r in mine)
        assert all(r["modseq"] <= folder["modseq"] for r in mine)
    pointers = {c[2:]: msgpack.unpackb(v.value) for c, v in cells.items() if c.startswith("m:")}
    listed = {r["id"]: [fid, r["uid"]] for fid, rs in records.items() for r in rs}
    assert pointers == listed, "every message has one pointer, to its record"
    total = sum(r["size"] for rs in records.values() for r in rs)
    if "usage" in cells:
        assert msgpack.unpackb(cells["usage"].value) == total
    for msg_id in listed:
        assert client.get(layout.message_row(user, msg_id), "raw") is not None, msg_id
    return records


def message_rows(client, user: str) -> set[str]:
    """The ids of every message row of ``user`` (listed or not)."""
    shard = client.shard_of(f"{{{user}}}/")
    rows = client.scan(shard, "", 10_000)
    prefix = f"{{{user}}}/msg:"
    return {row[len(prefix):] for row, cells in rows if row.startswith(prefix) and cells}

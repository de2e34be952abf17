"""The writes of the mail code before layout 2 (shards/model/mailbox.py and portal/readmarks.py
at fb647ca^), transcribed for unit tests on MemClient: what an old smtpd or portal does
to a mailbox during a rolling upgrade.  tests/integration/test_mail_mixed_versions.py
runs the old code itself.

Each function does what the old one did, call for call, minus what does not change
the store (header parsing is the new module's; the old one cut the same fields).
"""

from __future__ import annotations

import random
import time

import msgpack

from raftkv.errors import ConditionFailed
from shards.model.mail import layout
from shards.model.mail.headers import parse_headers
from shards.model.mail.messages import dedup_column

ATTEMPTS = 50


def _unpack(value: bytes) -> dict | None:
    try:
        meta = msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    return meta if isinstance(meta, dict) else None


def _usage(client, user: str) -> tuple[int, int]:
    row = layout.mailbox_row(user)
    cell = client.get(row, "usage")
    if cell is not None:
        try:
            value = msgpack.unpackb(cell.value)
        except (ValueError, msgpack.UnpackException):
            value = None
        if isinstance(value, int) and not isinstance(value, bool):
            return value, cell.version
    cells = client.get_row(row, prefix="m:")
    total = sum(max(0, int((_unpack(c.value) or {}).get("size", 0) or 0)) for c in cells.values())
    return total, 0 if cell is None else cell.version


def deliver(client, user: str, raw: bytes, *, folder: str = "inbox", unread: bool = True) -> str:
    """Old ``mailbox.deliver``: raw bytes, then the ``m:`` dict, usage and dedup cell."""
    headers = parse_headers(raw)
    row = layout.mailbox_row(user)
    column = dedup_column(folder, headers.message_id) if headers.message_id else None
    if column is not None:
        existing = client.get(row, column)
        if existing is not None:
            return existing.value.decode("ascii")
    msg_id = layout.new_message_id()
    meta = {"sender": headers.sender, "subject": headers.subject, "date": time.time(),
            "unread": unread, "size": len(raw), "folder": folder,
            "message_id": headers.message_id, "to": headers.to}
    client.put(layout.message_row(user, msg_id), "raw", raw)
    for _ in range(ATTEMPTS):
        used, version = _usage(client, user)
        conditions = [("version", "usage", version)]
        mutations = [("put", "m:" + msg_id, msgpack.packb(meta)),
                     ("put", "usage", msgpack.packb(used + len(raw)))]
        if column is not None:
            conditions.append(("absent", column))
            mutations.append(("put", column, msg_id.encode("ascii")))
        try:
            client.mutate_row(row, conditions, mutations)
            return msg_id
        except ConditionFailed:
            existing = client.get(row, column) if column is not None else None
            if existing is not None:
                client.delete(layout.message_row(user, msg_id), "raw")
                return existing.value.decode("ascii")
            time.sleep(random.uniform(0, 0.001))
    raise ConditionFailed("kept changing")


def page_read(client, user: str, msg_id: str):
    """What the old message page read before its read mark: the ``m:`` cell."""
    return client.get(layout.mailbox_row(user), "m:" + msg_id)


def mark_read(client, user: str, msg_id: str, seen_cell=None) -> None:
    """Old ``readmarks.write`` (after the page read ``seen_cell``; now, if None): a CPUT of
    ``{**dict, "unread": False}`` on that version (a pointer makes ``{"unread": False}``),
    then old ``mailbox.mark_read`` (dicts only) when the version moved on."""
    row, column = layout.mailbox_row(user), "m:" + msg_id
    cell = seen_cell if seen_cell is not None else client.get(row, column)
    if cell is None:
        return
    if not bool((_unpack(cell.value) or {}).get("unread", True)):
        return  # the old page writes no mark for a message it thinks read
    try:
        client.cput(row, column, msgpack.packb({**(_unpack(cell.value) or {}), "unread": False}),
                    if_version=cell.version)
        return
    except ConditionFailed:
        pass
    for _ in range(10):
        cell = client.get(row, column)
        meta = None if cell is None else _unpack(cell.value)
        if cell is None or meta is None or not meta.get("unread", True):
            return
        try:
            client.cput(row, column, msgpack.packb({**meta, "unread": False}),
                        if_version=cell.version)
            return
        except ConditionFailed:
            continue


def delete_message(client, user: str, msg_id: str) -> bool:
    """Old ``mailbox.delete_message``: the ``m:`` cell and its dict's size off usage (one
    mutation), then the raw bytes."""
    row, column = layout.mailbox_row(user), "m:" + msg_id
    existed = False
    for _ in range(ATTEMPTS):
        meta_cell = client.get(row, column)
        if meta_cell is None:
            break
        usage_cell = client.get(row, "usage")
        used = None
        if usage_cell is not None:
            value = msgpack.unpackb(usage_cell.value)
            used = value if isinstance(value, int) else None
        conditions = [("version", column, meta_cell.version)]
        mutations = [("delete", column)]
        if used is not None and usage_cell is not None:
            size = max(0, int((_unpack(meta_cell.value) or {}).get("size", 0) or 0))
            conditions.append(("version", "usage", usage_cell.version))
            mutations.append(("put", "usage", msgpack.packb(max(0, used - size))))
        try:
            client.mutate_row(row, conditions, mutations)
            existed = True
            break
        except ConditionFailed:
            continue
    client.delete(layout.message_row(user, msg_id), "raw")
    return existed

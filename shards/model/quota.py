"""A user's own drive quota, set by an administrator; without one, the frontend's setting.

The limit is one cell beside the usage counter, in the user's drive row::

    row {<user>}/drive   column q:limit   msgpack int: bytes of file content allowed

Beside ``q:used`` it shares that row's shard, so a drive page confirms both in the
one round trip it already makes (``portal/folders.py``), and an upload checks the
limit it read against the usage it updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from .drive import drive_row

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

LIMIT_COL = "q:limit"
MAX_LIMIT = 1 << 50  # a petabyte: anything larger is a typing mistake


def limit_key(user: str) -> tuple[str, str]:
    """The (row, column) of ``user``'s own limit."""
    return drive_row(user), LIMIT_COL


def limit_of(cell: Cell | None, default: int) -> int:
    """The limit a read cell holds; ``default`` (the frontend's setting) when none is set."""
    if cell is None:
        return default
    try:
        value = msgpack.unpackb(cell.value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else default


def limit(client: KeyValueStore, user: str, default: int) -> int:
    """``user``'s drive quota in bytes."""
    return limit_of(client.get(*limit_key(user)), default)


def own_limit(client: KeyValueStore, user: str) -> int | None:
    """``user``'s own limit, or None when the frontend's setting applies."""
    own = limit_of(client.get(*limit_key(user)), -1)
    return own if own >= 0 else None


def set_limit(client: KeyValueStore, user: str, limit_bytes: int | None) -> None:
    """Give ``user`` a quota of their own; None returns them to the frontend's setting.

    A limit below what the user holds takes nothing away: uploads are refused until
    they delete enough (the drive's own check, ``shards/model/drive/changes.py``).
    """
    if limit_bytes is None:
        client.delete(*limit_key(user))
        return
    if not 0 <= limit_bytes <= MAX_LIMIT:
        raise ValueError(f"a quota is 0 to {MAX_LIMIT:,} bytes")
    client.put(*limit_key(user), msgpack.packb(limit_bytes))

"""A file's bytes and its earlier versions' bytes, and dropping them for good.

A file's current bytes are in the ``file:`` row of its :attr:`~.records.Item.content_id`
(its own id until it is first overwritten); each kept earlier version is a cell
``v:<file id>/<content id>`` of the drive row naming another such row
(:mod:`.versions`).  Removing a file for good is one ``mutate_row`` that unlinks it,
frees its current bytes' share of the quota and leaves a ``t:<file id>`` marker
``{k: "f", c: content id}``; :func:`finish_file` then drops the bytes, the versions
(their cells and quota share in one more mutation) and the marker, in an order that
any frontend can repeat after a crash.  A single dropped version (the eleventh) leaves
a marker of its own, ``t:<content id>`` ``{k: "c"}``: bytes only, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, RaftKVError

from ..retry import attempts
from .reads import usage_cell
from .records import ATTEMPTS, DATA_COL, USAGE_COL, content_row, drive_row, marker_col, pack, unpack

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

VERSION_PREFIX = "v:"
MARK_FILE, MARK_FOLDER, MARK_CONTENT = "f", "d", "c"


@dataclass(frozen=True)
class Content:
    """Bytes stored for a file but not yet its current ones: what
    :func:`.changes.put_content` made of an upload (``file:<id>`` row, size, type)."""

    id: str
    size: int
    ctype: str = "application/octet-stream"


@dataclass(frozen=True)
class Version:
    """An earlier version of a file: its bytes' row, and what it was then."""

    content: str       # the id of the ``file:`` row holding its bytes
    size: int
    ctype: str
    modified: float    # when these bytes became the file's
    at: float          # when they stopped being the current ones
    version: int       # the ``v:`` cell's version


def version_col(file_id: str, content_id: str = "") -> str:
    """The cell of one version (or, without ``content_id``, the prefix of them all)."""
    return f"{VERSION_PREFIX}{file_id}/{content_id}"


def version_value(size: int, ctype: str, modified: float, at: float) -> bytes:
    return pack({"size": size, "ctype": ctype, "modified": modified, "at": at})


def version_from(column: str, cell: Cell) -> Version | None:
    record = unpack(cell.value)
    content = column.rpartition("/")[2]
    if not isinstance(record, dict) or not content:
        return None
    return Version(content=content, size=int(record.get("size", 0)),
                   ctype=str(record.get("ctype", "application/octet-stream")),
                   modified=float(record.get("modified", 0.0)),
                   at=float(record.get("at", 0.0)), version=cell.version)


def read_versions(client: KeyValueStore, user: str, file_id: str) -> list[Version]:
    """The kept versions of a file, newest first (one read)."""
    cells = client.get_row(drive_row(user), prefix=version_col(file_id))
    found = [v for column, cell in cells.items() if (v := version_from(column, cell)) is not None]
    return sorted(found, key=lambda v: v.at, reverse=True)


def file_marker(content_id: str, now: float) -> bytes:
    """The ``t:`` marker's value for a file removed for good (bytes and versions to drop)."""
    return pack({"k": MARK_FILE, "at": now, "c": content_id})


def drop_bytes(client: KeyValueStore, user: str, content_id: str) -> None:
    """Delete one ``file:`` row's bytes (nothing happens if they are gone already)."""
    client.delete(content_row(user, content_id), DATA_COL)


def drop_unlinked(client: KeyValueStore, user: str, content_id: str) -> None:
    """Delete bytes nothing refers to (an upload refused before linking); errors ignored."""
    try:
        drop_bytes(client, user, content_id)
    except RaftKVError:
        pass  # unreachable bytes; nothing points at them


def finish_file(client: KeyValueStore, user: str, file_id: str, content_id: str = "") -> None:
    """After a file was unlinked for good (its ``t:`` marker set): drop its current
    bytes, its versions' bytes, then the versions' cells and quota share (one
    mutation), then the marker.  Idempotent: a crash anywhere leaves the marker."""
    row = drive_row(user)
    for content in {content_id or file_id, file_id}:
        drop_bytes(client, user, content)
    for _ in attempts(ATTEMPTS):
        versions = read_versions(client, user, file_id)
        if not versions:
            break
        for version in versions:
            drop_bytes(client, user, version.content)
        used, used_version = usage_cell(client, user)
        freed = sum(v.size for v in versions)
        # Conditioned on each version cell as read: two frontends finishing the same
        # file free its versions' quota once.
        try:
            client.mutate_row(row, [("version", USAGE_COL, used_version),
                                    *(("version", version_col(file_id, v.content), v.version)
                                      for v in versions)],
                              [*(("delete", version_col(file_id, v.content)) for v in versions),
                               ("put", USAGE_COL, pack(max(0, used - freed)))])
            break
        except ConditionFailed:
            continue
    else:
        raise ConditionFailed("the quota kept changing; try again")
    client.delete(row, marker_col(file_id))

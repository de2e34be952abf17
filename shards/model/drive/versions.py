"""Overwriting a file keeps its earlier versions: the last :data:`MAX_VERSIONS` of them.

A file keeps its id, name and place when overwritten; only which ``file:`` row holds its
current bytes changes (the index's ``c``, see :mod:`.contents`).  New bytes are streamed
into a row of their own first (:func:`.changes.put_content`), so nothing is ever copied;
then one ``mutate_row``, conditioned on the file's index version (the one the caller
saw: ``expect``) and on the quota cell, does everything at once:

- the current bytes become a version: a cell ``v:<file id>/<content id>``;
- the index and the entry name the new bytes, with their size, type and time;
- the quota grows by the new bytes (versions count, as the Trash does);
- past :data:`MAX_VERSIONS`, the oldest version's cell goes and ``t:<its content>``
  marks its bytes for clean-up (dropped right after, or by :func:`.cleanup.purge`).

Restoring a version is the same step the other way round: the current bytes become a
version and the chosen one current; the quota does not change.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, Timeout

from ..errors import NameTaken, NoSuchItem
from ..retry import attempts
from .changes import over_quota
from .contents import (
    MARK_CONTENT,
    Content,
    Version,
    drop_bytes,
    drop_unlinked,
    read_versions,
    version_col,
    version_from,
    version_value,
)
from .reads import get_file, usage_cell
from .records import (
    ATTEMPTS,
    DATA_COL,
    FILE,
    USAGE_COL,
    Item,
    content_row,
    drive_row,
    index_col,
    is_id,
    link,
    marker_col,
    pack,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from raftkv.interface import Condition, KeyValueStore, Mutation

MAX_VERSIONS = 10  # earlier versions kept per file


class Changed(NameTaken):
    """The file changed (or went) since the caller read it: a conflict, as a name taken
    is (a replace after a question, a WebDAV If-Match, a restore from an old page)."""


def overwrite(client: KeyValueStore, user: str, file_id: str, content: Content, *,
              quota: int, expect: int | None = None, now: float | None = None) -> Item:
    """Make ``content`` (bytes stored by :func:`.changes.put_content`) the file's current
    bytes, keeping the bytes it had as a version: one ``mutate_row``.

    :param expect: the file's index version the caller saw (an ETag); None: whatever it is.
    :raises Changed: the file is not at ``expect`` any more.
    :raises NoSuchItem: no such file.  :raises QuotaExceeded: the new bytes do not fit.
    On any of these (not on a timeout, after which it may have landed) the new bytes are
    dropped.
    """
    try:
        item, dropped = _overwrite(client, user, file_id, content, quota=quota, expect=expect,
                                   now=now)
    except BaseException as exc:
        if not isinstance(exc, Timeout):
            drop_unlinked(client, user, content.id)
        raise
    _finish_drops(client, user, dropped)  # the new bytes are the file's now, whatever happens
    return item


def overwrite_with(client: KeyValueStore, user: str, file_id: str, content: Content, *,
                   quota: int, expect: int | None, now: float | None = None,
                   conditions: Sequence[Condition] = (), mutations: Sequence[Mutation] = ()
                   ) -> Item:
    """:func:`overwrite`, with more conditions and mutations in the same step (the held
    upload's, :func:`.held.replace_file`); the new bytes stay as they are on failure."""
    item, dropped = _overwrite(client, user, file_id, content, quota=quota, expect=expect,
                               now=now, conditions=conditions, mutations=mutations)
    _finish_drops(client, user, dropped)
    return item


def _overwrite(client: KeyValueStore, user: str, file_id: str, content: Content, *,
               quota: int, expect: int | None, now: float | None = None,
               conditions: Sequence[Condition] = (), mutations: Sequence[Mutation] = ()
               ) -> tuple[Item, Sequence[Version]]:
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        item = get_file(client, user, file_id)
        if item is None:
            raise NoSuchItem("There is no such file in your drive.")
        if expect is not None and item.version != expect:
            raise Changed(f"{item.name!r} has changed since you saw it.")
        versions = read_versions(client, user, file_id)
        dropped = versions[MAX_VERSIONS - 1:]  # the oldest, making room for the current
        used, used_version = usage_cell(client, user)
        after = used + content.size - sum(v.size for v in dropped)
        if after > quota:
            raise over_quota(used, content.size, quota)
        new = replace(item, size=content.size, ctype=content.ctype, modified=now,
                      content=content.id)
        try:
            versions_after = client.mutate_row(
                drive_row(user),
                [("version", index_col(FILE, file_id), item.version),
                 ("version", USAGE_COL, used_version), *conditions],
                [*_keep_current(item, now), *link(new, now), *_drop(file_id, dropped),
                 ("put", USAGE_COL, pack(after)), *mutations])
        except ConditionFailed:
            if expect is not None:
                current = get_file(client, user, file_id)
                if current is None or current.version != expect:
                    raise Changed(f"{item.name!r} has changed since you saw it.") from None
            continue
        return replace(new, version=versions_after.get(index_col(FILE, file_id), 0)), dropped
    raise ConditionFailed("the file kept changing; try again")


def _keep_current(item: Item, now: float) -> list[Mutation]:
    return [("put", version_col(item.id, item.content_id),
             version_value(item.size, item.ctype, item.modified, now))]


def _drop(file_id: str, dropped: Sequence[Version]) -> list[Mutation]:
    mutations: list[Mutation] = []
    for version in dropped:
        mutations += [("delete", version_col(file_id, version.content)),
                      ("put", marker_col(version.content), pack({"k": MARK_CONTENT}))]
    return mutations


def _finish_drops(client: KeyValueStore, user: str, dropped: Sequence[Version]) -> None:
    """The dropped versions' bytes, then their markers (a crash between leaves them to purge)."""
    for version in dropped:
        drop_bytes(client, user, version.content)
        client.delete(drive_row(user), marker_col(version.content))


def list_versions(client: KeyValueStore, user: str, file_id: str) -> tuple[Item, list[Version]]:
    """A file and its kept earlier versions, newest first.

    :raises NoSuchItem: no such file (in the Trash counts as none).
    """
    item = get_file(client, user, file_id)
    if item is None:
        raise NoSuchItem("There is no such file in your drive.")
    return item, read_versions(client, user, file_id)


def get_version(client: KeyValueStore, user: str, file_id: str, content_id: str) -> Version:
    """One kept version of a live file; :raises NoSuchItem: no such file or version."""
    if not is_id(content_id) or get_file(client, user, file_id) is None:
        raise NoSuchItem("There is no such version of this file.")
    cell = client.get(drive_row(user), version_col(file_id, content_id))
    version = None if cell is None else version_from(version_col(file_id, content_id), cell)
    if version is None:
        raise NoSuchItem("There is no such version of this file; it may have been dropped.")
    return version


def open_version(client: KeyValueStore, user: str, file_id: str, content_id: str
                 ) -> tuple[Version, int, Iterator[bytes]]:
    """A kept version and its bytes, fetched lazily: ``(version, size, chunks)``."""
    version = get_version(client, user, file_id, content_id)
    found = client.get_stream(content_row(user, content_id), DATA_COL)
    if found is None:
        raise NoSuchItem("The version's contents are missing; it may have just been dropped.")
    return version, found[0], found[1]


def restore_version(client: KeyValueStore, user: str, file_id: str, content_id: str, *,
                    expect: int | None = None, now: float | None = None) -> Item:
    """Make a kept version current again and the current bytes a version: one
    ``mutate_row``, conditioned on the file (``expect``: as the caller saw it) and on the
    version's cell.  The quota is unchanged: both were counted.

    :raises Changed: the file changed meanwhile.  :raises NoSuchItem: no such version.
    """
    now = time.time() if now is None else now
    for _ in attempts(ATTEMPTS):
        version = get_version(client, user, file_id, content_id)
        item = get_file(client, user, file_id)
        if item is None:
            raise NoSuchItem("There is no such file in your drive.")
        if expect is not None and item.version != expect:
            raise Changed(f"{item.name!r} has changed since you saw it; look again.")
        new = replace(item, size=version.size, ctype=version.ctype, modified=now,
                      content=content_id)
        try:
            versions_after = client.mutate_row(
                drive_row(user),
                [("version", index_col(FILE, file_id), item.version),
                 ("version", version_col(file_id, content_id), version.version)],
                [("delete", version_col(file_id, content_id)), *_keep_current(item, now),
                 *link(new, now)])
        except ConditionFailed:
            continue
        return replace(new, version=versions_after.get(index_col(FILE, file_id), 0))
    raise ConditionFailed("the file kept changing; try again")

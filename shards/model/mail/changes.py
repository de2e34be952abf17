"""Changing messages in place: flags, expunge, and the per-folder change log that reports them.

Every change to a record gives it the folder's next mod-sequence and writes a
change-log entry ``c:<fid>:<modseq>`` = ``[uid, "fetch"|"expunge"]`` in the same
mutation, which also deletes the entry :data:`~.layout.KEEP` before: the log
holds the folder's last KEEP changes, and :func:`changes_since` answers from it
(IMAP CONDSTORE/QRESYNC, a webmail's refresh) or says it no longer reaches back.

A batch of UIDs is split into mutations of at most :data:`~.layout.BATCH`
records and :data:`~.layout.BATCH_BYTES` bytes (a Raft entry stays under 32 KiB);
each is atomic, the batch as a whole is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Literal

from ..errors import NoSuchFolder
from .index import unindex
from .layout import (
    ATTEMPTS,
    BATCH,
    BATCH_BYTES,
    SEEN,
    USAGE_COL,
    FolderEdit,
    Record,
    change_col,
    change_prefix,
    mailbox_row,
    normalise_flags,
    pack,
    pack_usage,
    packed_size,
    pointer_col,
    record_col,
    record_from_cell,
    retrying,
    unpack,
)
from .messages import delete_raw
from .migrate import ensure_current
from .reads import folder_and_records, is_clean, read_cells, usage_of
from .strays import folder_checked

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation

FlagMode = Literal["add", "remove", "replace"]


@dataclass(frozen=True)
class FlagResult:
    """What :func:`store_flags` did: the records it changed (new flags, new mod-sequence),
    and the UIDs it left alone because they changed after ``unchanged_since``."""

    updated: list[Record]
    modified: list[int]


@dataclass(frozen=True)
class Changes:
    """A folder's changes after a mod-sequence: the records changed (as they are now) and
    the UIDs expunged; ``modseq`` is the highest mod-sequence the answer covers."""

    modseq: int
    updated: list[Record]
    expunged: list[int]


def in_batches(uids: Iterable[int]) -> list[list[int]]:
    """``uids`` once each, ascending, cut in batches of :data:`BATCH`."""
    ordered = sorted(set(uids))
    return [ordered[i:i + BATCH] for i in range(0, len(ordered), BATCH)]


def fitting(records: Sequence[Record], size: Callable[[Record], int] = packed_size) -> list[Record]:
    """The first of ``records`` whose puts fit :data:`BATCH_BYTES` (at least one)."""
    total = 0
    for n, record in enumerate(records):
        total += size(record)
        if n and total > BATCH_BYTES:
            return list(records[:n])
    return list(records)


def store_flags(client: KeyValueStore, user: str, fid: int, uids: Iterable[int],
                flags: Iterable[str], mode: FlagMode = "add", *,
                unchanged_since: int | None = None) -> FlagResult:
    """Add, remove or replace ``flags`` on the messages ``uids`` of folder ``fid``.

    Each record that changes gets a new mod-sequence and a change-log entry, and the
    folder's unseen count follows; a record the change leaves as it was gets none.
    UIDs that do not exist are skipped.

    :param unchanged_since: CONDSTORE's UNCHANGEDSINCE: a record whose mod-sequence
        is above it is not changed but reported in ``modified``.
    :raises NoSuchFolder: the folder is gone.
    :raises BadFlag: a flag that cannot be stored.
    """
    wanted = set(normalise_flags(flags))
    if mode not in ("add", "remove", "replace"):
        raise ValueError(f"unknown flag mode {mode!r}")
    ensure_current(client, user)
    updated: list[Record] = []
    modified: list[int] = []
    for batch in in_batches(uids):
        pending = batch
        while pending:
            done, rest = retrying(f"folder {fid} of {user}", partial(
                _flag_batch, client, user, fid, pending, wanted, mode, unchanged_since), ATTEMPTS)
            updated += done[0]
            modified += done[1]
            pending = rest
    return FlagResult(updated, modified)


def _new_flags(old: tuple[str, ...], wanted: set[str], mode: FlagMode) -> tuple[str, ...]:
    if mode == "add":
        return normalise_flags({*old, *wanted})
    if mode == "remove":
        return tuple(f for f in old if f not in wanted)
    return tuple(sorted(wanted))


def _flag_batch(client: KeyValueStore, user: str, fid: int, uids: list[int], wanted: set[str],
                mode: FlagMode, unchanged_since: int | None
                ) -> tuple[tuple[list[Record], list[int]], list[int]]:
    """One mutation's worth: ``((updated, modified), uids left for the next mutation)``."""
    folder, records, _ = folder_and_records(client, user, fid, uids)
    changing: list[Record] = []
    modified: list[int] = []
    for uid in uids:
        record = records.get(uid)
        if record is None:
            continue
        if unchanged_since is not None and record.modseq > unchanged_since:
            modified.append(uid)
            continue
        new = _new_flags(record.flags, wanted, mode)
        if new != record.flags:
            changing.append(replace(record, flags=new))
    taken = fitting(changing)
    rest = [record.uid for record in changing[len(taken):]]  # did not fit: the next mutation
    if not taken:
        return ([], modified), []
    edit = FolderEdit(folder)
    conditions: list[Condition] = [edit.condition()]
    mutations: list[Mutation] = []
    done = []
    for record in taken:
        was = records[record.uid]
        changed = replace(record, modseq=edit.change(record.uid, "fetch"))
        edit.count(0, (SEEN in was.flags) - (SEEN in changed.flags))
        conditions.append(("version", record_col(fid, record.uid), was.version))
        mutations.append(("put", record_col(fid, record.uid), pack(changed.fields())))
        done.append(changed)
    versions = client.mutate_row(mailbox_row(user), conditions,
                                 [*mutations, *edit.all_mutations()])
    done = [replace(r, version=versions.get(record_col(fid, r.uid), 0)) for r in done]
    return (done, modified), rest


def expunge(client: KeyValueStore, user: str, fid: int, uids: Iterable[int]) -> list[int]:
    """Remove the messages ``uids`` of folder ``fid`` (whichever the IMAP layer chose: this
    does not look at \\Deleted); the UIDs removed.  Records and pointers go with change-log
    entries, counts and usage in one mutation per batch; the bytes are deleted after it.

    :raises NoSuchFolder: the folder is gone.
    """
    ensure_current(client, user)
    removed: list[int] = []
    for batch in in_batches(uids):
        gone = retrying(f"folder {fid} of {user}",
                        partial(_expunge_batch, client, user, fid, batch), ATTEMPTS)
        for record in gone:
            delete_raw(client, user, record.id)
        unindex(client, user, [record.id for record in gone])  # best effort: searches filter
        removed += [record.uid for record in gone]
    return removed


def _expunge_batch(client: KeyValueStore, user: str, fid: int, uids: list[int]) -> list[Record]:
    folder, records, (usage_cell,) = folder_and_records(client, user, fid, uids, [USAGE_COL])
    if not records:
        return []
    used, usage_version = usage_of(client, user, usage_cell)
    edit = FolderEdit(folder)
    conditions: list[Condition] = [edit.condition(), ("version", USAGE_COL, usage_version)]
    mutations: list[Mutation] = []
    for record in records.values():
        conditions.append(("version", record_col(fid, record.uid), record.version))
        mutations += [("delete", record_col(fid, record.uid)), ("delete", pointer_col(record.id))]
        edit.change(record.uid, "expunge")
        edit.count(-1, 0 if record.seen else -1)
        used -= record.size
    mutations += [*edit.all_mutations(),
                  ("put", USAGE_COL, pack_usage(max(0, used), clean=is_clean(usage_cell)))]
    client.mutate_row(mailbox_row(user), conditions, mutations)
    return list(records.values())


def changes_since(client: KeyValueStore, user: str, fid: int, modseq: int) -> Changes | None:
    """The records of folder ``fid`` changed after mod-sequence ``modseq`` and the UIDs
    expunged after it; None when the change log no longer reaches back that far (the
    caller reloads the whole folder).  Two reads: the folder cell, then the log after
    ``modseq`` (and a ``get_cells`` of the changed records).

    :raises NoSuchFolder: the folder is gone.
    """
    ensure_current(client, user)
    folder = folder_checked(client, user, fid)  # with usage: old mail code's mark (.strays)
    if folder is None:
        raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
    since = max(modseq, 1)  # a folder starts at mod-sequence 1; every later one is logged
    if since >= folder.modseq:
        return Changes(folder.modseq, [], [])
    cells = client.get_row(mailbox_row(user), prefix=change_prefix(fid),
                           after=change_col(fid, since))
    last: dict[int, str] = {}
    expected = since + 1
    for column, cell in cells.items():
        entry = unpack(cell.value)
        if int(column.rsplit(":", 1)[1]) != expected or not isinstance(entry, list) \
                or len(entry) != 2:
            return None  # a hole: the entry after ``since`` was dropped (or is malformed)
        expected += 1
        uid, kind = int(entry[0]), str(entry[1])
        if last.get(uid) != "expunge":  # an expunged UID stays expunged: UIDs are not reused
            last[uid] = kind
    if expected == since + 1:
        return None  # the folder moved past ``since`` but its log holds nothing after it
    fetched = [uid for uid, kind in last.items() if kind != "expunge"]
    row = mailbox_row(user)
    found = read_cells(client, [(row, record_col(fid, uid)) for uid in fetched])
    updated = []
    for uid, found_cell in zip(fetched, found, strict=True):
        if found_cell is not None:  # else expunged since the log was read: the next call says so
            record = record_from_cell(fid, uid, found_cell.value, found_cell.version)
            if record is not None:
                updated.append(record)
    updated.sort(key=lambda r: r.uid)
    return Changes(expected - 1, updated, sorted(u for u, k in last.items() if k == "expunge"))


__all__ = ["Changes", "FlagMode", "FlagResult", "changes_since", "expunge", "fitting",
           "in_batches", "store_flags"]

"""Folding in what old code (before layout 2) wrote into a mailbox of layout 2.

During a rolling upgrade old smtpds and portals run beside new ones, and old code
knows only ``m:<msg_id>`` metadata dicts and the ``usage`` count.  What it can
leave in a migrated mailbox, and what this module makes of it:

- **a delivery** (old smtpd, an old portal's Sent copy, a bounce): an ``m:`` metadata dict
  (sender, date, size...), and ``usage`` raised by its size.  Folded like a migration: a record
  with the next UID of its folder (by the dict's role, INBOX when unknown), ``\\Seen``
  when the dict says read, the pointer in place of the dict.  Indexed for search.
- **a read mark** (old portal's message page): the pointer replaced by
  ``{"unread": False}``.  The record is found by its id and gets ``\\Seen``; the
  pointer is put back.
- **a delete** (old portal): the pointer deleted, the bytes deleted, ``usage``
  written unchanged (old code subtracts a dict's size; a pointer has none).  The
  record left without a pointer is expunged (counts, change log, usage).

Old deliveries and deletes rewrite ``usage`` in msgpack's shortest form; layout-2
code writes it in a form old code never does (:func:`~.layout.pack_usage`), and
keeps the short form when it finds it.  So one read of ``usage`` says whether a
mailbox needs a look (:func:`check`): the folder reads of IMAP (SELECT, STATUS,
NOOP, IDLE's poll) take it in the ``get_cells`` they make anyway, the webmail's
folder page beside its other reads.  Only then :func:`fold` scans the ``m:``
cells and the records, batch by batch, and marks ``usage`` clean conditioned on
the version it read before the scan (a write meanwhile leaves the mark for the
next look).  An old read mark does not touch ``usage``: the new code repairs it
where it meets the cell (:func:`repair_pointer`, from
:func:`~.messages.locate`: the webmail's message page, read marks, moves and
deletes by id), or in the next scan.

Every repair is one ``mutate_row`` conditioned on the cells it read (the old
cell or the pointer's absence, the record, the folder, ``usage``), so repairs are
idempotent and meet concurrent old and new writers as failed conditions, read again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from raftkv.errors import ConditionFailed, RaftKVError, ReadOnly
from raftkv.interface import MAX_CELLS

from .index import index_message, read_head, unindex
from .layout import (
    ATTEMPTS,
    HEADER_COL,
    POINTER_PREFIX,
    RAW_COL,
    RECORD_PREFIX,
    SEEN,
    USAGE_COL,
    Folder,
    FolderEdit,
    Record,
    folder_col,
    folder_from_cell,
    mailbox_row,
    message_row,
    normalise_flags,
    pack,
    pack_usage,
    pointer_col,
    record_col,
    record_from_cell,
    retrying,
    unpack,
    unpack_pointer,
    usage_clean,
)
from .migrate import SCAN, convert, old_batch, old_metadata
from .reads import read_cells, usage_of

if TYPE_CHECKING:
    from raftkv.interface import Cell, Condition, KeyValueStore, Mutation

log = logging.getLogger("shards.model.mail")

ROUNDS = 3  # scans per fold when writers keep changing usage (the next look goes on)


def check(client: KeyValueStore, user: str, usage_cell: Cell | None) -> bool:
    """Fold strays in if the usage cell (as just read) bears an old writer's mark;
    whether it did (then what was read beside the cell may be stale)."""
    if usage_clean(None if usage_cell is None else usage_cell.value):
        return False
    try:
        fold(client, user)
    except ReadOnly:
        return False  # the group lost its majority: its stale reads show what is there
    return True


def check_now(client: KeyValueStore, user: str) -> bool:
    """:func:`check` with a read of its own (one ``get``): the webmail's folder page."""
    return check(client, user, client.get(mailbox_row(user), USAGE_COL))


def folder_checked(client: KeyValueStore, user: str, fid: int) -> Folder | None:
    """Folder ``fid``'s cell, read with ``usage`` in one ``get_cells`` and after a fold
    when that bears an old writer's mark (then the folder is read again)."""
    row = mailbox_row(user)
    folder_cell, usage_cell = read_cells(client, [(row, folder_col(fid)), (row, USAGE_COL)])
    if check(client, user, usage_cell):
        folder_cell = client.get(row, folder_col(fid))
    return None if folder_cell is None else folder_from_cell(fid, folder_cell.value,
                                                             folder_cell.version)


def fold(client: KeyValueStore, user: str) -> int:
    """Scan ``user``'s mailbox for cells old code wrote and fold them in; how many were
    repaired.  Then mark ``usage`` clean, unless it changed during the scan."""
    row = mailbox_row(user)
    repaired = 0
    for _ in range(ROUNDS):
        cell = client.get(row, USAGE_COL)
        if usage_clean(None if cell is None else cell.value):
            break
        repaired += _fold_dicts(client, user) + _fold_records(client, user)
        used, version = usage_of(client, user, cell)
        try:
            client.mutate_row(row, [("version", USAGE_COL, version)],
                              [("put", USAGE_COL, pack_usage(used, clean=True))])
            break
        except ConditionFailed:
            continue  # written meanwhile (maybe by old code again): scan again
    if repaired:
        log.info("folded %d cell(s) of old mail code into %s's mailbox", repaired, user)
    return repaired


def _fold_dicts(client: KeyValueStore, user: str) -> int:
    """Old deliveries among the ``m:`` cells, converted batch by batch."""
    row = mailbox_row(user)
    done = 0
    after = ""
    while True:
        cells = client.get_row(row, prefix=POINTER_PREFIX, after=after, limit=SCAN)
        old = [(c, cell) for c, cell in cells.items() if old_metadata(cell.value) is not None]
        while old:
            batch = [column for column, _ in old_batch(old)]
            convert(client, user, batch)
            _index(client, user, [c[len(POINTER_PREFIX):] for c in batch])
            done += len(batch)
            old = old[len(batch):]
        if len(cells) < SCAN:
            return done
        after = next(reversed(cells))


def _index(client: KeyValueStore, user: str, msg_ids: list[str]) -> None:
    """Index folded messages for search (old code did not), best effort."""
    for msg_id in msg_ids:
        try:
            index_message(client, user, msg_id, read_head(client, user, msg_id))
        except RaftKVError as exc:
            log.warning("message %s of %s not indexed: %s", msg_id, user, exc)


def _fold_records(client: KeyValueStore, user: str) -> int:
    """Every record, batch by batch, beside its pointer: a pointer an old read mark
    replaced is put back (with ``\\Seen``), a record an old delete left is expunged."""
    row = mailbox_row(user)
    done = 0
    after = ""
    while True:
        cells = client.get_row(row, prefix=RECORD_PREFIX, after=after, limit=SCAN)
        records = [r for c, cell in cells.items() if (r := _record(c, cell)) is not None]
        for start in range(0, len(records), MAX_CELLS):
            chunk = records[start:start + MAX_CELLS]
            pointers = read_cells(client, [(row, pointer_col(r.id)) for r in chunk])
            for record, pointer in zip(chunk, pointers, strict=True):
                if pointer is None or unpack_pointer(pointer.value) is None:
                    done += _repair(client, user, record)
        if len(cells) < SCAN:
            return done
        after = next(reversed(cells))


def _record(column: str, cell: Cell) -> Record | None:
    parts = column.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return record_from_cell(int(parts[1]), int(parts[2]), cell.value, cell.version)


def repair_pointer(client: KeyValueStore, user: str, msg_id: str) -> bool:
    """Message ``msg_id``'s ``m:`` cell is not a pointer (:func:`~.messages.locate` met
    it): fold it in if it is an old delivery, else put the pointer back on the record
    with its id (found by a scan of the records).  Whether there was anything to repair."""
    try:
        return _repair_pointer(client, user, msg_id)
    except ReadOnly:
        return False  # the group lost its majority: the message waits for its repair


def _repair_pointer(client: KeyValueStore, user: str, msg_id: str) -> bool:
    row = mailbox_row(user)
    cell = client.get(row, pointer_col(msg_id))
    if cell is None or unpack_pointer(cell.value) is not None:
        return False
    if old_metadata(cell.value) is not None:
        convert(client, user, [pointer_col(msg_id)])
        _index(client, user, [msg_id])
        return True
    after = ""
    while True:
        cells = client.get_row(row, prefix=RECORD_PREFIX, after=after, limit=SCAN)
        for column, record_cell in cells.items():
            record = _record(column, record_cell)
            if record is not None and record.id == msg_id:
                return _repair(client, user, record) > 0
        if len(cells) < SCAN:
            break
        after = next(reversed(cells))
    _drop(client, user, msg_id)  # a dict nothing lists (its message is gone)
    return True


def _drop(client: KeyValueStore, user: str, msg_id: str) -> None:
    row = mailbox_row(user)
    cell = client.get(row, pointer_col(msg_id))
    if cell is None or unpack_pointer(cell.value) is not None or old_metadata(cell.value):
        return
    try:
        client.mutate_row(row, [("version", pointer_col(msg_id), cell.version)],
                          [("delete", pointer_col(msg_id))])
    except ConditionFailed:
        pass  # changed meanwhile: whoever changed it made it something else


def _repair(client: KeyValueStore, user: str, found: Record) -> int:
    """Put back the pointer of record ``found`` (an old read mark: with ``\\Seen``), or
    expunge it (no pointer: an old delete); 1 if it did either, 0 if it was fine by then."""
    row = mailbox_row(user)
    fid, uid = found.fid, found.uid

    def attempt() -> int:
        keys = [(row, folder_col(fid)), (row, record_col(fid, uid)), (row, pointer_col(found.id)),
                (row, USAGE_COL)]
        folder_cell, record_cell, pointer, usage_cell = read_cells(client, keys)
        folder = None if folder_cell is None else folder_from_cell(fid, folder_cell.value,
                                                                   folder_cell.version)
        record = None if record_cell is None else record_from_cell(
            fid, uid, record_cell.value, record_cell.version)
        if folder is None or record is None or record.id != found.id:
            return 0  # moved or expunged since
        if pointer is not None and unpack_pointer(pointer.value) is not None:
            return 0  # put back by another process
        if pointer is not None and old_metadata(pointer.value) is not None:
            return 0  # an old delivery under this id: not ours to touch
        edit = FolderEdit(folder)
        conditions: list[Condition] = [edit.condition(), ("version", record_col(fid, uid),
                                                          record.version)]
        if pointer is None:
            mutations = _expunge(client, user, edit, record, usage_cell, conditions)
        else:
            mutations = _restore(edit, record, unpack(pointer.value), pointer, conditions)
        client.mutate_row(row, conditions, [*mutations, *edit.all_mutations()])
        if pointer is None:
            client.mutate_row(message_row(user, record.id), [],
                              [("delete", RAW_COL), ("delete", HEADER_COL)])
            unindex(client, user, [record.id])
        return 1

    return retrying(f"the mailbox of {user}", attempt, ATTEMPTS)


def _expunge(client: KeyValueStore, user: str, edit: FolderEdit, record: Record,
             usage_cell: Cell | None, conditions: list[Condition]) -> list[Mutation]:
    """An old portal deleted this message: its record goes too, and its bytes leave usage."""
    used, usage_version = usage_of(client, user, usage_cell)
    clean = usage_clean(None if usage_cell is None else usage_cell.value)
    conditions += [("absent", pointer_col(record.id)), ("version", USAGE_COL, usage_version)]
    edit.change(record.uid, "expunge")
    edit.count(-1, 0 if record.seen else -1)
    return [("delete", record_col(record.fid, record.uid)),
            ("put", USAGE_COL, pack_usage(max(0, used - record.size), clean=clean))]


def _restore(edit: FolderEdit, record: Record, meta: Any, pointer: Cell,
             conditions: list[Condition]) -> list[Mutation]:
    """An old portal marked this message read over its pointer: the pointer comes back,
    and ``\\Seen`` (or its absence) as the old code meant it."""
    conditions.append(("version", pointer_col(record.id), pointer.version))
    mutations: list[Mutation] = [("put", pointer_col(record.id), pack([record.fid, record.uid]))]
    unread = meta.get("unread") if isinstance(meta, dict) else None
    if not isinstance(unread, bool) or unread == (not record.seen):
        return mutations
    flags = (record.flags if not unread else tuple(f for f in record.flags if f != SEEN))
    flags = normalise_flags({*flags, SEEN}) if not unread else flags
    changed = replace(record, flags=flags, modseq=edit.change(record.uid, "fetch"))
    edit.count(0, 1 if unread else -1)
    return [*mutations, ("put", record_col(record.fid, record.uid), pack(changed.fields()))]


__all__ = ["check", "check_now", "fold", "folder_checked", "repair_pointer"]

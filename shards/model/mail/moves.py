"""Messages between folders: move, copy, and the Trash's expiry.

A move keeps a message's id and bytes: its record leaves the source (an
expunge entry there) and arrives under a new UID in the destination (a fetch
entry), its pointer follows, both folders' counts change, all in one mutation
per batch.  A copy is a new message (new id, its bytes copied, counted in the
quota).  Both answer the UID map IMAP's UIDPLUS reports (COPYUID).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed

from ..errors import FolderRefused, MailboxFull, NoSuchFolder
from .changes import expunge, fitting, in_batches
from .index import index_copy
from .layout import (
    ATTEMPTS,
    BATCH,
    HEADER_COL,
    RAW_COL,
    SEEN,
    TRASH,
    USAGE_COL,
    FolderEdit,
    Record,
    folder_col,
    folder_from_cell,
    mailbox_row,
    message_row,
    new_message_id,
    pack,
    pack_usage,
    pointer_col,
    record_col,
    record_prefix,
    retrying,
)
from .messages import discard
from .migrate import ensure_current
from .reads import folder_and_records, is_clean, need_folder, records_of, usage_of

if TYPE_CHECKING:
    from raftkv.interface import Cell, Condition, KeyValueStore, Mutation

TRASH_DAYS = 30
_SPOOL = 1024 * 1024   # a copied message larger than this passes through a temporary file


@dataclass(frozen=True)
class Transfer:
    """Where moved or copied messages went: the destination's UIDVALIDITY and, for each
    source UID, its UID there (in source UID order; a UID that did not exist is absent)."""

    uidvalidity: int
    uids: dict[int, int]


def _arrive(record: Record, dst: FolderEdit, src: int, now: float, *, msg_id: str | None = None
            ) -> Record:
    """``record`` as it arrives in ``dst``: new UID, mod-sequence and (Trash) provenance."""
    uid = dst.new_uid()
    into_trash = dst.fid == TRASH
    arrived = replace(record, fid=dst.fid, uid=uid, id=msg_id or record.id,
                      modseq=dst.change(uid, "fetch"),
                      trashed=(now if into_trash else None) if src != dst.fid else record.trashed,
                      origin=(src if into_trash else None) if src != dst.fid else record.origin)
    dst.count(1, 0 if SEEN in record.flags else 1)
    return arrived


def move(client: KeyValueStore, user: str, src: int, uids: Iterable[int], dst: int) -> Transfer:
    """Move the messages ``uids`` of folder ``src`` to folder ``dst`` (IMAP MOVE).

    Into Trash a record notes when and from where (:func:`expire_trash`, the
    webmail's "restore"); out of Trash it drops both.

    :raises NoSuchFolder: either folder is gone.
    :raises FolderRefused: ``src`` is ``dst``.
    """
    if src == dst:
        raise FolderRefused("The messages are in that folder already.")
    ensure_current(client, user)
    mapping: dict[int, int] = {}
    uidvalidity = 0
    for batch in in_batches(uids):
        pending = batch
        while pending:
            uidvalidity, moved, pending = retrying(
                f"folders {src} and {dst} of {user}",
                partial(_move_batch, client, user, src, pending, dst), ATTEMPTS)
            mapping.update(moved)
    if not uidvalidity:
        uidvalidity = _uidvalidity(client, user, dst)
    return Transfer(uidvalidity, dict(sorted(mapping.items())))


def _move_batch(client: KeyValueStore, user: str, src: int, uids: list[int], dst: int
                ) -> tuple[int, dict[int, int], list[int]]:
    source, records, (dst_cell,) = folder_and_records(client, user, src, uids, [folder_col(dst)])
    target = _folder(dst, dst_cell)
    taken = fitting([records[u] for u in uids if u in records])
    rest = [u for u in uids if u in records][len(taken):]
    if not taken:
        return target.folder.uidvalidity, {}, []
    out, now = FolderEdit(source), time.time()
    conditions: list[Condition] = [out.condition(), target.condition()]
    mutations: list[Mutation] = []
    moved = {}
    for record in taken:
        arrived = _arrive(record, target, src, now)
        out.change(record.uid, "expunge")
        out.count(-1, 0 if record.seen else -1)
        conditions.append(("version", record_col(src, record.uid), record.version))
        mutations += [("delete", record_col(src, record.uid)),
                      ("put", record_col(dst, arrived.uid), pack(arrived.fields())),
                      ("put", pointer_col(record.id), pack([dst, arrived.uid]))]
        moved[record.uid] = arrived.uid
    client.mutate_row(mailbox_row(user), conditions,
                      [*mutations, *out.all_mutations(), *target.all_mutations()])
    return target.folder.uidvalidity, moved, rest


def copy(client: KeyValueStore, user: str, src: int, uids: Iterable[int], dst: int, *,
         quota: int | None = None) -> Transfer:
    """Copy the messages ``uids`` of folder ``src`` to folder ``dst`` (IMAP COPY): new
    message ids, the bytes copied, the sizes counted in the usage.  ``src`` may be ``dst``.

    :raises MailboxFull: the copies of a batch would take usage over ``quota``; the
        batches before it were copied.
    :raises NoSuchFolder: either folder is gone.
    """
    ensure_current(client, user)
    mapping: dict[int, int] = {}
    for batch in in_batches(uids):
        pending = batch
        while pending:
            copies: dict[int, str] = {}  # source UID -> id of its copied bytes, across attempts
            try:
                copied, pending = retrying(
                    f"folders {src} and {dst} of {user}",
                    partial(_copy_batch, client, user, src, pending, dst, copies, quota), ATTEMPTS)
            except (MailboxFull, NoSuchFolder, ConditionFailed):
                # Surely not listed.  (After an unknown outcome the bytes stay: they may be.)
                for msg_id in copies.values():
                    discard(client, user, msg_id)
                raise
            for uid in set(copies) - set(copied):  # its source went away during the attempts
                discard(client, user, copies[uid])
            mapping.update(copied)
    return Transfer(_uidvalidity(client, user, dst), dict(sorted(mapping.items())))


def _copy_batch(client: KeyValueStore, user: str, src: int, uids: list[int], dst: int,
                copies: dict[int, str], quota: int | None) -> tuple[dict[int, int], list[int]]:
    _source, records, (dst_cell, usage_cell) = folder_and_records(
        client, user, src, uids, [folder_col(dst), USAGE_COL])
    target = _folder(dst, dst_cell)
    taken = fitting([records[u] for u in uids if u in records])
    rest = [u for u in uids if u in records][len(taken):]
    used, usage_version = usage_of(client, user, usage_cell)
    adding = sum(record.size for record in taken)
    if quota is not None and used + adding > quota:
        raise MailboxFull(user)
    conditions: list[Condition] = [target.condition(), ("version", USAGE_COL, usage_version)]
    mutations: list[Mutation] = []
    now, copied = time.time(), {}
    for record in taken:
        if record.uid not in copies:
            copy_id = _copy_bytes(client, user, record.id)
            if copy_id is None:
                continue  # its bytes are gone: expunged while we read
            copies[record.uid] = copy_id
            index_copy(client, user, record.id, copy_id)  # before it is listed
        arrived = _arrive(record, target, src, now, msg_id=copies[record.uid])
        conditions.append(("version", record_col(src, record.uid), record.version))
        mutations += [("put", record_col(dst, arrived.uid), pack(arrived.fields())),
                      ("put", pointer_col(arrived.id), pack([dst, arrived.uid]))]
        copied[record.uid] = arrived.uid
    if copied:
        mutations += [*target.all_mutations(),
                      ("put", USAGE_COL, pack_usage(used + adding, clean=is_clean(usage_cell)))]
        client.mutate_row(mailbox_row(user), conditions, mutations)
    return copied, rest


def _copy_bytes(client: KeyValueStore, user: str, msg_id: str) -> str | None:
    """Copy a message's ``raw`` and ``hdr`` cells under a new id; None if it has no bytes."""
    found = client.get_stream(message_row(user, msg_id), RAW_COL)
    if found is None:
        return None
    size, chunks = found
    new_id = new_message_id()
    row = message_row(user, new_id)
    if size <= _SPOOL:
        client.put(row, RAW_COL, b"".join(chunks))
    else:
        with tempfile.TemporaryFile(prefix="raftcloud-copy-") as spool:
            for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            client.put_stream(row, RAW_COL, spool)  # seekable: rewound if sent again
    header = client.get(message_row(user, msg_id), HEADER_COL)
    if header is not None:
        client.put(row, HEADER_COL, header.value)
    return new_id


def _folder(fid: int, cell: Cell | None) -> FolderEdit:
    folder = None if cell is None else folder_from_cell(fid, cell.value, cell.version)
    if folder is None:
        raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
    return FolderEdit(folder)


def _uidvalidity(client: KeyValueStore, user: str, fid: int) -> int:
    return need_folder(client, user, fid).uidvalidity


def expire_trash(client: KeyValueStore, user: str, now: float | None = None,
                 older_than: float = TRASH_DAYS * 86400.0) -> bool:
    """Delete for good the messages moved to Trash before ``now - older_than``; whether
    more may remain (call again).  Bounded work: one read of the oldest Trash
    records (UIDs follow the time they arrived there) and their expunge.
    """
    if not ensure_current(client, user, create=False):
        return False
    cutoff = (time.time() if now is None else now) - older_than
    scan = BATCH * 4
    cells = client.get_row(mailbox_row(user), prefix=record_prefix(TRASH), limit=scan)
    records = records_of(cells, TRASH)
    due = [r.uid for r in records if (r.trashed if r.trashed is not None else r.date) < cutoff]
    if due:
        expunge(client, user, TRASH, due)
    return len(cells) == scan and bool(records) and records[-1].uid in due


__all__ = ["TRASH_DAYS", "Transfer", "copy", "expire_trash", "move"]

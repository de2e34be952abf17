"""Messages arriving (SMTP delivery, IMAP APPEND) and being read: records, listings, bytes.

A new message's bytes are written first (``raw``, and ``hdr`` when its header
block is at most 64 KiB), then one ``mutate_row`` on the mailbox row lists it:
record, pointer, folder counters, change-log entry, usage (and the dedup cell
of a delivery), conditioned on the folder's and the usage cell's versions.  A
crash between the two leaves unlisted bytes, never a listing without bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed
from raftkv.interface import MAX_CELLS, Cell

from ..errors import MailboxFull, NoSuchFolder
from .headers import blank_line_end, header_block, parse_headers
from .index import index_message, unindex
from .layout import (
    ATTEMPTS,
    DEDUP_PREFIX,
    HEADER_COL,
    INBOX,
    RAW_COL,
    ROLES,
    SEEN,
    SPECIAL_NAMES,
    TRASH,
    USAGE_COL,
    FolderEdit,
    Record,
    folder_col,
    folder_from_cell,
    is_message_id,
    mailbox_row,
    message_row,
    new_message_id,
    normalise_flags,
    pack,
    pack_usage,
    pointer_col,
    record_col,
    record_prefix,
    retrying,
    unpack_pointer,
)
from .migrate import ensure_current, repair
from .reads import is_clean, read_cells, record_at, records_of, usage_of
from .strays import repair_pointer

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation

SMALL_MESSAGE = 16 * 1024  # raw and hdr of a message this small go in one write


@dataclass(frozen=True)
class Delivered:
    """What :func:`deliver` did: the message's id, and its record (None only for a
    duplicate whose first copy has been deleted since: it is not stored again)."""

    msg_id: str
    record: Record | None
    duplicate: bool


def dedup_column(folder: str, message_id: str) -> str:
    """The ``mid:`` cell for a Message-ID delivered to ``folder`` (a special folder's role,
    "inbox", "sent"...; another folder's ``#<fid>``).

    The folder is part of the key so that mail a user sends to themselves keeps
    both its "sent" copy and its "inbox" copy.  Roles, not ids, for the special
    folders: the cells written before layout 2 keep deduplicating.
    """
    digest = hashlib.sha256(f"{folder}\0{message_id}".encode("utf-8", "surrogateescape"))
    return DEDUP_PREFIX + digest.hexdigest()


def _dedup_folder(fid: int) -> str:
    return ROLES.get(fid, f"#{fid}")


def deliver(client: KeyValueStore, user: str, raw: bytes, *, folder: int = INBOX,
            flags: Iterable[str] = (), quota: int | None = None) -> Delivered:
    """Store a message arriving by SMTP (or a Sent copy) in ``folder``.

    A message whose Message-ID was delivered to that folder before is not stored
    again (SMTP delivers at least once): the first copy's id is answered, even when
    that copy was moved or deleted since.

    :param quota: refuse the message if the mailbox's usage would exceed it (None: never).
    :raises MailboxFull: it does not fit; nothing was stored.
    :raises NoSuchFolder: no such folder.
    :raises UnavailableError: the store is unavailable; delivering again later is safe.
    """
    return _store(client, user, raw, folder, normalise_flags(flags), None, quota, dedup=True)


def append(client: KeyValueStore, user: str, folder: int, raw: bytes, *,
           flags: Iterable[str] = (), date: float | None = None,
           quota: int | None = None) -> Record:
    """Store a message given by IMAP APPEND: its flags and internal date as given, no dedup.

    :raises MailboxFull: it does not fit in ``quota``; nothing was stored.
    :raises NoSuchFolder: no such folder.
    :raises BadFlag: a flag that cannot be stored.
    """
    done = _store(client, user, raw, folder, normalise_flags(flags), date, quota, dedup=False)
    if done.record is None:  # pragma: no cover - only a deduplicated delivery has none
        raise RuntimeError("append stored nothing")
    return done.record


def _store(client: KeyValueStore, user: str, raw: bytes, fid: int, flags: tuple[str, ...],
           date: float | None, quota: int | None, *, dedup: bool) -> Delivered:
    ensure_current(client, user)
    row = mailbox_row(user)
    headers = parse_headers(raw)
    dedup_col = dedup_column(_dedup_folder(fid), headers.message_id) \
        if dedup and headers.message_id else None
    keys = [(row, folder_col(fid)), (row, USAGE_COL), *([(row, dedup_col)] if dedup_col else [])]
    # Before the bytes are written: a retried 25 MiB message or a full mailbox costs no upload.
    first = _read_state(client, user, fid, keys)
    if dedup_col is not None and first[2] is not None:
        return _duplicate(client, user, first[2])
    used, _version = usage_of(client, user, first[1])
    if quota is not None and used + len(raw) > quota:
        raise MailboxFull(user)
    msg_id = new_message_id()
    write_raw(client, user, msg_id, raw)
    index_message(client, user, msg_id, raw, headers)  # before it is listed: a listed one is
    arrived = time.time()
    state: list[tuple[Cell | None, ...]] = [first]

    def attempt() -> Delivered:
        folder_cell, usage_cell, dedup_cell = state.pop() if state else \
            _read_state(client, user, fid, keys)
        if dedup_col is not None and dedup_cell is not None:
            discard(client, user, msg_id)  # a concurrent delivery of it won
            return _duplicate(client, user, dedup_cell)
        folder = None if folder_cell is None else folder_from_cell(fid, folder_cell.value,
                                                                   folder_cell.version)
        if folder is None:
            raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
        used, usage_version = usage_of(client, user, usage_cell)
        if quota is not None and used + len(raw) > quota:
            raise MailboxFull(user)
        edit = FolderEdit(folder)
        uid = edit.new_uid()
        record = Record(fid=fid, uid=uid, id=msg_id, flags=flags, modseq=edit.change(uid, "fetch"),
                        date=arrived if date is None else date, size=len(raw),
                        sender=headers.sender, subject=headers.subject, to=headers.to,
                        cc=headers.cc, message_id=headers.message_id,
                        in_reply_to=headers.in_reply_to,
                        trashed=arrived if fid == TRASH else None)
        edit.count(1, 0 if SEEN in flags else 1)
        conditions: list[Condition] = [edit.condition(), ("version", USAGE_COL, usage_version)]
        mutations: list[Mutation] = [
            ("put", record_col(fid, uid), pack(record.fields())),
            ("put", pointer_col(msg_id), pack([fid, uid])),
            *edit.all_mutations(),
            ("put", USAGE_COL, pack_usage(used + len(raw), clean=is_clean(usage_cell)))]
        if dedup_col is not None:
            conditions.append(("absent", dedup_col))
            mutations.append(("put", dedup_col, msg_id.encode("ascii")))
        versions = client.mutate_row(row, conditions, mutations)
        return Delivered(msg_id, _with_version(record, versions.get(record_col(fid, uid), 0)),
                         False)

    try:
        return retrying(f"the mailbox of {user}", attempt, ATTEMPTS)
    except (MailboxFull, NoSuchFolder, ConditionFailed):
        # Surely not listed.  (After an unknown outcome the bytes stay: they may be listed.)
        discard(client, user, msg_id)
        raise


def _read_state(client: KeyValueStore, user: str, fid: int,
                keys: list[tuple[str, str]]) -> tuple[Cell | None, ...]:
    """The folder, usage (and dedup) cells; a special folder found missing means the
    mailbox was erased and made anew since this process saw it: it is made again."""
    cells = read_cells(client, keys)
    if cells[0] is None and fid in SPECIAL_NAMES:
        repair(client, user)
        cells = read_cells(client, keys)
    return (*cells, None) if len(cells) == 2 else tuple(cells)


def _duplicate(client: KeyValueStore, user: str, dedup_cell: Cell) -> Delivered:
    msg_id = dedup_cell.value.decode("ascii", "replace")
    return Delivered(msg_id, locate(client, user, msg_id), True)


def _with_version(record: Record, version: int) -> Record:
    return replace(record, version=version)


def write_raw(client: KeyValueStore, user: str, msg_id: str, raw: bytes) -> None:
    """A message's bytes: ``raw``, and ``hdr`` (its header block) unless that is over 64 KiB."""
    row = message_row(user, msg_id)
    block = header_block(raw)
    if block is not None and len(raw) + len(block) <= SMALL_MESSAGE:
        client.mutate_row(row, [], [("put", RAW_COL, raw), ("put", HEADER_COL, block)])
        return
    client.put(row, RAW_COL, raw)
    if block is not None:
        client.put(row, HEADER_COL, block)


def delete_raw(client: KeyValueStore, user: str, msg_id: str) -> None:
    """Delete a message's bytes (after its record is gone: nothing lists them then)."""
    client.mutate_row(message_row(user, msg_id), [], [("delete", RAW_COL), ("delete", HEADER_COL)])


def discard(client: KeyValueStore, user: str, msg_id: str) -> None:
    """Delete a message's bytes and its words (it was never listed, or is no longer)."""
    delete_raw(client, user, msg_id)
    unindex(client, user, [msg_id])


# -- reading ------------------------------------------------------------------------------


def get_record(client: KeyValueStore, user: str, fid: int, uid: int) -> Record | None:
    """The record of UID ``uid`` in folder ``fid``, or None."""
    ensure_current(client, user)
    return record_at(client, user, fid, uid)


def locate(client: KeyValueStore, user: str, msg_id: str) -> Record | None:
    """Where message ``msg_id`` is now (its pointer, then its record), or None."""
    if not is_message_id(msg_id) or not ensure_current(client, user, create=False):
        return None
    row = mailbox_row(user)
    cell = client.get(row, pointer_col(msg_id))
    if cell is not None and unpack_pointer(cell.value) is None \
            and repair_pointer(client, user, msg_id):  # old mail code's cell (.strays)
        cell = client.get(row, pointer_col(msg_id))
    where = None if cell is None else unpack_pointer(cell.value)
    if where is None:
        return None
    record = record_at(client, user, *where)
    return record if record is not None and record.id == msg_id else None


def list_folder(client: KeyValueStore, user: str, fid: int, *, first: int = 1,
                last: int | None = None, limit: int | None = None) -> list[Record]:
    """Folder ``fid``'s records with ``first <= uid <= last``, in UID order (IMAP's view):
    one ``get_row`` over the folder's prefix."""
    ensure_current(client, user)
    after = record_col(fid, first - 1) if first > 1 else ""
    cells = client.get_row(mailbox_row(user), prefix=record_prefix(fid), after=after, limit=limit)
    records = records_of(cells, fid)
    return records if last is None else [r for r in records if r.uid <= last]


def list_newest(client: KeyValueStore, user: str, fid: int, *, before: int | None = None,
                limit: int | None) -> list[Record]:
    """Up to ``limit`` (None: all) records of folder ``fid`` newest first (highest UID first), those
    below UID ``before`` if given: the webmail's pages, one ``get_row`` each."""
    if not ensure_current(client, user, create=False):
        return []
    after = record_col(fid, before) if before is not None else ""
    cells = client.get_row(mailbox_row(user), prefix=record_prefix(fid), after=after,
                           limit=limit, reverse=True)
    return records_of(cells, fid)


def header_blocks(client: KeyValueStore, user: str, msg_ids: Iterable[str]) -> dict[str, bytes]:
    """The header block of each message that exists, by id: ``get_cells`` of their ``hdr``
    cells, :data:`~raftkv.interface.MAX_CELLS` a round trip; a message without one (over
    64 KiB of header, or stored before layout 2) is read whole and cut."""
    wanted = [m for m in dict.fromkeys(msg_ids) if is_message_id(m)]
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), MAX_CELLS):
        chunk = wanted[start:start + MAX_CELLS]
        cells = read_cells(client, [(message_row(user, m), HEADER_COL) for m in chunk])
        for msg_id, cell in zip(chunk, cells, strict=True):
            if cell is not None:
                found[msg_id] = cell.value
                continue
            block = _header_from_raw(client, user, msg_id)
            if block is not None:
                found[msg_id] = block
    return found


def _header_from_raw(client: KeyValueStore, user: str, msg_id: str) -> bytes | None:
    """The header block read from the start of ``raw``, chunk by chunk: a 25 MiB message
    with a short header (stored before layout 2) is not read whole."""
    found = client.get_stream(message_row(user, msg_id), RAW_COL)
    if found is None:
        return None
    read = b""
    for chunk in found[1]:
        # Look again from just before the new chunk: the blank line may straddle two.
        start = max(0, len(read) - 3)
        read += chunk
        end = blank_line_end(read, start)
        if end is not None:
            return read[:end]
    return read


def get_raw(client: KeyValueStore, user: str, msg_id: str) -> bytes | None:
    """The message exactly as received, or None."""
    if not is_message_id(msg_id):
        return None
    cell = client.get(message_row(user, msg_id), RAW_COL)
    return None if cell is None else cell.value


def raw_stream(client: KeyValueStore, user: str, msg_id: str) -> tuple[int, Iterator[bytes]] | None:
    """``(size, chunks)`` of a message, read lazily (a big one never sits whole in memory)."""
    if not is_message_id(msg_id):
        return None
    return client.get_stream(message_row(user, msg_id), RAW_COL)


__all__ = ["Delivered", "append", "dedup_column", "deliver", "delete_raw", "discard", "get_raw",
           "get_record", "header_blocks", "list_folder", "list_newest", "locate", "raw_stream",
           "write_raw"]

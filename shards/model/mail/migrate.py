"""Bringing a mailbox to layout 2: special folders, then every old ``m:`` cell, then ``v``.

Before layout 2 a message was one ``m:<msg_id>`` cell holding its metadata (a
dict with "folder" and "unread").  Migration turns each into a record in its
folder (``u:``) and the ``m:`` cell into a pointer to it: an ``m:`` cell holding
a metadata dict is how an unconverted message is told apart (:func:`old_metadata`).  Messages are converted
oldest first (message ids sort by arrival), so UIDs follow arrival.  Each batch
is one ``mutate_row`` conditioned on the version of every old cell it converts
and of the folders it adds to: two processes migrating at once, or a message
deleted by an old frontend meanwhile, make a batch fail and be read again,
never convert a message twice.  ``v`` is written last, so a migration cut short
is finished by whoever calls :func:`ensure_current` next; until then nothing
new writes (every entry point migrates first).  Old code still running beside
the new (a rolling upgrade) may write old cells afterwards: :mod:`.strays` folds
them in with :func:`convert`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .layout import (
    ATTEMPTS,
    BATCH,
    BATCH_BYTES,
    FIRST_USER_FOLDER,
    FSEQ_COL,
    INBOX,
    LAYOUT_VERSION,
    POINTER_PREFIX,
    ROLE_IDS,
    ROLES,
    SEEN,
    SPECIAL_NAMES,
    VERSION_COL,
    Folder,
    FolderEdit,
    Record,
    folder_col,
    folder_from_cell,
    mailbox_row,
    next_uidvalidity,
    pack,
    pointer_col,
    record_col,
    retrying,
    unpack,
)
from .reads import read_cells, read_folders

if TYPE_CHECKING:
    from raftkv.interface import Cell, Condition, KeyValueStore, Mutation

SCAN = 200            # old cells read at a time
_REMEMBERED = 100_000  # users this process saw migrated, at most (then it forgets them all)
_migrated: set[str] = set()
_lock = threading.Lock()


def ensure_current(client: KeyValueStore, user: str, *, create: bool = True) -> bool:
    """Make sure ``user``'s mailbox has layout 2; whether it exists.

    One ``get`` of ``v`` when the mailbox is current (none at all once this process
    saw it current).  Else the special folders are made and old messages
    converted.  With ``create=False`` a mailbox that holds nothing yet (no ``v``,
    no cell at all) is left unwritten and False is answered: a listing of
    a name nobody delivered to writes nothing.
    """
    with _lock:
        if user in _migrated:
            return True
    row = mailbox_row(user)
    if client.get(row, VERSION_COL) is None:
        if not create and not client.get_row(row, limit=1):
            return False
        make_special_folders(client, user)
        after: str | None = ""
        while after is not None:
            after = convert_some(client, user, after)
        client.put(row, VERSION_COL, pack(LAYOUT_VERSION))
    with _lock:
        if len(_migrated) >= _REMEMBERED:
            _migrated.clear()
        _migrated.add(user)
    return True


def forget(user: str | None = None) -> None:
    """Forget that ``user`` (everyone: None) was seen migrated; the next call checks again.

    Called when a special folder is found missing: the account was erased and made
    anew since this process looked.
    """
    with _lock:
        if user is None:
            _migrated.clear()
        else:
            _migrated.discard(user)


def repair(client: KeyValueStore, user: str) -> None:
    """A special folder was found missing: the account was erased and made anew since
    this process saw its mailbox current.  Make it current again."""
    forget(user)
    ensure_current(client, user)


def current_folders(client: KeyValueStore, user: str) -> tuple[dict[int, Folder], dict[str, Any], int]:
    """:func:`~.reads.read_folders` of a current mailbox (repaired if INBOX is missing)."""
    ensure_current(client, user)
    found = read_folders(client, user)
    if INBOX not in found[0]:
        repair(client, user)
        found = read_folders(client, user)
    return found


def make_special_folders(client: KeyValueStore, user: str) -> None:
    """INBOX, Sent, Drafts, Trash, Junk, those missing, in one mutation conditioned on fseq."""
    row = mailbox_row(user)

    def attempt() -> None:
        folders, fseq, version = read_folders(client, user)
        missing = [fid for fid in SPECIAL_NAMES if fid not in folders]
        if not missing:
            return
        last = int(fseq.get("uidvalidity", 0) or 0)
        mutations: list[Mutation] = []
        conditions: list[Condition] = [("version", FSEQ_COL, version)]
        for fid in missing:
            # Each its own UIDVALIDITY: a special folder may be renamed to a name another
            # folder had, and (name, UIDVALIDITY) must never mean two folders.
            last = next_uidvalidity(last)
            folder = Folder(id=fid, name=SPECIAL_NAMES[fid], special=ROLES[fid], uidvalidity=last,
                            uidnext=1, modseq=1, exists=0, unseen=0, subscribed=True)
            conditions.append(("absent", folder_col(fid)))
            mutations.append(("put", folder_col(fid), pack(folder.fields())))
        new_fseq = {"next": max(int(fseq.get("next", 0) or 0), FIRST_USER_FOLDER),
                    "uidvalidity": last}
        mutations.append(("put", FSEQ_COL, pack(new_fseq)))
        client.mutate_row(row, conditions, mutations)

    retrying(f"the folders of {user}", attempt, ATTEMPTS)


def convert_some(client: KeyValueStore, user: str, after: str = "") -> str | None:
    """Convert the oldest old-layout messages after column ``after`` (a batch); the column
    to go on after, or None when none is left."""
    row = mailbox_row(user)
    while True:
        cells = client.get_row(row, prefix=POINTER_PREFIX, after=after, limit=SCAN)
        old = [(column, cell) for column, cell in cells.items()
               if old_metadata(cell.value) is not None]
        if old:
            batch = [column for column, _ in old_batch(old)]
            convert(client, user, batch)
            return batch[-1]
        if len(cells) < SCAN:
            return None
        after = next(reversed(cells))


def old_batch(old: list[tuple[str, Cell]]) -> list[tuple[str, Cell]]:
    """The first old cells that fit one mutation (:data:`BATCH`, :data:`BATCH_BYTES`)."""
    taken: list[tuple[str, Cell]] = []
    size = 0
    for column, cell in old[:BATCH]:
        size += len(cell.value) + 200
        if taken and size > BATCH_BYTES:
            break
        taken.append((column, cell))
    return taken


def old_metadata(value: bytes) -> dict[str, Any] | None:
    """The metadata dict of an ``m:`` cell written by old code's delivery, or None: a
    pointer, garbage, or a dict of "unread" alone (an old read mark over a pointer:
    the old code's ``{**dict, "unread": False}`` of a value that is no dict)."""
    meta = unpack(value)
    return meta if isinstance(meta, dict) and set(meta) - {"unread"} else None


def convert(client: KeyValueStore, user: str, columns: list[str]) -> None:
    """Turn the old ``m:`` cells ``columns`` (one mutation's worth, :func:`old_batch`) into
    records in their folders and pointers; those no longer old are left alone.  Also how
    :mod:`.strays` folds in what old code delivered into a mailbox of layout 2."""
    row = mailbox_row(user)

    def attempt() -> None:
        keys = [*((row, folder_col(fid)) for fid in ROLES), *((row, c) for c in columns)]
        cells = read_cells(client, keys)
        edits: dict[int, FolderEdit] = {}
        for fid, cell in zip(ROLES, cells, strict=False):
            folder = None if cell is None else folder_from_cell(fid, cell.value, cell.version)
            if folder is None:
                raise RuntimeError(f"special folder {fid} of {user} missing during migration")
            edits[fid] = FolderEdit(folder)
        conditions: list[Condition] = []
        mutations: list[Mutation] = []
        for column, cell in zip(columns, cells[len(ROLES):], strict=True):
            meta = None if cell is None else old_metadata(cell.value)
            if cell is None or meta is None:
                continue  # converted by another process, or deleted, since the scan
            msg_id = column[len(POINTER_PREFIX):]
            # Old code knew "inbox" and "sent" (and took any role); anything else: INBOX.
            edit = edits[ROLE_IDS.get(str(meta.get("folder", "")), INBOX)]
            record = _record_of(msg_id, meta, edit)
            conditions.append(("version", column, cell.version))
            mutations += [("put", record_col(record.fid, record.uid), pack(record.fields())),
                          ("put", pointer_col(msg_id), pack([record.fid, record.uid]))]
        for edit in edits.values():
            if edit.changed():
                conditions.append(edit.condition())
                mutations += edit.all_mutations()
        if mutations:
            client.mutate_row(row, conditions, mutations)

    retrying(f"the migration of {user}'s mailbox", attempt, ATTEMPTS)


def _record_of(msg_id: str, meta: dict[str, Any], edit: FolderEdit) -> Record:
    """The record of an old metadata dict, given a UID and mod-sequence in its folder."""
    seen = not bool(meta.get("unread", True))
    uid = edit.new_uid()
    modseq = edit.change(uid, "fetch")
    edit.count(1, 0 if seen else 1)

    def text(key: str) -> str:
        value = meta.get(key, "")
        return value if isinstance(value, str) else ""

    date, size = meta.get("date"), meta.get("size")
    return Record(
        fid=edit.fid, uid=uid, id=msg_id,
        flags=(SEEN,) if seen else (), modseq=modseq,
        date=float(date) if isinstance(date, (int, float)) else 0.0,
        size=size if isinstance(size, int) and size > 0 else 0,
        sender=text("sender"), subject=text("subject"), to=text("to"),
        message_id=text("message_id"))

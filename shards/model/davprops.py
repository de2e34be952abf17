"""WebDAV dead properties of drive items, kept in the store by item id (issue 20).

One row per user, beside the drive (``{user}`` hash tag)::

    row {<user>}/davprops
        h:<item id>             msgpack {n: properties, b: bytes of their values}: the
                                item's header; every change of its properties puts it
        p:<item id>/<name>      the value: the property element as XML bytes

Keyed by the drive item's id, not its path: a rename or a move (one mutation of the
drive row, the id unchanged) takes the properties along without touching this row, and
a path reused by a new item does not inherit old properties.  Every change of one
item's properties is **one** ``mutate_row`` conditioned on its header's version (0:
absent), which it puts again, so the caps hold under concurrent PROPPATCHes; changes of
different items never conflict.  Copying or clearing an item's properties is a
**resumable sequence** of such mutations (at most :data:`BATCH_BYTES` each, under a Raft
entry's 32 KiB), each leaving the header true.  Properties of an item deleted elsewhere
(the web page) stay until :func:`purge_orphans` finds its id gone from the drive (an
item in the Trash is not gone: a restore brings its properties back).

Bounds: names of at most :data:`MAX_NAME` bytes in Clark notation, values of at
most :data:`MAX_VALUE` bytes, :data:`MAX_PROPS` properties and :data:`MAX_ITEM_BYTES`
bytes of values per item.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, OverLimit, Refused
from raftkv.interface import Cell

from .codec import pack as _pack
from .codec import unpack as _unpack
from .drive.records import FILE, FOLDER, ROOT, drive_row, index_col, is_id
from .drive.trash import trash_col
from .retry import attempts, pause

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation

MAX_NAME = 256                # bytes (UTF-8) of a property name, "{namespace}local"; with
                              # the item id it stays inside the store's 498-byte cell keys
MAX_VALUE = 16 * 1024         # bytes of one value (larger cells would become blobs)
MAX_PROPS = 100               # properties per item
MAX_ITEM_BYTES = 256 * 1024   # bytes of all of an item's values
BATCH_BYTES = 24 * 1024       # bytes of columns and values one copy or clear step writes
ATTEMPTS = 10                 # re-reads when another change of the same item landed first
ORPHAN_PAGE = 80              # headers one purge_orphans call reads: it looks up
                              # three cells of each in one get_cells (at most 256)
# Clark notation: an optional {namespace} (no braces or blanks), then a local name.
_NAME = re.compile(r"(\{[^{}\s]*\})?[^{}\s/]+")


class PropertyError(Refused):
    """A property change the store refuses; the message says why."""


class BadProperty(PropertyError):
    """A name that is not Clark notation, too long, or has control characters."""


class PropertyTooLarge(OverLimit):
    """A value over :data:`MAX_VALUE`, or an item's values over :data:`MAX_ITEM_BYTES`."""


class TooManyProperties(OverLimit):
    """The item has :data:`MAX_PROPS` properties already."""


def props_row(user: str) -> str:
    """The row holding the dead properties of every item in ``user``'s drive."""
    return f"{{{user}}}/davprops"


def check_name(name: str) -> str:
    """``name`` if it can name a dead property here, else :class:`BadProperty`."""
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise BadProperty(f"A property name must have 1 to {MAX_NAME} bytes.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or not _NAME.fullmatch(name):
        raise BadProperty("A property name must be {namespace}name without control characters.")
    return name


def check_item(item_id: str) -> str:
    if item_id != ROOT and not is_id(item_id):
        raise BadProperty("No such item.")
    return item_id


# -- reads ---------------------------------------------------------------------------------


def read_all(client: KeyValueStore, user: str, item_id: str) -> dict[str, bytes]:
    """Every dead property of the item, name -> value (one ``get_row``, bounded by the caps)."""
    prefix = _prefix(check_item(item_id))
    cells = client.get_row(props_row(user), prefix, limit=MAX_PROPS)
    return {column[len(prefix):]: cell.value for column, cell in cells.items()}


def read_one(client: KeyValueStore, user: str, item_id: str, name: str) -> bytes | None:
    """One property's value, or None."""
    cell = client.get(props_row(user), _col(check_item(item_id), check_name(name)))
    return None if cell is None else cell.value


# -- changes -------------------------------------------------------------------------------


def write(client: KeyValueStore, user: str, item_id: str, name: str, value: bytes, *,
          dry_run: bool = False, pending: dict[str, int | None] | None = None) -> None:
    """Set one property.  ``dry_run`` checks everything and writes nothing; ``pending``
    (name -> size of the value, None: removed) are the changes earlier dry runs of the
    same request would make, counted as made, so a PROPPATCH is checked whole.

    :raises BadProperty, PropertyTooLarge, TooManyProperties:
    """
    check_item(item_id)
    check_name(name)
    if not isinstance(value, bytes) or len(value) > MAX_VALUE:
        raise PropertyTooLarge(f"A property value can be at most {MAX_VALUE} bytes.")
    changes = {**(pending or {}), name: len(value)}
    if len(changes) > MAX_PROPS:
        raise TooManyProperties(f"An item can have at most {MAX_PROPS} properties.")
    for _ in attempts(ATTEMPTS):
        header, olds = _read(client, user, item_id, list(changes))
        count, size = _counts(header)
        for changed, new in changes.items():
            old = olds[changed]
            count += (new is not None) - (old is not None)
            size += (new or 0) - (0 if old is None else len(old.value))
        if count > MAX_PROPS:
            raise TooManyProperties(f"An item can have at most {MAX_PROPS} properties.")
        if size > MAX_ITEM_BYTES:
            raise PropertyTooLarge(
                f"An item's properties can hold at most {MAX_ITEM_BYTES} bytes.")
        if dry_run:
            return
        old = olds[name]
        count, size = _counts(header)
        count += old is None
        size += len(value) - (0 if old is None else len(old.value))
        if _commit(client, user, item_id, header, [("put", _col(item_id, name), value)],
                   count, size):
            return
    raise ConditionFailed("the properties kept changing")


def remove(client: KeyValueStore, user: str, item_id: str, name: str, *,
           dry_run: bool = False) -> None:
    """Remove one property (absent: nothing to do, not an error)."""
    check_item(item_id)
    check_name(name)
    if dry_run:
        return
    for _ in attempts(ATTEMPTS):
        header, olds = _read(client, user, item_id, [name])
        old = olds[name]
        if old is None:
            return
        count, size = _counts(header)
        if _commit(client, user, item_id, header, [("delete", _col(item_id, name))],
                   count - 1, size - len(old.value)):
            return
    raise ConditionFailed("the properties kept changing")


def remove_all(client: KeyValueStore, user: str, item_id: str) -> None:
    """Remove every property of the item, a bounded batch per mutation, the header last."""
    check_item(item_id)
    failed = 0
    # Not attempts(): a round that commits its batch goes on to the next at once; only a
    # round another change beat pauses, longer after each such round.
    for _ in range(MAX_PROPS + ATTEMPTS):
        header = client.get(props_row(user), _header(item_id))
        names = read_all(client, user, item_id)
        if header is None and not names:
            return
        count, size = _counts(header)
        batch: list[Mutation] = []
        used = 0
        for name, value in names.items():
            if batch and used + len(name) + 64 > BATCH_BYTES:
                break
            batch.append(("delete", _col(item_id, name)))
            used += len(name) + 64
            count, size = count - 1, size - len(value)
        if not _commit(client, user, item_id, header, batch,
                       0 if len(batch) == len(names) else max(count, 0), max(size, 0)):
            failed += 1
            pause(failed)
    raise ConditionFailed("the properties kept changing")


def copy_all(client: KeyValueStore, user: str, src_id: str, dst_user: str, dst_id: str) -> None:
    """Make the properties of ``dst_id`` (in ``dst_user``'s drive) those of ``src_id``:
    the destination's are removed, then the source's written in bounded batches."""
    source = read_all(client, user, src_id)
    remove_all(client, dst_user, check_item(dst_id))
    items = list(source.items())
    while items:
        batch: dict[str, bytes] = {}
        used = 0
        while items and (not batch or used + len(items[0][0]) + len(items[0][1]) < BATCH_BYTES):
            name, value = items.pop(0)
            batch[name] = value
            used += len(name) + len(value)
        for _ in attempts(ATTEMPTS):
            header, olds = _read(client, dst_user, dst_id, list(batch))
            count, size = _counts(header)
            for name, value in batch.items():
                old = olds[name]
                count += old is None
                size += len(value) - (0 if old is None else len(old.value))
            puts: list[Mutation] = [("put", _col(dst_id, name), value)
                                    for name, value in batch.items()]
            if _commit(client, dst_user, dst_id, header, puts, count, size):
                break
        else:
            raise ConditionFailed("the properties kept changing")


def purge_orphans(client: KeyValueStore, user: str, *, after: str = "") -> str | None:
    """Remove the properties of up to :data:`ORPHAN_PAGE` items no longer in the drive,
    from the item id ``after``; the id to go on from, or None at the end.

    An item in the Trash is still the drive's: trashing it deletes its index cell and
    records it in ``x:<id>`` instead (:mod:`.drive.trash`), and a restore brings its
    properties back, so that cell keeps them too.  Items below a trashed folder keep
    their index cells until the folder is gone for good."""
    row = props_row(user)
    headers = client.get_row(row, "h:", after=f"h:{after}" if after else "", limit=ORPHAN_PAGE)
    ids = [column[2:] for column in headers if column[2:] != ROOT]
    cells = [(drive_row(user), column) for item_id in ids for column in
             (index_col(FILE, item_id), index_col(FOLDER, item_id), trash_col(item_id))]
    found = client.get_cells(cells) if cells else []
    for i, item_id in enumerate(ids):
        if all(cell is None for cell in found[3 * i:3 * i + 3]):
            remove_all(client, user, item_id)
    return ids[-1] if len(headers) == ORPHAN_PAGE and ids else None


def _read(client: KeyValueStore, user: str, item_id: str,
          names: list[str]) -> tuple[Cell | None, dict[str, Cell | None]]:
    """The item's header and the named properties' cells, in one round trip."""
    row = props_row(user)
    got = client.get_cells([(row, _header(item_id)),
                            *((row, _col(item_id, name)) for name in names)])
    cells = [cell if isinstance(cell, Cell) else None for cell in got]
    return cells[0], dict(zip(names, cells[1:], strict=True))


def _commit(client: KeyValueStore, user: str, item_id: str, header: Cell | None,
            mutations: list[Mutation], count: int, size: int) -> bool:
    """Apply ``mutations`` and the new header as one mutation conditioned on the header
    read; False when another change landed first (the caller pauses: :mod:`.retry`)."""
    head = _header(item_id)
    conditions: list[Condition] = [("version", head, 0 if header is None else header.version)]
    last: Mutation = (("delete", head) if count <= 0
                      else ("put", head, _pack({"n": count, "b": size})))
    try:
        client.mutate_row(props_row(user), conditions, [*mutations, last])
        return True
    except ConditionFailed:
        return False


def _counts(header: Cell | None) -> tuple[int, int]:
    record = None if header is None else _unpack(header.value)
    if not isinstance(record, dict):
        return 0, 0
    return int(record.get("n", 0)), int(record.get("b", 0))


def _prefix(item_id: str) -> str:
    return f"p:{item_id}/"


def _col(item_id: str, name: str) -> str:
    return f"p:{item_id}/{name}"


def _header(item_id: str) -> str:
    return f"h:{item_id}"


"""What one imapd process keeps of the folders its clients select: their records, by mod-sequence.

SELECT makes pymap's copy of the whole folder, a record per message: for an
INBOX of 10,000 messages one ``get_row`` of 10,000 ``u:`` cells, decoded one by
one, most of a SELECT's time.  Clients SELECT the same few folders again and
again (a new connection for each check, or a SELECT after each EXAMINE), and
between two SELECTs a folder rarely changes much.  So :class:`FolderRecords`
keeps, per (user, folder), the records as of a mod-sequence; the next SELECT
of that folder reads the folder cell, and

* if its mod-sequence is the one kept, uses the records as they are;
* if it moved on, asks :func:`shards.model.mail.changes_since` for what changed
  after the kept one (what a selected session does after every command) and
  applies it;
* if the log no longer reaches back, or the folder was made anew (another
  UIDVALIDITY), reads the folder whole, as without the cache.

Records are immutable and every change to one bumps its folder's mod-sequence,
so a kept copy is never wrong, only behind, and the change log brings it
forward.  A copy ahead of the folder's mod-sequence is another folder's (an
account erased and made again within a second has the same UIDVALIDITY) and
is not used.  A copy read while the user's group had lost its majority (stale) is
not kept.  The cache is bounded in records over all folders (:data:`MAX_RECORDS`,
about half a KiB each); the least recently selected folders go first, and a
folder larger than the whole bound is not kept.  It is used from the event
loop's thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shards.model.mail import Changes, Folder, Record

MAX_RECORDS = 100_000  # records kept over all folders: ~50 MB at ~0.5 KiB a record


@dataclass(frozen=True)
class _Kept:
    uidvalidity: int
    modseq: int                 # the records are as of this mod-sequence, or newer
    records: tuple[Record, ...]  # in UID order


class FolderRecords:
    """Recently selected folders' records (see the module docstring).

    :param max_records: records kept over all folders.
    """

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._kept: OrderedDict[tuple[str, int], _Kept] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        """Records kept, over all folders."""
        return self._count

    def get(self, user: str, folder: Folder) -> tuple[int, tuple[Record, ...]] | None:
        """``(mod-sequence, records)`` kept for ``folder`` (as its cell says now: the
        same UIDVALIDITY), or None."""
        kept = self._kept.get((user, folder.id))
        if kept is None or kept.uidvalidity != folder.uidvalidity:
            return None
        self._kept.move_to_end((user, folder.id))
        return kept.modseq, kept.records

    def put(self, user: str, folder: Folder, modseq: int, records: tuple[Record, ...]) -> None:
        """Keep ``records`` of ``folder``, as of ``modseq`` (or newer)."""
        self.drop(user, folder.id)
        if len(records) > self.max_records:
            return
        self._kept[(user, folder.id)] = _Kept(folder.uidvalidity, modseq, records)
        self._count += len(records)
        while self._count > self.max_records:
            _, oldest = self._kept.popitem(last=False)
            self._count -= len(oldest.records)

    def drop(self, user: str, fid: int) -> None:
        kept = self._kept.pop((user, fid), None)
        if kept is not None:
            self._count -= len(kept.records)


def applied(records: tuple[Record, ...], changes: Changes) -> tuple[Record, ...]:
    """``records`` (in UID order) with ``changes`` applied: changed records replaced or
    added, expunged ones removed; in UID order.  Applying a change twice changes nothing."""
    by_uid = {record.uid: record for record in records}
    for record in changes.updated:
        by_uid[record.uid] = record
    for uid in changes.expunged:
        by_uid.pop(uid, None)
    return tuple(by_uid[uid] for uid in sorted(by_uid))

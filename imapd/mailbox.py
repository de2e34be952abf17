"""pymap's mailbox interfaces on the mail model: one folder, and a user's set of folders.

:class:`MailboxData` is one folder of ``shards.model.mail`` as pymap's
``MailboxDataInterface``; :class:`MailboxSet` the user's folders as its
``MailboxSetInterface``.  Every call reaches the store through
:class:`imapd.store.StoreCalls` (a thread, never the event loop).

**Keeping a session current** is pymap's redis backend's design on the
model's change log: a selected folder remembers the mod-sequence it has seen
(``selected.mod_sequence``); after each command :meth:`MailboxData.update_selected`
asks :func:`shards.model.mail.changes_since` for what changed after it (one
read of the folder cell when nothing did) and hands pymap the changed records
and expunged UIDs, from which pymap makes the untagged EXISTS, EXPUNGE and
FETCH responses.  When the log no longer reaches back (a session asleep for
more than 1,000 changes) the whole folder is read again.  SELECT starts from
the process's copy of the folder's records when it has one (:mod:`imapd.cache`).

**IDLE** polls the folder's cell every ``idle_poll`` seconds (0.5 s): one small
read; a change of its mod-sequence -- a delivery by any smtpd, a flag set by
the webmail or another client -- ends the wait, so an idling client hears of
new mail well within 2 s.

**Folders are known by id**, not by name: a selected folder renamed by another
client stays selected, and one deleted and made again under the same name is a
new folder (a new id and UIDVALIDITY), never the old one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Iterable, Sequence
from typing import TYPE_CHECKING

from pymap.backend.mailbox import MailboxDataInterface, MailboxSetInterface
from pymap.flags import FlagOp
from pymap.listtree import ListTree
from pymap.mailbox import MailboxSnapshot
from pymap.parsing.specials import ObjectId, SequenceSet
from pymap.parsing.specials.flag import Flag, Recent, Wildcard, get_system_flags
from pymap.selected import SelectedSet

from shards.model import mail

from .cache import FolderRecords, applied
from .message import ContentLoader, Message
from .metrics import APPEND_BYTES

if TYPE_CHECKING:
    from pymap.concurrent import Event
    from pymap.interfaces.message import CachedMessage
    from pymap.parsing.message import AppendMessage
    from pymap.selected import SelectedMailbox

    from .store import StoreCalls

IDLE_ROUND = 25.0  # seconds one IDLE wait polls before pymap's loop asks again
SPECIAL_USE = {"sent": b"Sent", "drafts": b"Drafts", "trash": b"Trash", "junk": b"Junk"}
# Stored flags: the system flags, and keywords (\* in PERMANENTFLAGS, RFC 3501 7.1).
PERMANENT = frozenset(get_system_flags() - {Recent}) | {Wildcard}


def mailbox_id(fid: int) -> ObjectId:
    return ObjectId(b"F%d" % fid)


def fid_of(object_id: ObjectId) -> int:
    return int(object_id.value[1:])


class Snapshot(MailboxSnapshot):
    """pymap's folder snapshot; FLAGS lists real flags only (``\\*`` belongs in
    PERMANENTFLAGS, RFC 3501 7.2.6)."""

    @property
    def flags(self) -> frozenset[Flag]:
        return (self.permanent_flags | self.session_flags) - {Wildcard}


class MailboxData(MailboxDataInterface[Message]):
    """One folder (see the module docstring).

    :param folder: the folder's cell as read when the command began.
    :param stale: that read was stale (the user's group lost its majority): read-only.
    """

    def __init__(self, calls: StoreCalls, user: str, folder: mail.Folder, *, stale: bool,
                 loader: ContentLoader, quota: int | None, idle_poll: float,
                 folders: FolderRecords) -> None:
        self._calls, self._user, self.folder = calls, user, folder
        self._stale, self._loader, self._quota = stale, loader, quota
        self._folders = folders
        self._idle_poll = idle_poll
        self._selected_set = SelectedSet()

    @property
    def fid(self) -> int:
        return self.folder.id

    @property
    def quota(self) -> int | None:
        return self._quota

    @property
    def mailbox_id(self) -> ObjectId:
        return mailbox_id(self.fid)

    @property
    def readonly(self) -> bool:
        return self._stale

    @property
    def uid_validity(self) -> int:
        return self.folder.uidvalidity

    @property
    def permanent_flags(self) -> frozenset[Flag]:
        return PERMANENT

    @property
    def selected_set(self) -> SelectedSet:
        return self._selected_set

    def message(self, record: mail.Record) -> Message:
        return Message(record, self._loader)

    # -- keeping a selected session current ---------------------------------------------

    async def update_selected(self, selected: SelectedMailbox, *,
                              wait_on: Event | None = None) -> SelectedMailbox:
        if wait_on is not None and selected.mod_sequence is not None:
            await self._wait(selected.mod_sequence, wait_on)
        return await self._update(selected)

    async def _update(self, selected: SelectedMailbox) -> SelectedMailbox:
        if selected.mod_sequence is None:
            await self._load_all(selected)
            return selected
        changes, _stale = await self._calls.read(mail.changes_since, self._user, self.fid,
                                                 selected.mod_sequence)
        if changes is None:
            await self._load_all(selected)
        else:
            selected.add_updates([self.message(r) for r in changes.updated], changes.expunged)
            selected.mod_sequence = changes.modseq
        return selected

    async def _load_all(self, selected: SelectedMailbox) -> None:
        # The folder cell first: a change made while the records are read is then
        # newer than the mod-sequence kept, and the next update reports it (again).
        folder, stale = await self._calls.read(mail.get_folder, self._user, self.fid)
        if folder is None:
            raise KeyError(self.fid)
        records = await self._records(folder, stale)
        selected.set_messages([self.message(r) for r in records])
        selected.mod_sequence = folder.modseq

    async def _records(self, folder: mail.Folder, stale: bool) -> tuple[mail.Record, ...]:
        """Every record of ``folder``: the process's copy brought up to date when it has
        one (:mod:`imapd.cache`), else read whole."""
        kept = self._folders.get(self._user, folder)
        if kept is not None and kept[0] <= folder.modseq:  # (above: another folder's history)
            modseq, records = kept
            if modseq == folder.modseq:
                return records
            changes, stale_changes = await self._calls.read(mail.changes_since, self._user,
                                                            self.fid, modseq)
            if changes is not None:
                records = applied(records, changes)
                if not (stale or stale_changes):
                    self._folders.put(self._user, folder, changes.modseq, records)
                return records
        listed, stale_list = await self._calls.read(mail.list_folder, self._user, self.fid)
        records = tuple(listed)
        if stale or stale_list:
            self._folders.drop(self._user, folder.id)
        else:
            self._folders.put(self._user, folder, folder.modseq, records)
        return records

    async def _wait(self, seen: int, done: Event) -> None:
        """Until the folder's mod-sequence passes ``seen``, ``done`` is set, or a round ends."""
        deadline = time.monotonic() + IDLE_ROUND
        while not done.is_set() and time.monotonic() < deadline:
            folder, _ = await self._calls.read(mail.get_folder, self._user, self.fid)
            if folder is None or folder.modseq != seen:
                return
            await done.wait(timeout=self._idle_poll)

    # -- messages --------------------------------------------------------------------------

    async def append(self, append_msg: AppendMessage, *, recent: bool = False) -> Message:
        when = append_msg.when.timestamp() if append_msg.when is not None else None
        flags = [str(flag) for flag in append_msg.flag_set if flag != Recent]
        record = await self._calls.write(mail.append, self._user, self.fid,
                                         append_msg.literal, flags=flags, date=when,
                                         quota=self._quota)
        APPEND_BYTES.inc(len(append_msg.literal))
        return self.message(record)

    async def copy(self, uid: int, destination: MailboxData, *,
                   recent: bool = False) -> int | None:
        transfer = await self._calls.write(mail.copy, self._user, self.fid, [uid],
                                           destination.fid, quota=self._quota)
        return transfer.uids.get(uid)

    async def move(self, uid: int, destination: MailboxData, *,
                   recent: bool = False) -> int | None:
        transfer = await self._calls.write(mail.move, self._user, self.fid, [uid],
                                           destination.fid)
        return transfer.uids.get(uid)

    async def get(self, uid: int, cached_msg: CachedMessage) -> Message:
        record, _ = await self._calls.read(mail.get_record, self._user, self.fid, uid)
        if record is None:
            return Message.copy_expunged(cached_msg)
        return self.message(record)

    async def update(self, uid: int, cached_msg: CachedMessage, flag_set: frozenset[Flag],
                     mode: FlagOp) -> Message:
        updated = await self.store_flags([uid], flag_set, mode)
        if uid in updated:
            return updated[uid]
        return await self.get(uid, cached_msg)

    async def store_flags(self, uids: Sequence[int], flag_set: Iterable[Flag],
                          mode: FlagOp) -> dict[int, Message]:
        """Change the flags of many messages (batches of the model); the changed ones."""
        how = {FlagOp.ADD: "add", FlagOp.DELETE: "remove", FlagOp.REPLACE: "replace"}[mode]
        flags = [str(flag) for flag in flag_set if flag not in (Recent, Wildcard)]
        result = await self._calls.write(mail.store_flags, self._user, self.fid, uids, flags,
                                         how)
        return {r.uid: self.message(r) for r in result.updated}

    async def delete(self, uids: Iterable[int]) -> None:
        uids = list(uids)
        if uids:
            await self._calls.write(mail.expunge, self._user, self.fid, uids)

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        pass  # \Recent is not kept (IMAP4rev2 dropped it): no message is recent

    async def cleanup(self) -> None:
        pass

    async def snapshot(self) -> MailboxSnapshot:
        folder = self.folder
        return Snapshot(self.mailbox_id, self.readonly, folder.uidvalidity, PERMANENT,
                        self.session_flags, folder.exists, 0, folder.unseen, None,
                        folder.uidnext)

    async def find(self, seq_set: SequenceSet, selected: SelectedMailbox
                   ) -> AsyncIterable[tuple[int, Message]]:
        # From the session's copy, brought up to date after every command: one
        # message at a time from the store would be a round trip each.
        for seq, cached in selected.messages.get_all(seq_set):
            if isinstance(cached, Message):
                yield seq, cached


class MailboxSet(MailboxSetInterface[MailboxData]):
    """The user's folders (see the module docstring)."""

    def __init__(self, calls: StoreCalls, user: str, *, loader: ContentLoader,
                 quota: int | None, idle_poll: float, folders: FolderRecords) -> None:
        self._calls, self._user, self._loader = calls, user, loader
        self._quota, self._idle_poll = quota, idle_poll
        self._folders = folders
        self.stale = False  # the last folder read was stale (read-only service)

    @property
    def delimiter(self) -> str:
        return mail.DELIMITER

    def _data(self, folder: mail.Folder, stale: bool) -> MailboxData:
        self.stale = stale
        return MailboxData(self._calls, self._user, folder, stale=stale, loader=self._loader,
                           quota=self._quota, idle_poll=self._idle_poll,
                           folders=self._folders)

    async def folders(self) -> list[mail.Folder]:
        folders, _ = await self._calls.read(mail.list_folders, self._user)
        return folders

    async def get_mailbox(self, name: str) -> MailboxData:
        folder, stale = await self._calls.read(mail.find_folder, self._user, name)
        if folder is None:
            raise KeyError(name)
        return self._data(folder, stale)

    async def get_by_id(self, object_id: ObjectId) -> MailboxData:
        """The folder selected earlier, by id (renamed meanwhile or not).

        :raises KeyError: it was deleted.
        """
        folder, stale = await self._calls.read(mail.get_folder, self._user, fid_of(object_id))
        if folder is None:
            raise KeyError(object_id)
        return self._data(folder, stale)

    async def list_mailboxes(self) -> ListTree:
        return ListTree(self.delimiter).update(*(f.name for f in await self.folders()))

    async def list_subscribed(self) -> ListTree:
        return ListTree(self.delimiter).update(
            *(f.name for f in await self.folders() if f.subscribed))

    async def add_mailbox(self, name: str) -> ObjectId:
        try:
            folder = await self._calls.write(mail.create_folder, self._user, name)
        except mail.FolderExists as exc:
            raise ValueError(name) from exc
        return mailbox_id(folder.id)

    async def delete_mailbox(self, name: str) -> None:
        folder = (await self.get_mailbox(name)).folder
        await self._calls.write(mail.delete_folder, self._user, folder.id)

    async def rename_mailbox(self, before: str, after: str) -> None:
        folder = (await self.get_mailbox(before)).folder
        try:
            await self._calls.write(mail.rename_folder, self._user, folder.id, after)
        except mail.FolderExists as exc:
            raise ValueError(after) from exc

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        folder = (await self.get_mailbox(name)).folder
        await self._calls.write(mail.set_subscribed, self._user, folder.id, subscribed)

    async def special_uses(self) -> dict[str, bytes]:
        """Folder name -> its RFC 6154 attribute, for the special folders but INBOX."""
        return {f.name: SPECIAL_USE[f.special] for f in await self.folders()
                if f.special in SPECIAL_USE}

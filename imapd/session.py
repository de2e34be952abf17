"""One logged-in user's IMAP session: pymap's ``BaseSession`` on our folders, batched.

pymap's :class:`~pymap.backend.session.BaseSession` does every command on many
messages one message at a time (a STORE, COPY or MOVE of 500 messages is 500
calls of the backend); the mail model does them in batches of 25 per
mutation.  So the commands on message sets are done here in one model call
each:

* **FETCH** answers from the session's copy of the folder (its records, kept
  current after every command, :mod:`imapd.mailbox`), reading only the
  content it needs (:mod:`imapd.message`); a FETCH of bodies without PEEK sets
  ``\\Seen`` on the unseen ones in one :func:`~shards.model.mail.store_flags`.
* **STORE**, **COPY**, **MOVE** are one :func:`~shards.model.mail.store_flags`,
  :func:`~shards.model.mail.copy` or :func:`~shards.model.mail.move` each;
  COPY and MOVE answer COPYUID from the model's UID map (RFC 4315).
* **SEARCH** walks the session's copy, reading header blocks a window at a time;
  BODY and TEXT are answered from the mailbox's word index first (:mod:`imapd.search`),
  so no body is read for them.

LIST marks the special folders with their RFC 6154 attribute (``\\Sent``,
``\\Drafts``, ``\\Trash``, ``\\Junk``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from pymap.backend.session import BaseSession
from pymap.exceptions import MailboxNotFound, MailboxReadOnly, ResponseError
from pymap.flags import FlagOp
from pymap.parsing.response.code import AppendUid, CopyUid
from pymap.parsing.specials import FetchRequirement, SequenceSet
from pymap.parsing.specials.flag import Seen
from pymap.search import SearchCriteriaSet, SearchParams

from raftkv.errors import RaftKVError
from shards.model import mail
from shards.readonly import READ_ONLY_MESSAGE

from .cache import FolderRecords
from .errors import StoreRefusal
from .mailbox import MailboxData, MailboxSet
from .message import ContentLoader, Message
from .search import rewrite

if TYPE_CHECKING:
    from pymap.concurrent import Event
    from pymap.config import IMAPConfig
    from pymap.parsing.message import AppendMessage
    from pymap.parsing.specials import SearchKey
    from pymap.parsing.specials.flag import Flag
    from pymap.selected import SelectedMailbox

    from .store import StoreCalls

log = logging.getLogger(__name__)


class Session(BaseSession[Message]):
    """The session of ``owner`` (see the module docstring)."""

    def __init__(self, owner: str, config: IMAPConfig, calls: StoreCalls, *,
                 quota: int | None, idle_poll: float, folders: FolderRecords | None = None
                 ) -> None:
        super().__init__(owner)
        self._config = config
        self._calls = calls
        self._idle_poll = idle_poll
        self.loader = ContentLoader(calls, owner)
        self._mailbox_set = MailboxSet(calls, owner, loader=self.loader, quota=quota,
                                       idle_poll=idle_poll,
                                       folders=FolderRecords() if folders is None else folders)

    @property
    def config(self) -> IMAPConfig:
        return self._config

    @property
    def mailbox_set(self) -> MailboxSet:
        return self._mailbox_set

    @property
    def stale(self) -> bool:
        """The folder read last came from a stale read (its group lost its majority)."""
        return self._mailbox_set.stale

    @staticmethod
    def _read_only(mbx: MailboxData, name: str | None = None) -> ResponseError:
        """Why ``mbx`` takes no change: its group has lost its majority (say so, as
        ``NO [UNAVAILABLE]``), or it was opened read-only (EXAMINE: ``NO [READ-ONLY]``)."""
        if mbx.readonly:
            return StoreRefusal(b"UNAVAILABLE", READ_ONLY_MESSAGE)
        return MailboxReadOnly(name)

    async def _get_selected(self, selected: SelectedMailbox) -> MailboxData:
        try:
            return await self._mailbox_set.get_by_id(selected.mailbox_id)
        except KeyError as exc:
            raise MailboxNotFound(str(selected.lookup)) from exc

    async def check_mailbox(self, selected: SelectedMailbox, *, wait_on: Event | None = None,
                            housekeeping: bool = False) -> SelectedMailbox:
        if wait_on is None:
            return await super().check_mailbox(selected, housekeeping=housekeeping)
        try:  # IDLE: pymap asks again until the client says DONE
            return await super().check_mailbox(selected, wait_on=wait_on)
        except RaftKVError as exc:
            # A store that does not answer for a moment (an election) must not end the
            # IDLE: pymap would hang up with BYE [SERVERBUG].  Wait, then look again.
            log.info("IDLE could not read its folder (%s); trying again", type(exc).__name__)
            await wait_on.wait(timeout=self._idle_poll)
            return selected

    async def list_mailboxes(self, ref_name: str, filter_: str, subscribed: bool = False,
                             selected: SelectedMailbox | None = None
                             ) -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]],
                                        SelectedMailbox | None]:
        listed, updates = await super().list_mailboxes(ref_name, filter_, subscribed, selected)
        special = await self._mailbox_set.special_uses()
        return [(name, delimiter, [*attributes, *([special[name]] if name in special else [])])
                for name, delimiter, attributes in listed], updates

    async def append_messages(self, name: str, messages: Sequence[AppendMessage],
                              selected: SelectedMailbox | None = None
                              ) -> tuple[AppendUid, SelectedMailbox | None]:
        try:
            mbx = await self._mailbox_set.get_mailbox(name)
        except KeyError as exc:
            raise MailboxNotFound(name, try_create=True) from exc
        if mbx.readonly:
            raise self._read_only(mbx, name)
        # pymap's append_messages, on the folder just read: pymap's own reads it again,
        # a round trip more per APPEND.
        dest_selected = self._pick_selected(selected, mbx)
        uids: list[int] = []
        for append_msg in messages:
            msg = await mbx.append(append_msg, recent=not dest_selected)
            if dest_selected:
                dest_selected.session_flags.add_recent(msg.uid)
            uids.append(msg.uid)
        return AppendUid(mbx.uid_validity, uids), await self._load_updates(selected, mbx)

    async def expunge_mailbox(self, selected: SelectedMailbox,
                              uid_set: SequenceSet | None = None) -> SelectedMailbox:
        mbx = await self._get_selected(selected)
        if selected.readonly or mbx.readonly:
            raise self._read_only(mbx)
        return await super().expunge_mailbox(selected, uid_set)

    async def fetch_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet,
                             set_seen: bool) -> tuple[Iterable[tuple[int, Message]],
                                                      SelectedMailbox]:
        mbx = await self._get_selected(selected)
        found = [(seq, msg) for seq, msg in selected.messages.get_all(sequence_set)
                 if isinstance(msg, Message)]
        if set_seen and not mbx.readonly:
            unseen = [msg.uid for _, msg in found if Seen not in msg.permanent_flags]
            if unseen:
                changed = await mbx.store_flags(unseen, [Seen], FlagOp.ADD)
                found = [(seq, changed.get(msg.uid, msg)) for seq, msg in found]
        self.loader.expect(msg.record.id for _, msg in found)
        return found, await mbx.update_selected(selected)

    async def search_mailbox(self, selected: SelectedMailbox, keys: frozenset[SearchKey]
                             ) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        mbx = await self._get_selected(selected)
        folder = {msg.record.id: msg.uid for _, msg in selected.messages.get_all(
            SequenceSet.all()) if isinstance(msg, Message)}

        async def lookup(words: list[str]) -> set[int]:
            (ids, complete), _stale = await self._calls.read(
                mail.matching_ids, self.owner, words, list(folder))
            if not complete:
                log.info("SEARCH of %s: the index's answer was cut at its bounds", self.owner)
            return {folder[msg_id] for msg_id in ids if msg_id in folder}

        keys = await rewrite(keys, lookup)
        requirement = FetchRequirement.reduce(key.requirement for key in keys)
        search = SearchCriteriaSet(keys, SearchParams(
            selected, disabled=self.config.disable_search_keys))
        candidates = [(seq, msg) async for seq, msg in mbx.find(search.sequence_set, selected)]
        self.loader.expect(msg.record.id for _, msg in candidates)
        matched = []
        for seq, msg in candidates:
            if search.matches(seq, msg, await msg.load_content(requirement)):
                matched.append((seq, msg))
        return matched, await mbx.update_selected(selected)

    async def update_flags(self, selected: SelectedMailbox, sequence_set: SequenceSet,
                           flag_set: frozenset[Flag], mode: FlagOp = FlagOp.REPLACE
                           ) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        mbx = await self._get_selected(selected)
        if selected.readonly or mbx.readonly:
            raise self._read_only(mbx)
        found = [(seq, msg) for seq, msg in selected.messages.get_all(sequence_set)
                 if isinstance(msg, Message)]
        permanent = selected.permanent_flags & flag_set
        changed = await mbx.store_flags([msg.uid for _, msg in found], permanent, mode)
        answered = []
        for seq, msg in found:
            now = changed.get(msg.uid, msg)
            selected.session_flags.update(msg.uid, flag_set, mode)
            answered.append((seq, now))
        return answered, await mbx.update_selected(selected)

    async def copy_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet,
                            mailbox: str) -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._transfer(selected, sequence_set, mailbox, moving=False)

    async def move_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet,
                            mailbox: str) -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._transfer(selected, sequence_set, mailbox, moving=True)

    async def _transfer(self, selected: SelectedMailbox, sequence_set: SequenceSet,
                        mailbox: str, *, moving: bool) -> tuple[CopyUid | None, SelectedMailbox]:
        mbx = await self._get_selected(selected)
        if moving and (selected.readonly or mbx.readonly):
            raise self._read_only(mbx)
        try:
            dest = await self._mailbox_set.get_mailbox(mailbox)
        except KeyError as exc:
            raise MailboxNotFound(mailbox, try_create=True) from exc
        if dest.readonly:
            raise self._read_only(dest, mailbox)
        uids = [uid for _, uid in selected.messages.get_uids(sequence_set)]
        if moving:
            transfer = await self._calls.write(mail.move, self.owner, mbx.fid, uids, dest.fid)
        else:
            transfer = await self._calls.write(mail.copy, self.owner, mbx.fid, uids, dest.fid,
                                               quota=mbx.quota)
        pairs = list(transfer.uids.items())
        copy_uid = CopyUid(transfer.uidvalidity, pairs) if pairs else None
        return copy_uid, await mbx.update_selected(selected)


def session_factory(config: IMAPConfig, calls: StoreCalls, *, quota: int | None,
                    idle_poll: float, folders: FolderRecords
                    ) -> Callable[[str], AbstractAsyncContextManager[Session]]:
    """What :class:`imapd.login.Login` opens for a user who logged in.

    :param folders: the process's copy of selected folders, shared by its sessions.
    """

    @asynccontextmanager
    async def new_session(owner: str) -> AsyncIterator[Session]:
        await calls.write(mail.ensure_current, owner)  # migrate an old mailbox first
        yield Session(owner, config, calls, quota=quota, idle_poll=idle_poll, folders=folders)

    return new_session

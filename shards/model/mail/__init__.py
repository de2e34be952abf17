"""Each user's mail: folders, messages with UIDs, flags and mod-sequences (layer: shards).

The model the IMAP server and the webmail share.  Every function takes a
:class:`~raftkv.interface.KeyValueStore` and a user name; every change is one
``mutate_row`` on the user's mailbox row conditioned on the versions of the cells
it read, retried on ``ConditionFailed`` a bounded number of times.  Every
public function that reads or changes the mailbox row first brings an old
mailbox to this layout (:func:`ensure_current`: one ``get``, none once this
process saw it current); the message rows need no migration.

Layout (one row per user; the ``{user}`` hash tag keeps it and the message rows
on one shard)::

    row {user}/mail
        v                       layout version, 2 (present: migrated)
        fseq                    {"next": next folder id, "uidvalidity": last handed out}
        f:<fid:06d>             folder: name, special, uidvalidity, uidnext, modseq,
                                exists, unseen, subscribed
        u:<fid:06d>:<uid:010d>  message record: id, flags, modseq, date, size, sender,
                                subject, to, cc, message_id, in_reply_to (trashed, from)
        m:<msg_id>              pointer [fid, uid] to the message's record
        c:<fid:06d>:<modseq:012d>  change log: [uid, "fetch"|"expunge"], last 1000 per folder
        mid:<sha256>            dedup of SMTP deliveries per (folder, Message-ID)
        usage                   bytes of every message in every folder (the quota's count)
    row {user}/msg:<msg_id>
        raw                     the message as received (any size)
        hdr                     its header block (absent when over 64 KiB)
    row {user}/mailidx          the word index (:mod:`.index`)
        w:<token>:<msg_id>      empty: the message holds a word that is <token>
        t:<msg_id>              its tokens (present: indexed); backfill, done

Special folders have fixed ids: :data:`INBOX` 1, :data:`SENT` 2, :data:`DRAFTS` 3,
:data:`TRASH` 4, :data:`JUNK` 5; user folders from 6, never reused.  Names are
Unicode (IMAP's modified UTF-7 is the IMAP layer's), "/" the hierarchy delimiter.

API (``from shards.model import mail``):

- folders (:mod:`.folders`): :func:`list_folders`, :func:`get_folder` (= :func:`status`:
  the folder cell alone), :func:`find_folder`, :func:`folder_id` (by role),
  :func:`create_folder`, :func:`rename_folder`, :func:`delete_folder`,
  :func:`set_subscribed`;
- messages (:mod:`.messages`): :func:`deliver` (SMTP, Sent copies: dedup, quota),
  :func:`append` (IMAP APPEND: flags, date, quota), :func:`get_record`,
  :func:`locate` (by msg_id), :func:`list_folder` (UID range), :func:`list_newest`
  (newest first, paged), :func:`header_blocks` (many at once), :func:`get_raw`,
  :func:`raw_stream`;
- changes (:mod:`.changes`, :mod:`.moves`): :func:`store_flags` (add, remove, replace;
  UNCHANGEDSINCE), :func:`expunge`, :func:`move`, :func:`copy` (both answer a
  :class:`Transfer` for COPYUID), :func:`changes_since` (None: reload the folder),
  :func:`expire_trash`;
- search (:mod:`.search`, :mod:`.index`): :func:`search` (a :class:`Query` of sender,
  to, subject, body/text words, dates: :class:`Found` UIDs), :func:`matching_ids`
  (IMAP's SEARCH narrows with it), :func:`backfill_index` (index what was stored
  before the index; bounded, call again while it answers True);
- :func:`ensure_current` (:mod:`.migrate`); :func:`usage`;
- old mail code beside the new (:mod:`.strays`): :func:`fold_old_writes`; the folder
  reads (:func:`get_folder`, :func:`changes_since`) and :func:`locate` repair on the way.

Records are :class:`Record`, folders :class:`Folder` (frozen; ``version`` is the
cell's when read).  Errors (:mod:`shards.model.errors`): :class:`NoSuchFolder`,
:class:`FolderExists`, :class:`BadFolderName`, :class:`FolderRefused`,
:class:`BadFlag`, :class:`BadQuery` (all :class:`MailError`, each also Refused or NotFound), and
:class:`~shards.model.errors.MailboxFull` (OverLimit).  docs/data-model.md,
"Mailbox", has the costs and the migration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BadFlag, BadFolderName, FolderExists, FolderRefused, MailError, NoSuchFolder
from . import strays as _strays
from .changes import Changes, FlagMode, FlagResult, changes_since, expunge, store_flags
from .folders import (
    create_folder,
    delete_folder,
    find_folder,
    folder_id,
    get_folder,
    list_folders,
    rename_folder,
    set_subscribed,
    status,
)
from .headers import ParsedHeaders, header_block, parse_headers
from .index import backfill as backfill_index
from .layout import (
    ANSWERED,
    DELETED,
    DELIMITER,
    DRAFT,
    DRAFTS,
    FLAGGED,
    INBOX,
    JUNK,
    SEEN,
    SENT,
    TRASH,
    Folder,
    Record,
    is_message_id,
    mailbox_row,
    message_row,
    new_message_id,
)
from .messages import (
    Delivered,
    append,
    dedup_column,
    deliver,
    get_raw,
    get_record,
    header_blocks,
    list_folder,
    list_newest,
    locate,
    raw_stream,
)
from .migrate import ensure_current
from .moves import Transfer, copy, expire_trash, move
from .reads import usage as _usage
from .search import BadQuery, Found, Query, matching_ids, search

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore


def fold_old_writes(client: KeyValueStore, user: str) -> bool:
    """Fold in what old mail code (before layout 2, a rolling upgrade) wrote into
    ``user``'s mailbox, if its usage cell says it did (one ``get`` when it did not);
    whether it looked (then listings read before may miss what it folded)."""
    if not ensure_current(client, user, create=False):
        return False
    return _strays.check_now(client, user)


def usage(client: KeyValueStore, user: str) -> int:
    """Bytes of every message in ``user``'s mailbox, every folder (Trash too)."""
    ensure_current(client, user, create=False)
    return _usage(client, user)[0]


__all__ = [
    "ANSWERED", "DELETED", "DELIMITER", "DRAFT", "DRAFTS", "FLAGGED", "INBOX", "JUNK", "SEEN",
    "SENT", "TRASH", "BadFlag", "BadFolderName", "BadQuery", "Changes", "Delivered", "FlagMode",
    "FlagResult", "Folder", "FolderExists", "FolderRefused", "Found", "MailError",
    "NoSuchFolder", "ParsedHeaders", "Query", "Record", "Transfer", "append", "backfill_index",
    "changes_since", "copy", "create_folder",
    "dedup_column", "delete_folder", "deliver", "ensure_current", "expire_trash", "expunge",
    "find_folder", "fold_old_writes", "folder_id", "get_folder", "get_raw", "get_record", "header_block",
    "header_blocks", "is_message_id", "list_folder", "list_folders", "list_newest", "locate",
    "mailbox_row", "matching_ids", "message_row", "move", "new_message_id", "parse_headers", "raw_stream",
    "rename_folder", "search", "set_subscribed", "status", "store_flags", "usage"]

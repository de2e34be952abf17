"""The mailbox's layout: rows, columns, cell formats, names, flags and the retry loop (see the package).

Everything here is pure (no store calls) except :func:`retrying`, which only
sleeps between the attempts its caller makes.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftkv.errors import ConditionFailed

# The model's one codec, re-exported: the drive's and the mailbox's modules take it from here.
from ..codec import pack as pack
from ..codec import unpack as unpack
from ..errors import BadFlag, BadFolderName
from ..retry import attempts as tries

if TYPE_CHECKING:
    from raftkv.interface import Condition, Mutation

log = logging.getLogger("shards.model.mail")

LAYOUT_VERSION = 2
VERSION_COL = "v"
FSEQ_COL = "fseq"
USAGE_COL = "usage"
DEDUP_PREFIX = "mid:"
POINTER_PREFIX = "m:"
FOLDER_PREFIX = "f:"
RECORD_PREFIX = "u:"
CHANGE_PREFIX = "c:"
RAW_COL = "raw"
HEADER_COL = "hdr"

# Special folders: fixed ids, fixed names, a role the apps look them up by.
INBOX, SENT, DRAFTS, TRASH, JUNK = 1, 2, 3, 4, 5
SPECIAL_NAMES = {INBOX: "INBOX", SENT: "Sent", DRAFTS: "Drafts", TRASH: "Trash", JUNK: "Junk"}
ROLES = {INBOX: "inbox", SENT: "sent", DRAFTS: "drafts", TRASH: "trash", JUNK: "junk"}
ROLE_IDS = {role: fid for fid, role in ROLES.items()}
FIRST_USER_FOLDER = 6
MAX_FOLDER_ID = 999_999     # six digits in the column names
MAX_FOLDERS = 500           # per user: the folder list is one get_row, a rename one mutation
MAX_FOLDER_NAME = 200       # characters
DELIMITER = "/"
MAX_UID = 2 ** 32 - 1       # IMAP's UIDs and UIDVALIDITY are 32-bit
UIDVALIDITY_EPOCH = 1_700_000_000

KEEP = 1000                 # change-log entries kept per folder
BATCH = 25                  # records per mutation of a batch operation...
BATCH_BYTES = 24 * 1024     # ...and at most this many bytes of them (a Raft entry is < 32 KiB)
ATTEMPTS = 50               # re-reads of a contended mutation (every delivery bumps its folder)

SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"
SYSTEM_FLAGS = {f.lower(): f for f in (SEEN, ANSWERED, FLAGGED, DELETED, DRAFT)}
MAX_KEYWORDS = 32           # per message: a record stays small
MAX_FLAG_CHARS = 64
# An IMAP atom (RFC 3501): no atom-specials, no controls, ASCII; a keyword does not start with "\".
_KEYWORD = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")
_MSG_ID = re.compile(r"\d{20}-[0-9a-f]{16}")


# -- rows and columns ---------------------------------------------------------------------


def check_user(user: str) -> str:
    # Braces would change the row's hash tag (and so its shard), "/" its row family.
    if not user or any(ch in user for ch in "{}/"):
        raise ValueError(f"bad user name {user!r}")
    return user


def mailbox_row(user: str) -> str:
    return f"{{{check_user(user)}}}/mail"


def message_row(user: str, msg_id: str) -> str:
    return f"{{{check_user(user)}}}/msg:{msg_id}"


def folder_col(fid: int) -> str:
    return f"{FOLDER_PREFIX}{fid:06d}"


def record_prefix(fid: int) -> str:
    return f"{RECORD_PREFIX}{fid:06d}:"


def record_col(fid: int, uid: int) -> str:
    return f"{record_prefix(fid)}{uid:010d}"


def pointer_col(msg_id: str) -> str:
    return POINTER_PREFIX + msg_id


def change_prefix(fid: int) -> str:
    return f"{CHANGE_PREFIX}{fid:06d}:"


def change_col(fid: int, modseq: int) -> str:
    return f"{change_prefix(fid)}{modseq:012d}"


def uid_of(column: str) -> int:
    """The UID of a record column (``u:<fid>:<uid>``)."""
    return int(column.rsplit(":", 1)[1])


def fid_of(column: str) -> int:
    """The folder id of a folder column (``f:<fid>``)."""
    return int(column[len(FOLDER_PREFIX):])


def new_message_id(now_ns: int | None = None) -> str:
    """A fresh message id that sorts by arrival time (unguessable: it names the raw row)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return f"{now_ns:020d}-{secrets.token_hex(8)}"


def is_message_id(msg_id: str) -> bool:
    """Whether ``msg_id`` has our id's shape (ids arrive in URLs: check before use)."""
    return isinstance(msg_id, str) and _MSG_ID.fullmatch(msg_id) is not None


# -- cells --------------------------------------------------------------------------------


def unpack_int(value: bytes) -> int | None:
    number = unpack(value)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


# The usage cell's two spellings of one count.  Code of layout 2 writes it as msgpack's
# signed 64-bit form, which old code (before layout 2) reads as the same int but never
# writes (msgpack spells a non-negative int in its shortest unsigned form): a usage cell
# in the short form says an old smtpd or portal wrote this mailbox since it was last
# checked (:mod:`.strays`).
_CLEAN_USAGE = b"\xd3"


def pack_usage(used: int, *, clean: bool) -> bytes:
    """The usage cell's value: ``clean`` in the form only layout 2 writes, else as old code
    would (a mark that stray old-layout cells may be waiting to be folded in)."""
    return _CLEAN_USAGE + used.to_bytes(8, "big", signed=True) if clean else pack(used)


def usage_clean(value: bytes | None) -> bool:
    """Whether a usage cell's value (None: no cell) was last written by layout-2 code that
    had found no old writer's mark (:func:`pack_usage`)."""
    return value is None or (len(value) == 9 and value.startswith(_CLEAN_USAGE))


def unpack_pointer(value: bytes) -> tuple[int, int] | None:
    """``(fid, uid)`` of an ``m:`` cell; None for an old-layout dict or garbage."""
    pointer = unpack(value)
    if (isinstance(pointer, list) and len(pointer) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in pointer)):
        return pointer[0], pointer[1]
    return None


@dataclass(frozen=True)
class Folder:
    """A folder as its cell says; the counts are what IMAP STATUS and the webmail show."""

    id: int
    name: str
    special: str | None        # "inbox", "sent", "drafts", "trash", "junk" or None
    uidvalidity: int
    uidnext: int
    modseq: int                # the highest mod-sequence given out in this folder
    exists: int
    unseen: int
    subscribed: bool
    version: int = 0           # of its cell, when read (conditions of the next change)

    def fields(self) -> dict[str, Any]:
        return {"name": self.name, "special": self.special, "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext, "modseq": self.modseq, "exists": self.exists,
                "unseen": self.unseen, "subscribed": self.subscribed}


def folder_from_cell(fid: int, value: bytes, version: int) -> Folder | None:
    data = unpack(value)
    try:
        return Folder(id=fid, name=str(data["name"]), special=data.get("special"),
                      uidvalidity=int(data["uidvalidity"]), uidnext=int(data["uidnext"]),
                      modseq=int(data["modseq"]), exists=int(data["exists"]),
                      unseen=int(data["unseen"]), subscribed=bool(data.get("subscribed", True)),
                      version=version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("skipping malformed folder %s: %r", fid, exc)
        return None


@dataclass(frozen=True)
class Record:
    """One message in one folder (the ``u:`` cell), without its bytes."""

    fid: int
    uid: int
    id: str                    # our message id: the raw row, the webmail's URLs
    flags: tuple[str, ...]     # sorted; system flags spelt as SYSTEM_FLAGS, then keywords
    modseq: int
    date: float                # internal date (arrival, or APPEND's date), unix seconds
    size: int                  # bytes of the raw message
    sender: str = ""
    subject: str = ""
    to: str = ""
    cc: str = ""
    message_id: str = ""
    in_reply_to: str = ""
    trashed: float | None = None   # when it was moved to Trash
    origin: int | None = None      # the folder it was moved to Trash from ("from")
    version: int = 0               # of its cell, when read

    @property
    def seen(self) -> bool:
        return SEEN in self.flags

    def fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "flags": list(self.flags), "modseq": self.modseq, "date": self.date,
            "size": self.size, "sender": self.sender, "subject": self.subject, "to": self.to,
            "cc": self.cc, "message_id": self.message_id, "in_reply_to": self.in_reply_to}
        if self.trashed is not None:
            data["trashed"] = self.trashed
            data["from"] = self.origin
        return data


def record_from_cell(fid: int, uid: int, value: bytes, version: int) -> Record | None:
    data = unpack(value)
    try:
        trashed = data.get("trashed")
        return Record(
            fid=fid, uid=uid, id=str(data["id"]), flags=tuple(str(f) for f in data["flags"]),
            modseq=int(data["modseq"]), date=float(data["date"]), size=max(0, int(data["size"])),
            sender=str(data.get("sender", "")), subject=str(data.get("subject", "")),
            to=str(data.get("to", "")), cc=str(data.get("cc", "")),
            message_id=str(data.get("message_id", "")),
            in_reply_to=str(data.get("in_reply_to", "")),
            trashed=None if trashed is None else float(trashed),
            origin=None if data.get("from") is None else int(data["from"]), version=version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("skipping malformed message record %s/%s: %r", fid, uid, exc)
        return None


def packed_size(record: Record) -> int:
    """Bytes a record's put adds to a mutation (its column, value and framing)."""
    return len(pack(record.fields())) + 48


# -- names and flags ----------------------------------------------------------------------


def check_folder_name(name: str) -> str:
    """``name`` as stored (NFC; a first part "inbox" in any case spelt "INBOX") if it may
    name a user folder.

    :raises BadFolderName: empty or longer than :data:`MAX_FOLDER_NAME` characters, a control
        character, an empty path part (``a//b``, a leading or trailing ``/``), or "INBOX" in
        any case (the inbox has that name alone; IMAP compares it case-insensitively, so
        its subfolders are "INBOX/..." however the client spells it).
    """
    if not isinstance(name, str):
        raise BadFolderName("A folder name is text.")
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= MAX_FOLDER_NAME:
        raise BadFolderName(f"A folder name has 1 to {MAX_FOLDER_NAME} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in name):
        raise BadFolderName("A folder name cannot hold control characters.")
    parts = name.split(DELIMITER)
    if not all(parts):
        raise BadFolderName("A folder name cannot begin or end with '/', nor hold '//'.")
    if parts[0].upper() == "INBOX":
        if len(parts) == 1:
            raise BadFolderName("INBOX is the inbox's name; choose another.")
        name = DELIMITER.join(["INBOX", *parts[1:]])
    return name


def is_below(name: str, parent: str) -> bool:
    """Whether folder ``name`` is inside ``parent`` (at any depth)."""
    return name.startswith(parent + DELIMITER)


def normalise_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """Flags as stored: system flags in their usual spelling, keywords as given, sorted, once each.

    ``\\Recent`` is a session's flag (the IMAP layer's), never stored: refused here.

    :raises BadFlag: an unknown system flag, a keyword that is not an IMAP atom or is longer
        than :data:`MAX_FLAG_CHARS`, or more than :data:`MAX_KEYWORDS` keywords.
    """
    found: set[str] = set()
    for flag in flags:
        if not isinstance(flag, str):
            raise BadFlag("A flag is text.")
        if flag.startswith("\\"):
            known = SYSTEM_FLAGS.get(flag.lower())
            if known is None:
                raise BadFlag(f"{flag[:MAX_FLAG_CHARS]!r} is not a flag that can be stored.")
            found.add(known)
        elif len(flag) > MAX_FLAG_CHARS or not _KEYWORD.fullmatch(flag):
            raise BadFlag(f"{flag[:MAX_FLAG_CHARS]!r} is not a keyword that can be stored.")
        else:
            found.add(flag)
    if len(found - set(SYSTEM_FLAGS.values())) > MAX_KEYWORDS:
        raise BadFlag(f"A message keeps at most {MAX_KEYWORDS} keywords.")
    return tuple(sorted(found))


def next_uidvalidity(last: int, now: float | None = None) -> int:
    """A UIDVALIDITY above ``last`` and at least the seconds since :data:`UIDVALIDITY_EPOCH`.

    The clock part keeps values increasing across an account erased and made again
    (its ``fseq`` is gone then); the ``last + 1`` part across a clock that went back.
    """
    now = time.time() if now is None else now
    value = max(last + 1, int(now) - UIDVALIDITY_EPOCH, 1)
    if value > MAX_UID:
        raise OverflowError("UIDVALIDITY would not fit in 32 bits")
    return value


# -- one folder's counters within a mutation ----------------------------------------------


class FolderEdit:
    """A folder cell being changed by one mutation: UIDs and mod-sequences it hands out,
    the change-log entries and the condition on the version it was read at."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.data = folder.fields()
        self.mutations: list[Mutation] = []

    @property
    def fid(self) -> int:
        return self.folder.id

    def new_uid(self) -> int:
        uid = int(self.data["uidnext"])
        if uid > MAX_UID:
            raise OverflowError(f"folder {self.fid} has used every UID")
        self.data["uidnext"] = uid + 1
        return uid

    def change(self, uid: int, kind: str) -> int:
        """A new mod-sequence for ``uid`` (``"fetch"`` or ``"expunge"``) and its log entry;
        the entry :data:`KEEP` before it goes, so the log stays bounded."""
        modseq = int(self.data["modseq"]) + 1
        self.data["modseq"] = modseq
        self.mutations.append(("put", change_col(self.fid, modseq), pack([uid, kind])))
        if modseq - KEEP > 0:
            self.mutations.append(("delete", change_col(self.fid, modseq - KEEP)))
        return modseq

    def count(self, exists: int, unseen: int) -> None:
        self.data["exists"] = max(0, int(self.data["exists"]) + exists)
        self.data["unseen"] = max(0, int(self.data["unseen"]) + unseen)

    def condition(self) -> Condition:
        return ("version", folder_col(self.fid), self.folder.version)

    def changed(self) -> bool:
        return self.data != self.folder.fields()

    def all_mutations(self) -> list[Mutation]:
        return [*self.mutations, ("put", folder_col(self.fid), pack(self.data))]


def retrying[T](what: str, attempt: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``attempt()`` until it does not raise ConditionFailed (it re-reads what it depends on),
    with the drive's jittered back-off between tries (:func:`..retry.attempts`); at most
    ``attempts`` times."""
    for _ in tries(attempts):
        try:
            return attempt()
        except ConditionFailed:
            continue  # tries() pauses a random, growing time before the next one
    raise ConditionFailed(f"{what} kept changing")

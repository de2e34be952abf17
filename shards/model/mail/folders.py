"""A mailbox's folders: list, find, create, rename, delete, subscribe, status.

Every change to the *set* of folders (create, rename, delete) is one
``mutate_row`` conditioned on the version of ``fseq`` and puts it again, so it
fails if any other such change happened since the folders were read: names stay
unique without a lock, and a rename cannot race a create under the new name.
The folders and ``fseq`` are read together (one ``get_row`` over the prefix
"f"), so the check and the condition see one state.

Changes within a folder (messages arriving, flags) touch only its own cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed

from ..errors import BadFolderName, FolderExists, FolderRefused, NoSuchFolder
from ..retry import pause
from .changes import expunge
from .layout import (
    ATTEMPTS,
    BATCH_BYTES,
    FIRST_USER_FOLDER,
    FSEQ_COL,
    INBOX,
    MAX_FOLDER_ID,
    MAX_FOLDERS,
    ROLE_IDS,
    SPECIAL_NAMES,
    Folder,
    change_prefix,
    check_folder_name,
    folder_col,
    is_below,
    mailbox_row,
    next_uidvalidity,
    pack,
    record_prefix,
    retrying,
    uid_of,
)
from .migrate import current_folders, ensure_current, repair
from .reads import get_folder as read_folder
from .reads import need_folder
from .strays import folder_checked

if TYPE_CHECKING:
    from raftkv.interface import Condition, KeyValueStore, Mutation

_EMPTYING = 200  # records read at a time while a deleted folder is emptied


def folder_id(role: str) -> int:
    """The fixed id of a special folder by its role ("inbox", "sent", "drafts", "trash",
    "junk").

    :raises NoSuchFolder: not a role.
    """
    fid = ROLE_IDS.get(role)
    if fid is None:
        raise NoSuchFolder(f"There is no special folder {role!r}.")
    return fid


def list_folders(client: KeyValueStore, user: str) -> list[Folder]:
    """Every folder: the special ones in id order (INBOX first), then the others by name.

    One ``get_row`` (IMAP LIST computes \\HasChildren from the names).
    """
    folders, _fseq, _version = current_folders(client, user)
    return sorted(folders.values(),
                  key=lambda f: (0, f.id, "") if f.id in SPECIAL_NAMES else (1, 0, f.name))


def get_folder(client: KeyValueStore, user: str, fid: int) -> Folder | None:
    """Folder ``fid`` from its cell alone, or None: IMAP STATUS, the webmail's counts."""
    ensure_current(client, user)
    folder = folder_checked(client, user, fid)  # with usage: old mail code's mark (.strays)
    if folder is None and fid in SPECIAL_NAMES:
        repair(client, user)
        folder = read_folder(client, user, fid)
    return folder


status = get_folder


def find_folder(client: KeyValueStore, user: str, name: str) -> Folder | None:
    """The folder named ``name`` ("INBOX" in any case is the inbox), or None."""
    if name.upper() == "INBOX":
        return get_folder(client, user, INBOX)
    try:
        name = check_folder_name(name)
    except BadFolderName:
        return None
    return next((f for f in list_folders(client, user) if f.name == name), None)


def create_folder(client: KeyValueStore, user: str, name: str, *,
                  subscribed: bool = True) -> Folder:
    """Make a folder.  A name "a/b" makes no folder "a" (LIST shows what exists).

    :raises BadFolderName: see :func:`~.layout.check_folder_name`.
    :raises FolderExists: a folder has that name.
    :raises FolderRefused: the user has :data:`~.layout.MAX_FOLDERS` folders already.
    """
    name = check_folder_name(name)

    def attempt() -> Folder:
        folders, fseq, version = current_folders(client, user)
        if any(f.name == name for f in folders.values()):
            raise FolderExists(f"There is a folder named {name!r} already.")
        fid = max(int(fseq.get("next", 0) or 0), FIRST_USER_FOLDER)
        if len(folders) >= MAX_FOLDERS or fid > MAX_FOLDER_ID:
            raise FolderRefused(f"A mailbox holds at most {MAX_FOLDERS} folders.")
        uidvalidity = next_uidvalidity(int(fseq.get("uidvalidity", 0) or 0))
        folder = Folder(id=fid, name=name, special=None, uidvalidity=uidvalidity, uidnext=1,
                        modseq=1, exists=0, unseen=0, subscribed=subscribed)
        versions = client.mutate_row(
            mailbox_row(user), [("version", FSEQ_COL, version), ("absent", folder_col(fid))],
            [("put", folder_col(fid), pack(folder.fields())),
             ("put", FSEQ_COL, pack({"next": fid + 1, "uidvalidity": uidvalidity}))])
        return Folder(**{**folder.fields(), "id": fid, "version": versions[folder_col(fid)]})

    return retrying(f"the folders of {user}", attempt, ATTEMPTS)


def rename_folder(client: KeyValueStore, user: str, fid: int, new_name: str) -> Folder:
    """Rename a folder and every folder below it, in one mutation.  A special folder
    keeps its id and role (Sent renamed "Sent Items" is still where Sent copies go).

    INBOX is refused: RFC 3501 makes renaming it a move of its messages into a new
    folder, leaving INBOX empty -- another operation (a move), which the IMAP layer
    may offer as such; INBOX's id and name stay fixed so delivery never looks it up.

    :raises FolderRefused: INBOX, a folder into its own subtree, or more subfolders
        than one mutation can rename.
    :raises FolderExists: a folder has one of the new names.
    :raises NoSuchFolder: no such folder.
    """
    if fid == INBOX:
        raise FolderRefused("INBOX cannot be renamed; move its messages instead.")
    new_name = check_folder_name(new_name)

    def attempt() -> Folder:
        folders, fseq, version = current_folders(client, user)
        folder = folders.get(fid)
        if folder is None:
            raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
        if new_name == folder.name:
            return folder
        if is_below(new_name, folder.name):
            raise FolderRefused("A folder cannot move inside itself.")
        moving = [folder, *(f for f in folders.values() if is_below(f.name, folder.name))]
        staying = {f.name for f in folders.values()} - {f.name for f in moving}
        conditions: list[Condition] = [("version", FSEQ_COL, version)]
        mutations: list[Mutation] = [("put", FSEQ_COL, pack(fseq))]
        renamed = folder
        for each in moving:
            name = check_folder_name(new_name + each.name[len(folder.name):])
            if name in staying:
                raise FolderExists(f"There is a folder named {name!r} already.")
            fields = {**each.fields(), "name": name}
            conditions.append(("version", folder_col(each.id), each.version))
            mutations.append(("put", folder_col(each.id), pack(fields)))
            if each.id == fid:
                renamed = Folder(**{**fields, "id": fid})
        if sum(len(m[1]) + len(m[2]) + 40 for m in mutations if m[0] == "put") > BATCH_BYTES:
            raise FolderRefused("This folder has too many subfolders to rename at once.")
        client.mutate_row(mailbox_row(user), conditions, mutations)
        return renamed

    return retrying(f"the folders of {user}", attempt, ATTEMPTS)


def delete_folder(client: KeyValueStore, user: str, fid: int) -> None:
    """Delete a folder and its messages (their bytes given back to the quota).

    Refused for a special folder and for a folder with subfolders: RFC 3501 would
    keep such a folder as a \\Noselect name, a state every other operation then has
    to handle, for a case a client can resolve by deleting the children first.
    A folder with more messages than one mutation can remove is emptied first,
    batch by batch (an IMAP session sees them expunged); the folder's cell goes in
    a last mutation conditioned on ``fseq`` and on its own version (empty, as
    read), then its change log is cleared.

    :raises FolderRefused: a special folder, or one with subfolders.
    :raises NoSuchFolder: no such folder.
    """
    if fid in SPECIAL_NAMES:
        raise FolderRefused(f"{SPECIAL_NAMES[fid]} cannot be deleted.")
    row = mailbox_row(user)
    contended = 0
    while True:
        folders, fseq, version = current_folders(client, user)
        folder = folders.get(fid)
        if folder is None:
            raise NoSuchFolder("There is no such folder (deleted meanwhile?).")
        if any(is_below(f.name, folder.name) for f in folders.values()):
            raise FolderRefused("This folder has subfolders: delete them first.")
        messages = client.get_row(row, prefix=record_prefix(fid), limit=_EMPTYING)
        if messages:
            expunge(client, user, fid, [uid_of(column) for column in messages])
            continue
        try:
            client.mutate_row(row, [("version", FSEQ_COL, version), folder_and_version(folder)],
                              [("delete", folder_col(fid)), ("put", FSEQ_COL, pack(fseq))])
            break
        except ConditionFailed:
            contended += 1
            if contended >= ATTEMPTS:
                raise
            pause(contended)  # a round that expunged goes on at once: only a lost one waits
    _clear_log(client, user, fid)


def folder_and_version(folder: Folder) -> Condition:
    return ("version", folder_col(folder.id), folder.version)


def _clear_log(client: KeyValueStore, user: str, fid: int) -> None:
    """Delete a deleted folder's change log (up to KEEP cells, a few mutations)."""
    row = mailbox_row(user)
    while entries := client.get_row(row, prefix=change_prefix(fid), limit=_EMPTYING):
        client.mutate_row(row, [], [("delete", column) for column in entries])


def set_subscribed(client: KeyValueStore, user: str, fid: int, subscribed: bool) -> Folder:
    """IMAP SUBSCRIBE / UNSUBSCRIBE (LSUB lists the subscribed).

    :raises NoSuchFolder: no such folder.
    """
    ensure_current(client, user)

    def attempt() -> Folder:
        folder = need_folder(client, user, fid)
        if folder.subscribed == subscribed:
            return folder
        fields = {**folder.fields(), "subscribed": subscribed}
        versions = client.mutate_row(mailbox_row(user), [folder_and_version(folder)],
                                     [("put", folder_col(fid), pack(fields))])
        return Folder(**{**fields, "id": fid, "version": versions[folder_col(fid)]})

    return retrying(f"folder {fid} of {user}", attempt, ATTEMPTS)


__all__ = ["create_folder", "delete_folder", "find_folder", "folder_id", "get_folder",
           "list_folders", "rename_folder", "set_subscribed", "status"]

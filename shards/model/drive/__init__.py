"""Each user's drive: nested folders and files, kept consistent with one-row mutations.

Layout.  Every *name* of a user lives in one row, so that creating, renaming,
moving or deleting anything -- within a folder or between two folders -- is a
single ``mutate_row`` on that row, conditioned on the versions it read; the
bytes of each file live in a row of their own, which a rename or a move never
touches::

    row {<user>}/drive
        e:<folder_id>/              folder header; its version changes with every entry
                                    added, renamed, moved out or removed (caches check it)
        e:<folder_id>/<name>        entry: msgpack {id, k: "f"|"d", size, ctype, created, modified}
        i:<file_id>                 file index: {p: parent id, n: name, size, ctype, created, modified}
        d:<folder_id>               folder index: {p: parent id, n: name, created, modified}
        q:used                      bytes of file content the user holds (quota)
        t:<id>                      clean-up marker: a deleted file's bytes and versions, a
                                    deleted tree, or one dropped version's bytes (.contents)
        h:<file_id>                 an upload held on a name clash until the user answers (.held)
        v:<file_id>/<content_id>    an earlier version of a file: {size, ctype, modified, at} (.versions)
        x:<id>                      an item in the Trash: what it was, where from, when (.trash)
    row {<user>}/file:<file_id>
        data                        the bytes (the store makes big values blobs); a file's
                                    current bytes are in the row of its index's ``c``
                                    (absent: its own id), each version's in its own
        thumb                       an image's thumbnail, made on first view (.thumbs)

The root folder is :data:`ROOT`; it has a header but no entry and no index.
Names are column keys, so "a name is free" is the condition ``absent`` on
``e:<folder>/<name>``: two frontends creating the same name end with one
winner and a clear :class:`NameTaken` for the other; creates of different
names in one folder never conflict.  An entry and its index cell are always
written together, so a condition on the index cell's version covers both.

Creates and moves also condition on the version of every folder on the target's
path to the root: a folder deleted or moved meanwhile makes the change fail
and retry instead of landing in a detached subtree.  Deleting a tree is one
short step (unlink it, leave a ``t:`` marker) followed by clean-up
(:mod:`.cleanup`) that any frontend can resume.

All of a user's rows carry the ``{user}`` hash tag and share a shard; the
folder tree row holds only small cells (a few hundred bytes per name), so it
stays cheap to keep in Raft.

Modules: :mod:`.records` (layout, record formats), :mod:`.reads`, :mod:`.changes`
(each change one ``mutate_row``), :mod:`.many` (moves and deletes of several),
:mod:`.held` (uploads held on a name clash), :mod:`.trash`, :mod:`.versions`,
:mod:`.contents` (bytes and versions dropped for good) and :mod:`.cleanup`; share links are
:mod:`.shares`, folders shared with named users :mod:`.grants`; the errors are in
:mod:`shards.model.errors`.  Callers use the names exported here
(``from shards.model import drive``).
"""

from ..errors import BadMove, BadName, DriveError, NameTaken, NoSuchItem, QuotaExceeded, TooDeep
from .changes import (
    create_folder,
    delete_file,
    delete_folder,
    move,
    put_content,
    rename,
    store_file,
)
from .cleanup import pending, purge
from .contents import Content, Version
from .held import (
    Held,
    copy_name,
    drop_held,
    drop_stale,
    get_held,
    hold_file,
    keep_both,
    replace_file,
)
from .many import BATCH, delete_many, move_many, read_items
from .reads import (
    FOLDER_INDEX,
    all_folders,
    entries_page,
    folder_path,
    folder_version,
    folders_from,
    get_file,
    get_folder,
    list_folder,
    live_file,
    open_file,
    path_in,
    usage,
    usage_of,
    walk_files,
)
from .records import (
    DATA_COL,
    DEFAULT_QUOTA,
    FILE,
    FOLDER,
    MAX_DEPTH,
    ROOT,
    USAGE_COL,
    Item,
    Listing,
    check_name,
    content_row,
    drive_row,
    header_col,
    index_col,
    is_id,
    new_id,
)
from .thumbs import THUMB_COL, Thumb, file_and_thumb, save_thumb
from .trash import (
    TRASH_DAYS,
    Restored,
    Trashed,
    delete_forever,
    empty_trash,
    get_trashed,
    list_trash,
    restore,
    sweep,
    trash,
    trash_many,
)
from .versions import (
    MAX_VERSIONS,
    Changed,
    get_version,
    list_versions,
    open_version,
    overwrite,
    restore_version,
)

__all__ = ["BATCH", "Changed", "Held", "copy_name", "delete_many", "drop_held", "drop_stale", "get_held",
           "hold_file", "keep_both", "move_many", "read_items", "replace_file",
           "DATA_COL", "DEFAULT_QUOTA", "FILE", "FOLDER", "FOLDER_INDEX", "MAX_DEPTH", "ROOT",
           "USAGE_COL", "BadMove", "BadName", "DriveError", "Item", "Listing", "NameTaken",
           "NoSuchItem", "QuotaExceeded", "TooDeep", "all_folders", "check_name", "content_row",
           "create_folder", "delete_file", "delete_folder", "drive_row", "entries_page",
           "folder_path", "folder_version", "folders_from", "get_file", "get_folder",
           "header_col", "index_col", "is_id", "list_folder", "move", "new_id", "open_file",
           "path_in", "pending", "purge", "rename", "store_file", "usage", "usage_of",
           "walk_files", "live_file", "Content", "Version", "put_content", "TRASH_DAYS", "Restored",
           "Trashed", "delete_forever", "empty_trash", "get_trashed", "list_trash", "restore",
           "sweep", "trash", "trash_many", "MAX_VERSIONS", "get_version", "list_versions",
           "open_version", "overwrite", "restore_version", "THUMB_COL", "Thumb",
           "file_and_thumb", "save_thumb"]

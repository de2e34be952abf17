"""WsgiDAV's resources on the drive model: a folder is a collection, a file a non-collection.

Every change is one of the model's (:mod:`shards.model.drive`): MKCOL is
``create_folder``, DELETE ``trash`` (one mutation into the Trash, as the web
page's delete), MOVE ``move`` (one ``mutate_row``, renaming and moving at once).
PUT reads the request body straight into the store (:mod:`.writing`); GET streams
the bytes out chunk by chunk.  COPY makes
new items: folders with ``create_folder``, files by streaming their bytes into a
new file -- the model keeps one bytes row per file and drops it when that file
goes, so two files cannot share one blob.

Folders shared with the user (:mod:`.shared`) are under ``/Shared with me/``, a
collection of ours (:class:`SharedWithMe`) that refuses every change (403).  An
item in a shared folder is the owner's: every change is the same model function on
the owner's drive row and quota, after the grant was read again (403 read-only, 404
revoked), and the shared folder itself is its owner's to move or delete.  A MOVE
between two trees (the user's own drive, one shared folder, another) is refused with
502 (RFC 4918 §9.9.4: another namespace); a COPY between them copies the bytes into
the destination's drive, on its owner's quota.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from wsgidav.dav_error import (
    HTTP_BAD_GATEWAY,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from shards.model import drive
from shards.model.drive import ROOT
from shards.model.drive.records import drive_row, entry_col, header_col

from ..drive import download_type
from .paths import USER_KEY, Found, forget, found_entry, segments, store_errors
from .shared import MINE, SHARED, Located, Tree, locate, trees
from .writing import ChunkReader, Upload, copy_file

if TYPE_CHECKING:
    from .door import DavDoor


def _child(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


def _tree_key(tree: Tree | None) -> tuple[str, str] | None:
    return None if tree is None else tree.key


class _Drive:
    """What folder and file resources share: the door, the user, the found item."""

    provider: DriveProvider
    environ: dict[str, Any]
    path: str
    remove_all_locks: Any  # WsgiDAV's, on the resource classes this is mixed into
    get_ref_url: Any

    def _setup(self, found: Found | None, place: Located) -> None:
        self.door: DavDoor = self.provider.door
        self.user: str = self.environ[USER_KEY]  # who asks
        self.owner: str = place.owner            # whose drive row (and quota) it is in
        self.tree: Tree | None = place.tree      # set: in a folder shared with the user
        self.found = found

    def _may_write(self) -> None:
        """In a shared folder: the grant, read again now, must be read-write."""
        if self.tree is not None:
            self.tree.check(self.client(), self.user, write=True)

    def _at_tree_root(self) -> bool:
        return (self.tree is not None and self.found is not None
                and self.found.item.id == self.tree.folder.item.id)

    def _not_tree_root(self) -> None:
        if self._at_tree_root():
            raise DAVError(HTTP_FORBIDDEN, "The shared folder itself is its owner's to "
                           "rename, move or delete.")

    def prevent_locking(self) -> bool:
        # A read-only recipient's lock would keep the owner from writing.
        return self.tree is not None and not self.tree.writable

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> None:
        self._may_write()
        super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]

    @property
    def item(self) -> drive.Item:
        if self.found is None:
            raise DAVError(HTTP_PRECONDITION_FAILED, "It is not there (any more).")
        return self.found.item

    def client(self) -> Any:
        return self.door.client()

    def get_creation_date(self) -> float | None:
        return self.item.created or None

    def get_last_modified(self) -> float | None:
        return self.item.modified or None

    def get_display_name(self) -> str:
        if self._at_tree_root():
            return segments(self.path)[-1]  # its name below /Shared with me/
        return self.item.name

    def _destination(self, dest_path: str) -> tuple[Located, Found, str]:
        """The folder a COPY or MOVE goes into (writable: checked) and the name it takes."""
        names = segments(dest_path)
        if not names:
            raise DAVError(HTTP_FORBIDDEN, "The top folder cannot be replaced.")
        if names[0] == SHARED and len(names) <= 2:
            raise DAVError(HTTP_FORBIDDEN, f"{SHARED} holds the folders shared with you "
                           "only: nothing can be moved or copied into it.")
        parent = self.provider.locate("/".join(names[:-1]), self.environ)
        if parent is None or parent.found is None or not parent.found.item.is_folder:
            raise DAVError(HTTP_CONFLICT, "The destination's folder does not exist.")
        if parent.tree is not None:
            parent.tree.check(self.client(), self.user, write=True)
        return parent, parent.found, self.door.checked_name(names[-1])

    def _still(self) -> None:
        """Just before a change conditioned on what the request's If headers saw: the
        entry has not changed since (a client never overwrites what it did not see)."""
        found = self.item
        with store_errors():
            cell = self.client().get(drive_row(self.owner), entry_col(found.parent, found.name))
        now = None if cell is None else found_entry(found.parent, found.name, cell)
        if now is None or self.found is None or now.etag != self.found.etag:
            raise DAVError(HTTP_PRECONDITION_FAILED, "It changed since it was read.")

    def expected_version(self) -> int:
        """The item's index version as the request's If headers saw it (for the model's
        ``expect``); 412 if it changed.  The index is read first: if the entry (written
        with it) is unchanged after, that version is the one the client saw."""
        item = self.item
        with store_errors():
            index = (drive.get_folder if item.is_folder else drive.get_file)(
                self.client(), self.owner, item.id)
        if index is None:
            raise DAVError(HTTP_PRECONDITION_FAILED, "It is not there (any more).")
        self._still()
        return index.version

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def handle_move(self, dest_path: str) -> bool:
        """Before WsgiDAV deletes what is at the destination: may this move at all?"""
        self._may_write()
        self._not_tree_root()
        place, _, _ = self._destination(dest_path)
        if _tree_key(place.tree) != _tree_key(self.tree):
            raise DAVError(HTTP_BAD_GATEWAY, "A move between your own drive and a folder "
                           "shared with you, or between two shared folders, is not "
                           "possible: copy, then delete.")
        return False  # WsgiDAV goes on, and calls move_recursive

    def move_recursive(self, dest_path: str) -> list[Any]:
        """A move and a rename at once, files and whole trees alike: one ``mutate_row``."""
        _, parent, name = self._destination(dest_path)
        self._still()
        with store_errors():
            drive.move(self.client(), self.owner, self.item.kind, self.item.id, parent.item.id,
                       name=name)
        # Dead properties are kept by item id (portal.dav.props): they go along.  A
        # destination it replaced went into the Trash first (WsgiDAV deletes it), and
        # its properties with it.
        forget(self.environ)
        return []

    def _copy_properties(self, dest_path: str) -> None:
        """The copy (made by now) gets the source's dead properties."""
        props = self.provider.prop_manager
        target = self.provider.locate(dest_path, self.environ)
        if props is not None and target is not None and target.found is not None:
            props.copy_properties(self.get_ref_url(),
                                  self.provider.make(dest_path, self.environ,
                                                     target).get_ref_url(), self.environ)

    def delete(self) -> None:
        """Into the Trash (one mutation, no bytes copied), as the web page's delete.

        Dead properties stay with the trashed item's id, so a restore from the Trash
        brings them back; once the item leaves the Trash for good they are orphans,
        which the frontends' Trash sweep removes (portal.heartbeat).  Locks are by
        URL: those on the path and below are released with it.  In a shared folder:
        into the owner's Trash, as the web page's delete there."""
        self._may_write()
        self._not_tree_root()
        expect = self.expected_version()
        with store_errors():
            drive.trash(self.client(), self.owner, self.item.id, kind=self.item.kind,
                        expect=expect)
        self.remove_all_locks(recursive=True)
        forget(self.environ)


class FolderResource(_Drive, DAVCollection):
    """A folder of the drive (the root for ``/``)."""

    def __init__(self, provider: DriveProvider, path: str, environ: dict[str, Any],
                 found: Found, place: Located) -> None:
        DAVCollection.__init__(self, path, environ)
        self.provider = provider
        self._setup(found, place)

    def get_member_names(self) -> list[str]:
        return [member.name for member in self.get_member_list()]

    def get_member(self, name: str) -> FileResource | FolderResource | None:
        return self.provider.get_resource_inst(_child(self.path, name), self.environ)

    def get_member_list(self) -> list[Any]:
        """The folder's entries from one read of its columns (never a lookup per member)."""
        folder = self.item.id
        with store_errors():
            cells = self.client().get_row(drive_row(self.owner), prefix=header_col(folder))
        top = folder == ROOT and self.tree is None
        members: list[Any] = []
        for column, cell in cells.items():
            name = column[len(header_col(folder)):]
            found = found_entry(folder, name, cell) if name else None
            if top and name == SHARED:  # the user's own, reached by its alias (.shared)
                name = MINE if f"{header_col(folder)}{MINE}" not in cells else ""
            if found is not None and name:
                members.append(self.provider.make(_child(self.path, name), self.environ,
                                                  Located(self.owner, found, self.tree)))
        if top:
            members.append(SharedWithMe(self.provider, _child(self.path, SHARED),
                                        self.environ))
        return members

    def support_recursive_delete(self) -> bool:
        return True

    def handle_delete(self) -> bool:
        """DELETE of a folder without WsgiDAV's walk of its whole tree (a read per folder
        below): a lock anywhere below is found by URL in the lock manager, and the
        model unlinks the folder in one mutation."""
        manager = self.provider.lock_manager
        if manager is not None:
            manager.check_write_permission(
                url=self.get_ref_url(), depth="infinity",
                token_list=self.environ.get("wsgidav.ifLockTokenList", []),
                principal=self.environ.get("wsgidav.user_name"))
        self.delete()
        return True

    def create_collection(self, name: str) -> None:
        self._may_write()
        with store_errors():
            drive.create_folder(self.client(), self.owner, self.item.id,
                                self.door.checked_name(name))
        forget(self.environ)

    def create_empty_resource(self, name: str) -> FileResource:
        """A file about to be written (PUT), or an empty one (LOCK on an unmapped URL)."""
        resource = FileResource(self.provider, _child(self.path, name), self.environ, None,
                                Located(self.owner, None, self.tree), parent=self.item,
                                name=self.door.checked_name(name))
        if self.environ.get("REQUEST_METHOD") == "LOCK":
            resource.store_empty()
        return resource

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """COPY of one folder (its members are WsgiDAV's next steps): make it, or keep
        the one there (a copy over a folder merges, RFC 4918 §9.8.4)."""
        place, parent, name = self._destination(dest_path)
        with store_errors():
            existing = self.provider.locate(dest_path, self.environ)
            if existing is None:
                drive.create_folder(self.client(), place.owner, parent.item.id, name)
        forget(self.environ)
        self._copy_properties(dest_path)


class FileResource(_Drive, DAVNonCollection):
    """A file of the drive, or one being created by a PUT (``found`` None)."""

    def __init__(self, provider: DriveProvider, path: str, environ: dict[str, Any],
                 found: Found | None, place: Located, *, parent: drive.Item | None = None,
                 name: str = "") -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.provider = provider
        self._setup(found, place)
        self._parent = parent if found is None else None
        self._name = name
        self._upload: Upload | None = None

    def get_content_length(self) -> int:
        return self.item.size if self.found else 0

    def get_content_type(self) -> str:
        return download_type(self.item) if self.found else "application/octet-stream"

    def get_etag(self) -> str | None:
        return self.found.etag if self.found else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> ChunkReader:
        # Opened at the first read, from the range's start (WsgiDAV seeks first).  The
        # index names the row of the file's current bytes (an entry does not).
        client, owner, file_id = self.client(), self.owner, self.item.id

        def open_at(offset: int) -> Iterator[bytes]:
            with store_errors():
                return drive.open_file(client, owner, file_id, offset=offset)[2]
        return ChunkReader(open_at)

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[Any]) -> None:
        # Never rendered on our origin: a user's HTML file is not a page of ours.
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            response_headers.append(("Content-Security-Policy", "sandbox"))

    def store_empty(self) -> None:
        self.begin_write(content_type=None, empty=True)
        self.end_write(with_errors=False)

    def begin_write(self, *, content_type: str | None = None, empty: bool = False) -> Any:
        """Store the request's body (read here, from the WSGI input, as it arrives); the
        sink returned takes what WsgiDAV then finds left of it, which is nothing.  In a
        shared folder, the owner's file, on the owner's quota."""
        self._may_write()
        parent = self._parent if self.found is None else None
        self._upload = Upload(self.door, self.owner, self.environ, found=self.found,
                              parent=parent, name=self._name, content_type=content_type)
        self._upload.store(empty=empty)
        return self._upload

    def end_write(self, *, with_errors: bool) -> None:
        if self._upload is not None:
            self.found = self._upload.finish(failed=with_errors)
        forget(self.environ)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """COPY of one file: its bytes streamed into a new file there (over the file
        there, if any: WsgiDAV has checked Overwrite)."""
        place, parent, name = self._destination(dest_path)
        existing = self.provider.locate(dest_path, self.environ)
        copy_file(self.door, place.owner, self.item, parent.item, name,
                  None if existing is None else existing.found, source_user=self.owner)
        forget(self.environ)
        self._copy_properties(dest_path)


class SharedWithMe(DAVCollection):
    """``/Shared with me/``: the folders shared with the user, one member each; it
    changes only by grants, so every change of it here is a 403."""

    def __init__(self, provider: DriveProvider, path: str, environ: dict[str, Any]) -> None:
        super().__init__(path, environ)
        self.provider = provider

    def _trees(self) -> dict[str, Tree]:
        return trees(self.provider.door.client(), self.environ[USER_KEY], self.environ)

    def get_display_name(self) -> str:
        return SHARED

    def get_member_names(self) -> list[str]:
        return list(self._trees())

    def get_member(self, name: str) -> FolderResource | FileResource | None:
        return self.provider.get_resource_inst(_child(self.path, name), self.environ)

    def get_member_list(self) -> list[Any]:
        return [self.provider.make(_child(self.path, name), self.environ,
                                   Located(tree.owner, tree.folder, tree))
                for name, tree in self._trees().items()]

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise DAVError(HTTP_FORBIDDEN, f"{SHARED} lists the folders others share with you; "
                       "it changes when they share or stop sharing, not here.")

    create_collection = create_empty_resource = delete = handle_delete = _refuse
    handle_move = handle_copy = copy_move_single = move_recursive = _refuse
    set_property_value = _refuse

    def prevent_locking(self) -> bool:
        return True


class DriveProvider(DAVProvider):
    """The signed-in user's drive as WsgiDAV's one share, with the folders shared with
    them below ``/Shared with me/``."""

    def __init__(self, door: DavDoor) -> None:
        super().__init__()
        self.door = door

    def locate(self, path: str, environ: dict[str, Any]) -> Located | None:
        """What ``path`` names for the request's user (portal.dav.shared)."""
        return locate(self.door.client(), environ[USER_KEY], path, environ)

    def item_at(self, norm_url: str, environ: dict[str, Any]) -> tuple[str, str] | None:
        """The property manager's resolver (portal.dav.props): a WsgiDAV ref URL (the
        percent-encoded path below the mount, as the lock manager keys locks too) to
        (owner, item id), by the request's own lookups: an item of a shared folder is
        its owner's, and so are its properties."""
        user = environ.get(USER_KEY)
        try:
            path = unquote(norm_url, errors="strict")
        except UnicodeDecodeError:
            return None
        if not user or not path.startswith("/"):
            return None
        place = self.locate(path, environ)
        if place is None or place.found is None:
            return None
        return place.owner, place.found.item.id

    def is_readonly(self) -> bool:
        return False

    def make(self, path: str, environ: dict[str, Any],
             place: Located) -> FolderResource | FileResource:
        found = place.found
        if found is None:
            raise DAVError(HTTP_FORBIDDEN, f"{SHARED} is not a folder of your drive.")
        if found.item.is_folder:
            return FolderResource(self, path, environ, found, place)
        return FileResource(self, path, environ, found, place)

    def get_resource_inst(self, path: str, environ: dict[str, Any]
                          ) -> FolderResource | FileResource | SharedWithMe | None:
        place = self.locate(path, environ)
        if place is None:
            return None
        if place.found is None:
            return SharedWithMe(self, path, environ)
        return self.make(path, environ, place)

"""WsgiDAV's resources on the drive model: a folder is a collection, a file a non-collection.

Every change is one of the model's (:mod:`shards.model.drive`): MKCOL is
``create_folder``, DELETE ``trash`` (one mutation into the Trash, as the web
page's delete), MOVE ``move`` (one ``mutate_row``, renaming and moving at once).
PUT reads the request body straight into the store (:mod:`.writing`); GET streams
the bytes out chunk by chunk.  COPY makes
new items: folders with ``create_folder``, files by streaming their bytes into a
new file -- the model keeps one bytes row per file and drops it when that file
goes, so two files cannot share one blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_PRECONDITION_FAILED, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from shards.model import drive
from shards.model.drive.records import drive_row, entry_col, header_col

from ..drive import download_type
from .paths import USER_KEY, Found, forget, found_entry, resolve, segments, store_errors
from .writing import ChunkReader, Upload, copy_file

if TYPE_CHECKING:
    from .door import DavDoor


def _child(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


class _Drive:
    """What folder and file resources share: the door, the user, the found item."""

    provider: DriveProvider
    environ: dict[str, Any]
    path: str
    remove_all_locks: Any  # WsgiDAV's, on the resource classes this is mixed into
    get_ref_url: Any

    def _setup(self, found: Found | None) -> None:
        self.door: DavDoor = self.provider.door
        self.user: str = self.environ[USER_KEY]
        self.found = found

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
        return self.item.name

    def _destination(self, dest_path: str) -> tuple[Found, str]:
        """The folder a COPY or MOVE goes into and the name it takes there."""
        names = segments(dest_path)
        if not names:
            raise DAVError(HTTP_FORBIDDEN, "The top folder cannot be replaced.")
        parent = resolve(self.client(), self.user, "/".join(names[:-1]))
        if parent is None or not parent.item.is_folder:
            raise DAVError(409, "The destination's folder does not exist.")
        return parent, self.door.checked_name(names[-1])

    def _still(self) -> None:
        """Just before a change conditioned on what the request's If headers saw: the
        entry has not changed since (a client never overwrites what it did not see)."""
        found = self.item
        with store_errors():
            cell = self.client().get(drive_row(self.user), entry_col(found.parent, found.name))
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
                self.client(), self.user, item.id)
        if index is None:
            raise DAVError(HTTP_PRECONDITION_FAILED, "It is not there (any more).")
        self._still()
        return index.version

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:
        """A move and a rename at once, files and whole trees alike: one ``mutate_row``."""
        parent, name = self._destination(dest_path)
        self._still()
        with store_errors():
            drive.move(self.client(), self.user, self.item.kind, self.item.id, parent.item.id,
                       name=name)
        # Dead properties are kept by item id (portal.dav.props): they go along.  A
        # destination it replaced went into the Trash first (WsgiDAV deletes it), and
        # its properties with it.
        forget(self.environ)
        return []

    def _copy_properties(self, dest_path: str) -> None:
        """The copy (made by now) gets the source's dead properties."""
        props = self.provider.prop_manager
        target = resolve(self.client(), self.user, dest_path, self.environ)
        if props is not None and target is not None:
            props.copy_properties(self.get_ref_url(),
                                  self.provider.make(dest_path, self.environ,
                                                     target).get_ref_url(), self.environ)

    def delete(self) -> None:
        """Into the Trash (one mutation, no bytes copied), as the web page's delete.

        Dead properties stay with the trashed item's id, so a restore from the Trash
        brings them back; once the item leaves the Trash for good they are orphans,
        which the frontends' Trash sweep removes (portal.heartbeat).  Locks are by
        URL: those on the path and below are released with it."""
        expect = self.expected_version()
        with store_errors():
            drive.trash(self.client(), self.user, self.item.id, kind=self.item.kind,
                        expect=expect)
        self.remove_all_locks(recursive=True)
        forget(self.environ)


class FolderResource(_Drive, DAVCollection):
    """A folder of the drive (the root for ``/``)."""

    def __init__(self, provider: DriveProvider, path: str, environ: dict[str, Any],
                 found: Found) -> None:
        DAVCollection.__init__(self, path, environ)
        self.provider = provider
        self._setup(found)

    def get_member_names(self) -> list[str]:
        return [member.name for member in self.get_member_list()]

    def get_member(self, name: str) -> FileResource | FolderResource | None:
        return self.provider.get_resource_inst(_child(self.path, name), self.environ)

    def get_member_list(self) -> list[Any]:
        """The folder's entries from one read of its columns (never a lookup per member)."""
        folder = self.item.id
        with store_errors():
            cells = self.client().get_row(drive_row(self.user), prefix=header_col(folder))
        members: list[Any] = []
        for column, cell in cells.items():
            name = column[len(header_col(folder)):]
            found = found_entry(folder, name, cell) if name else None
            if found is not None:
                members.append(self.provider.make(_child(self.path, name), self.environ,
                                                  found))
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
        with store_errors():
            drive.create_folder(self.client(), self.user, self.item.id,
                                self.door.checked_name(name))
        forget(self.environ)

    def create_empty_resource(self, name: str) -> FileResource:
        """A file about to be written (PUT), or an empty one (LOCK on an unmapped URL)."""
        resource = FileResource(self.provider, _child(self.path, name), self.environ, None,
                                parent=self.item, name=self.door.checked_name(name))
        if self.environ.get("REQUEST_METHOD") == "LOCK":
            resource.store_empty()
        return resource

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """COPY of one folder (its members are WsgiDAV's next steps): make it, or keep
        the one there (a copy over a folder merges, RFC 4918 §9.8.4)."""
        parent, name = self._destination(dest_path)
        with store_errors():
            existing = resolve(self.client(), self.user, dest_path)
            if existing is None:
                drive.create_folder(self.client(), self.user, parent.item.id, name)
        forget(self.environ)
        self._copy_properties(dest_path)


class FileResource(_Drive, DAVNonCollection):
    """A file of the drive, or one being created by a PUT (``found`` None)."""

    def __init__(self, provider: DriveProvider, path: str, environ: dict[str, Any],
                 found: Found | None, *, parent: drive.Item | None = None,
                 name: str = "") -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.provider = provider
        self._setup(found)
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
        client, user, file_id = self.client(), self.user, self.item.id

        def open_at(offset: int) -> Iterator[bytes]:
            with store_errors():
                return drive.open_file(client, user, file_id, offset=offset)[2]
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
        sink returned takes what WsgiDAV then finds left of it, which is nothing."""
        parent = self._parent if self.found is None else None
        self._upload = Upload(self.door, self.user, self.environ, found=self.found,
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
        parent, name = self._destination(dest_path)
        copy_file(self.door, self.user, self.item, parent.item, name,
                  resolve(self.client(), self.user, dest_path))
        forget(self.environ)
        self._copy_properties(dest_path)


class DriveProvider(DAVProvider):
    """The signed-in user's drive as WsgiDAV's one share."""

    def __init__(self, door: DavDoor) -> None:
        super().__init__()
        self.door = door

    def item_at(self, norm_url: str, environ: dict[str, Any]) -> tuple[str, str] | None:
        """The property manager's resolver (portal.dav.props): a WsgiDAV ref URL (the
        percent-encoded path below the mount, as the lock manager keys locks too) to
        (owner, item id) of the signed-in user's drive, by the request's own lookups."""
        user = environ.get(USER_KEY)
        try:
            path = unquote(norm_url, errors="strict")
        except UnicodeDecodeError:
            return None
        if not user or not path.startswith("/"):
            return None
        with store_errors():
            found = resolve(self.door.client(), user, path, environ)
        return None if found is None else (user, found.item.id)

    def is_readonly(self) -> bool:
        return False

    def make(self, path: str, environ: dict[str, Any],
             found: Found) -> FolderResource | FileResource:
        if found.item.is_folder:
            return FolderResource(self, path, environ, found)
        return FileResource(self, path, environ, found)

    def get_resource_inst(self, path: str, environ: dict[str, Any]
                          ) -> FolderResource | FileResource | None:
        with store_errors():
            found = resolve(self.door.client(), environ[USER_KEY], path, environ)
        return None if found is None else self.make(path, environ, found)

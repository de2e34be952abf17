"""Changing the drive: rename, move and delete files and folders.

Each change is one ``mutate_row`` in :mod:`shards.model.drive`, conditioned
on the versions it read; a name clash is refused with the listing and a
sentence saying why.  A delete moves into the Trash (:mod:`.drive_trash`; one
``mutate_row``, no byte moved) and comes back with an Undo; it still asks first (a
GET, or a POST without ``confirm=yes``, shows the question).  Each change comes back with its notice
(:mod:`.pages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import NotFound
from werkzeug.utils import redirect

from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT

from .auth import current_user, login_required
from .drive import folder_url
from .drive_trash import trash_and_undo
from .filenames import BadFileName, check_filename
from .pages import with_notice

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request



def _location(self: Portal, user: str, kind: str, item_id: str) -> drive.Item:
    client = self.client()
    item = (drive.get_file(client, user, item_id) if kind == FILE
            else drive.get_folder(client, user, item_id))
    if item is None:
        raise NotFound(f"There is no such {kind} in your drive.")
    return item


class DriveEditViews:
    """Mixin of :class:`portal.app.Portal`: the drive's changes."""

    def _rename(self: Portal, request: Request, kind: str, item_id: str) -> Response:
        user = current_user(request)
        item = _location(self, user, kind, item_id)
        try:
            name = check_filename(request.form.get("name", ""))
            drive.rename(self.client(), user, kind, item_id, name)
        except BadFileName as exc:
            return self.drive_refusal(request, item.parent, drive.BadName(
                f"That name cannot be used: {exc}."))
        except drive.DriveError as exc:
            return self.drive_refusal(request, item.parent, exc)
        return redirect(with_notice(folder_url(item.parent), "renamed"), 303)

    @login_required
    def on_drive_file_rename(self: Portal, request: Request, file_id: str) -> Response:
        return self._rename(request, FILE, file_id)

    @login_required
    def on_drive_folder_rename(self: Portal, request: Request, folder_id: str) -> Response:
        return self._rename(request, FOLDER, folder_id)

    def _move(self: Portal, request: Request, kind: str, item_id: str) -> Response:
        user = current_user(request)
        item = _location(self, user, kind, item_id)
        if item.id == ROOT:
            raise NotFound("The top folder of your drive cannot be moved.")
        if request.method == "POST":
            target = request.form.get("target", "")
            if target != ROOT and not drive.is_id(target):
                raise NotFound("There is no such folder in your drive.")
            try:
                drive.move(self.client(), user, kind, item_id, target)
            except drive.DriveError as exc:
                return self.drive_refusal(request, item.parent, exc)
            return redirect(with_notice(folder_url(target), "moved"), 303)
        folders = drive.all_folders(self.client(), user)
        targets: list[dict[str, Any]] = []
        for folder in folders.values():
            path = drive.path_in(folders, folder.id)
            if path is None or (kind == FOLDER and any(f.id == item_id for f in path)):
                continue  # deleted, or the folder itself and what lies below it
            targets.append({"id": folder.id, "names": [f.name for f in path[1:]],
                            "here": folder.id == item.parent})
        targets.sort(key=lambda t: [n.casefold() for n in t["names"]])
        return self.render(request, "drive_move.html", item=item, targets=targets,
                           back=folder_url(item.parent))

    @login_required
    def on_drive_file_move(self: Portal, request: Request, file_id: str) -> Response:
        return self._move(request, FILE, file_id)

    @login_required
    def on_drive_folder_move(self: Portal, request: Request, folder_id: str) -> Response:
        return self._move(request, FOLDER, folder_id)

    @login_required
    def on_drive_file_delete(self: Portal, request: Request, file_id: str) -> Response:
        user = current_user(request)
        if request.method != "POST" or request.form.get("confirm") != "yes":
            item = _location(self, user, FILE, file_id)
            return self.render(request, "drive_delete.html", item=item,
                               back=folder_url(item.parent))
        item = _location(self, user, FILE, file_id)
        return trash_and_undo(self, request, [(FILE, file_id)], item.parent)

    @login_required
    def on_drive_folder_delete(self: Portal, request: Request, folder_id: str) -> Response:
        user = current_user(request)
        client = self.client()
        folder = _location(self, user, FOLDER, folder_id)
        if folder.id == ROOT:
            raise NotFound("The top folder of your drive cannot be deleted.")
        if request.method != "POST" or request.form.get("confirm") != "yes":
            listing = drive.list_folder(client, user, folder_id)
            files = sum(1 for i in listing.items if not i.is_folder)
            return self.render(request, "drive_delete.html", item=folder,
                               files=files, folders=len(listing.items) - files,
                               back=folder_url(folder.parent))
        return trash_and_undo(self, request, [(FOLDER, folder_id)], folder.parent)

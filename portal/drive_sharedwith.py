"""Folders shared with named users: the owner's Sharing page, and "Shared with me".

The grants and the access check are :mod:`shards.model.drive.grants`.  Every
URL of a shared folder names the owner and the shared folder
(``/drive/with/<owner>/<shared folder>/...``), so each request reads the
owner's grant for the signed-in user (one cell, never cached: a revoke stops
the next request) and then walks the item's parents up to the shared folder;
anything else is a 404, as for a stranger.  A recipient's change is made by
the drive's own functions on the owner's drive row, after the grant's mode was
checked (read-only: 403); uploads count against the owner's quota, since the
bytes are the owner's, and a delete moves the item into the owner's Trash.  A
recipient cannot share the folder on (the share pages act on the signed-in user's
own drive only), nor rename, move or delete the shared folder itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import BaseConverter
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from shards.model import accounts, drive
from shards.model.drive import FILE, FOLDER, ROOT, grants

from .auth import current_user, login_required
from .drive import FORM_OVERHEAD, _closing, _size_of, download_type, folder_url, safe_ctype, zip_stream
from .drive_shares import item_ref
from .errors import http_message, http_status
from .filenames import BadFileName, check_filename, content_disposition
from .pages import with_notice

if TYPE_CHECKING:
    from .app import Portal, Request

PAGE = 200              # entries of a shared folder per page
_MODES = {"read": grants.READ, "write": grants.WRITE}
_UPLOAD_PATH = re.compile(r"/drive/with/([a-z0-9][a-z0-9._-]{0,31})/(root|[0-9a-f]{24})/upload")


class UserConverter(BaseConverter):
    """An account name in a URL (shards.model.accounts' rule), so nothing else reaches a row."""

    regex = "[a-z0-9][a-z0-9._-]{0,31}"


def with_url(owner: str, shared_id: str, folder_id: str | None = None) -> str:
    """A folder's page as a recipient sees it (the shared folder's own without ``folder_id``)."""
    base = f"/drive/with/{owner}/{shared_id}"
    return base if folder_id is None or folder_id == shared_id else f"{base}/d/{folder_id}"


class DriveSharedWithViews:
    """Mixin of :class:`portal.app.Portal`: sharing folders with named users."""

    # -- the owner's side --------------------------------------------------------

    def recipient_name(self: Portal, text: str) -> str:
        """The account a "share with" field names: a name, or a name at one of our domains."""
        name, at, domain = text.strip().lower().partition("@")
        if at and domain not in self.config.site.domains:
            raise drive.NoSuchItem(f"Share with someone here: a name, or name@"
                                   f"{self.config.site.domains[0]}.")
        if not accounts.user_exists(self.client(), name):
            raise drive.NoSuchItem("There is no account by that name here.")
        return name

    def sharing_page(self: Portal, request: Request, folder_id: str, *, status: int = 200,
                     error: str | None = None) -> Response:
        user = current_user(request)
        folder = drive.get_folder(self.client(), user, folder_id)
        if folder is None:
            raise drive.NoSuchItem("There is no such folder in your drive.")
        return self.render(request, "drive_sharing.html", status=status, error=error,
                           folder=folder, grants=grants.folder_grants(self.client(), user,
                                                                      folder_id),
                           limit=grants.MAX_PER_FOLDER, back=folder_url(folder_id),
                           domain=self.config.site.domains[0])

    @login_required
    def on_drive_sharing(self: Portal, request: Request, folder_id: str) -> Response:
        return self.sharing_page(request, folder_id)

    @login_required
    def on_drive_sharing_add(self: Portal, request: Request, folder_id: str) -> Response:
        user = current_user(request)
        mode = _MODES.get(request.form.get("mode", ""))
        if mode is None:
            raise BadRequest("Choose read-only or read-write.")
        try:
            recipient = self.recipient_name(request.form.get("who", "")[:300])
            grants.grant(self.client(), user, folder_id, recipient, mode)
        except (grants.NotAllowed, grants.TooManyGrants) as exc:
            return self.sharing_page(request, folder_id, status=http_status(exc),
                                     error=http_message(exc))
        except drive.NoSuchItem as exc:
            if drive.get_folder(self.client(), user, folder_id) is None:
                raise
            return self.sharing_page(request, folder_id, status=400, error=http_message(exc))
        return redirect(with_notice(f"/drive/d/{folder_id}/sharing", "shared-with"), 303)

    @login_required
    def on_drive_sharing_revoke(self: Portal, request: Request, folder_id: str) -> Response:
        user = current_user(request)
        recipient = request.form.get("user", "")
        if not accounts.valid_username(recipient) or not grants.revoke(
                self.client(), user, folder_id, recipient):
            raise drive.NoSuchItem("This folder is not shared with that person.")
        return redirect(with_notice(f"/drive/d/{folder_id}/sharing", "sharing-revoked"), 303)

    # -- the recipient's side ----------------------------------------------------

    @login_required
    def on_drive_with(self: Portal, request: Request) -> Response:
        found = grants.shared_with(self.client(), current_user(request))
        return self.render(request, "drive_with.html", shared=found, with_url=with_url,
                           limit=grants.MAX_PER_RECIPIENT)

    def reach(self: Portal, request: Request, owner: str, shared_id: str, kind: str,
              item_id: str, *, write: bool = False) -> grants.Access:
        """The signed-in user's access to ``item_id`` (see the module)."""
        return grants.access(self.client(), current_user(request), owner, shared_id, kind,
                             item_id, write=write)

    def with_folder_page(self: Portal, request: Request, owner: str, shared_id: str,
                         folder_id: str, *, status: int = 200,
                         error: str | None = None) -> Response:
        got = self.reach(request, owner, shared_id, FOLDER, folder_id)
        after = request.args.get("after", "")
        try:
            after = drive.check_name(after) if after else ""
        except drive.BadName:
            after = ""
        _, entries, more = drive.entries_page(self.client(), owner, folder_id, after=after,
                                              limit=PAGE)
        writable = got.grant.writable
        targets = grants.within(self.client(), owner, shared_id) if writable and entries else []
        return self.render(request, "drive_with_folder.html", status=status, error=error,
                           owner=owner, shared_id=shared_id, folder=got.item, crumbs=got.path,
                           entries=entries, more=more, after=entries[-1].name if more else "",
                           writable=writable, targets=targets, with_url=with_url)

    @login_required
    def on_drive_with_open(self: Portal, request: Request, owner: str,
                           shared_id: str) -> Response:
        return self.with_folder_page(request, owner, shared_id, shared_id)

    @login_required
    def on_drive_with_folder(self: Portal, request: Request, owner: str, shared_id: str,
                             folder_id: str) -> Response:
        return self.with_folder_page(request, owner, shared_id, folder_id)

    @login_required
    def on_drive_with_file(self: Portal, request: Request, owner: str, shared_id: str,
                           file_id: str) -> Response:
        got = self.reach(request, owner, shared_id, FILE, file_id)
        if request.method == "HEAD":
            size, chunks = got.item.size, None
        else:
            _, size, chunks = drive.open_file(self.client(), owner, file_id)
        # Always "attachment", as the owner's own downloads: nothing renders on our origin.
        response = Response(mimetype=download_type(got.item), direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(got.item.name),
            "Cache-Control": "private, no-cache"})
        response.content_length = size
        if chunks is not None:
            response.response = _closing(chunks)
        return response

    @login_required
    def on_drive_with_zip(self: Portal, request: Request, owner: str, shared_id: str,
                          folder_id: str) -> Response:
        got = self.reach(request, owner, shared_id, FOLDER, folder_id)
        response = Response(mimetype="application/zip", direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(f"{got.item.name or 'drive'}.zip"),
            "Cache-Control": "private, no-cache"})
        if request.method != "HEAD":
            response.response = zip_stream(self.client(), owner, folder_id)
        return response

    def shared_upload_limit(self: Portal, request: Request) -> None:
        """Before a shared upload's body is read: a recipient who may not write gets no
        room for a file; one who may, what the *owner's* quota still allows."""
        request.max_content_length = FORM_OVERHEAD
        matched = _UPLOAD_PATH.fullmatch(request.path)
        if matched is None or request.session.user is None:
            return
        owner, shared_id = matched.groups()
        try:
            grants.access(self.client(), request.session.user, owner, shared_id, FOLDER,
                          shared_id, write=True)
        except drive.DriveError:
            return  # the view refuses it in the same words, on a body this small
        limit, used = self.quota_and_usage(owner)
        request.max_content_length = min(self.config.max_upload,
                                         max(0, limit - used) + FORM_OVERHEAD)

    def form_target(self: Portal, request: Request, owner: str, shared_id: str,
                    field: str = "folder") -> grants.Access:
        """The folder a recipient's form acts in, checked writable and inside the share."""
        folder_id = request.form.get(field, "")
        if folder_id != ROOT and not drive.is_id(folder_id):
            raise NotFound("There is no such folder in this shared folder.")
        return self.reach(request, owner, shared_id, FOLDER, folder_id, write=True)

    def form_item(self: Portal, request: Request, owner: str,
                  shared_id: str) -> grants.Access:
        """The item a recipient's form changes: writable, inside, and not the shared root."""
        kind, item_id = item_ref(request.form.get("item"))
        got = self.reach(request, owner, shared_id, kind, item_id, write=True)
        if kind == FOLDER and item_id == shared_id:
            raise grants.NotAllowed("The shared folder itself is its owner's to rename, "
                                    "move or delete.")
        return got

    def with_refusal(self: Portal, request: Request, owner: str, shared_id: str,
                     folder_id: str, exc: drive.DriveError) -> Response:
        return self.with_folder_page(request, owner, shared_id, folder_id,
                                     status=http_status(exc), error=http_message(exc))

    @login_required
    def on_drive_with_upload(self: Portal, request: Request, owner: str,
                             shared_id: str) -> Response:
        here = self.form_target(request, owner, shared_id).item.id
        uploads = [u for u in request.files.getlist("file") if u.filename]
        if not uploads:
            raise BadRequest("Choose a file to upload.")
        try:
            for upload in uploads:
                # Stored by the owner's functions into the owner's drive, on their quota.
                drive.store_file(self.client(), owner, here, check_filename(upload.filename or ""),
                                 upload.stream, size=_size_of(upload),
                                 ctype=safe_ctype(upload.mimetype),
                                 quota=self.user_quota(owner))
        except BadFileName as exc:
            return self.with_refusal(request, owner, shared_id, here,
                                     drive.BadName(f"That file name cannot be used: {exc}."))
        except drive.DriveError as exc:
            return self.with_refusal(request, owner, shared_id, here, exc)
        return redirect(with_notice(with_url(owner, shared_id, here), "uploaded"), 303)

    @login_required
    def on_drive_with_mkdir(self: Portal, request: Request, owner: str,
                            shared_id: str) -> Response:
        here = self.form_target(request, owner, shared_id).item.id
        try:
            name = check_filename(request.form.get("name", ""))
            drive.create_folder(self.client(), owner, here, name)
        except BadFileName as exc:
            return self.with_refusal(request, owner, shared_id, here,
                                     drive.BadName(f"That folder name cannot be used: {exc}."))
        except drive.DriveError as exc:
            return self.with_refusal(request, owner, shared_id, here, exc)
        return redirect(with_notice(with_url(owner, shared_id, here), "folder-created"), 303)

    @login_required
    def on_drive_with_rename(self: Portal, request: Request, owner: str,
                             shared_id: str) -> Response:
        got = self.form_item(request, owner, shared_id)
        try:
            name = check_filename(request.form.get("name", ""))
            drive.rename(self.client(), owner, got.item.kind, got.item.id, name)
        except BadFileName as exc:
            return self.with_refusal(request, owner, shared_id, got.item.parent,
                                     drive.BadName(f"That name cannot be used: {exc}."))
        except drive.DriveError as exc:
            return self.with_refusal(request, owner, shared_id, got.item.parent, exc)
        return redirect(with_notice(with_url(owner, shared_id, got.item.parent), "renamed"), 303)

    @login_required
    def on_drive_with_move(self: Portal, request: Request, owner: str,
                           shared_id: str) -> Response:
        got = self.form_item(request, owner, shared_id)
        target = self.form_target(request, owner, shared_id, "target").item.id
        try:
            drive.move(self.client(), owner, got.item.kind, got.item.id, target)
        except drive.DriveError as exc:
            return self.with_refusal(request, owner, shared_id, got.item.parent, exc)
        return redirect(with_notice(with_url(owner, shared_id, target), "moved"), 303)

    @login_required
    def on_drive_with_delete(self: Portal, request: Request, owner: str,
                             shared_id: str) -> Response:
        """Into the *owner's* Trash, as the owner's own delete: the owner can restore it."""
        got = self.form_item(request, owner, shared_id)
        try:
            drive.trash(self.client(), owner, got.item.id, kind=got.item.kind)
        except drive.DriveError as exc:
            return self.with_refusal(request, owner, shared_id, got.item.parent, exc)
        return redirect(with_notice(with_url(owner, shared_id, got.item.parent),
                                    "shared-trashed"), 303)

    @login_required
    def on_drive_with_leave(self: Portal, request: Request, owner: str,
                            shared_id: str) -> Response:
        if not grants.leave(self.client(), current_user(request), owner, shared_id):
            raise drive.NoSuchItem("That folder is not shared with you (any more).")
        return redirect(with_notice("/drive/with", "shared-left"), 303)

"""The drive's Trash page and a file's Versions page.

"Delete" in the drive moves into the Trash (:mod:`shards.model.drive.trash`, one
``mutate_row``); the redirect's notice comes with an *Undo* button, the trashed ids in the
URL's ``undo`` (as the webmail's), that posts them to ``/drive/trash/restore``.  The Trash
page lists each item with the place it came from, when it left and its size; *Restore*
puts it back (renamed, or in the top folder, and the notice says which), *Delete
forever* and *Empty trash* ask first.  A file's Versions page lists its earlier versions
(:mod:`shards.model.drive.versions`), each downloadable and restorable; a restore is
conditioned on the file being as the page showed it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from shards.model import drive
from shards.model.drive import FILE

from .auth import current_user, login_required
from .drive import _closing, counted, download_type, folder_url
from .errors import http_message, http_status
from .filenames import content_disposition
from .pages import with_notice

if TYPE_CHECKING:
    from .app import Portal, Request

PURGE_IN_REQUEST = 5.0  # seconds of clean-up a delete for good does before handing the rest on
MAX_UNDO = 500         # ids one undo or restore form may name (a selection's at most)
SHOWN = 500            # Trash rows one page shows (the most recent)
EMPTY_IN_REQUEST = 2000  # items "Empty trash" deletes in one request; the rest on the next


def trash_url(ids: list[str], url: str) -> str:
    """``url`` (with its notice) and the trashed ids for the notice's Undo button."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}undo={','.join(ids)}" if ids else url


def _ids(request: Request) -> list[str]:
    ids = list(dict.fromkeys(request.form.getlist("item") if request.method == "POST"
                             else request.args.getlist("item")))
    if not ids:
        raise BadRequest("Choose something in the Trash first.")
    if len(ids) > MAX_UNDO or not all(drive.is_id(i) for i in ids):
        raise NotFound("That is no longer in your Trash.")
    return ids


def trash_page(portal: Portal, request: Request, *, status: int = 200,
               error: str | None = None) -> Response:
    user = current_user(request)
    items = drive.list_trash(portal.client(), user)
    return portal.render(request, "drive_trash.html", status=status, error=error,
                         items=items[:SHOWN], total=len(items), days=drive.TRASH_DAYS,
                         used=drive.usage(portal.client(), user),
                         quota=portal.user_quota(user))


def purge_soon(portal: Portal, user: str) -> None:
    """Trees deleted for good: their clean-up now, the rest in the background."""
    if not drive.purge(portal.client(), user, deadline=time.monotonic() + PURGE_IN_REQUEST):
        portal.background.purge_later(user)


def trash_and_undo(portal: Portal, request: Request, refs: list[tuple[str, str]],
                   folder_id: str) -> Response:
    """Move ``refs`` into the Trash, a batch per mutation; back to the folder with the
    notice and its Undo (portal.drive_edit, portal.drive_select)."""
    user, client = current_user(request), portal.client()
    done: list[str] = []
    for start in range(0, len(refs), drive.BATCH):
        try:
            done += [i.id for i in drive.trash_many(client, user,
                                                    refs[start:start + drive.BATCH])]
        except drive.DriveError as exc:
            note = f" ({len(done)} moved to the Trash before this.)" if done else ""
            return portal.drive_refusal(request, folder_id, exc, note)
    return redirect(trash_url(done, counted(folder_url(folder_id), "trashed", len(done))),
                    303)


class DriveTrashViews:
    """Mixin of :class:`portal.app.Portal`: the Trash and the Versions pages."""

    @login_required
    def on_drive_trash(self: Portal, request: Request) -> Response:
        return trash_page(self, request)

    @login_required
    def on_drive_trash_restore(self: Portal, request: Request) -> Response:
        """Restore items (the Trash page's button, or a notice's Undo)."""
        user, client = current_user(request), self.client()
        ids = _ids(request)
        restored: list[drive.Restored] = []
        for item_id in ids:
            try:
                restored.append(drive.restore(client, user, item_id))
            except drive.NoSuchItem:
                continue  # restored already (an Undo pressed twice) or gone for good
            except drive.DriveError as exc:
                return trash_page(self, request, status=http_status(exc),
                                       error=http_message(exc))
        if not restored:
            return redirect(with_notice("/drive/trash", "trash-none"), 303)
        where = restored[0].item.parent
        if any(r.to_root for r in restored):
            key = "restored-root"
        elif any(r.renamed for r in restored):
            key = "restored-renamed"
        else:
            return redirect(counted(folder_url(where), "restored", len(restored)), 303)
        return redirect(with_notice(folder_url(where), key), 303)

    @login_required
    def on_drive_trash_delete(self: Portal, request: Request) -> Response:
        """Delete items in the Trash for good: a GET (or a POST without ``confirm=yes``)
        asks first."""
        user, client = current_user(request), self.client()
        ids = _ids(request)
        if request.method != "POST" or request.form.get("confirm") != "yes":
            items = []
            for item_id in ids:
                try:
                    items.append(drive.get_trashed(client, user, item_id))
                except drive.NoSuchItem:
                    continue
            if not items:
                raise NotFound("That is no longer in your Trash.")
            return self.render(request, "drive_trash_confirm.html", items=items,
                               empty=False, back="/drive/trash")
        done = 0
        for start in range(0, len(ids), drive.BATCH):
            done += len(drive.delete_forever(client, user, ids[start:start + drive.BATCH]))
        purge_soon(self, user)
        return redirect(counted("/drive/trash", "trash-deleted", done), 303)

    @login_required
    def on_drive_trash_empty(self: Portal, request: Request) -> Response:
        user, client = current_user(request), self.client()
        if request.method != "POST" or request.form.get("confirm") != "yes":
            items = drive.list_trash(client, user)
            if not items:
                return redirect("/drive/trash", 303)
            return self.render(request, "drive_trash_confirm.html", items=items[:SHOWN],
                               total=len(items), empty=True, back="/drive/trash")
        done = drive.empty_trash(client, user, limit=EMPTY_IN_REQUEST)
        purge_soon(self, user)
        if done >= EMPTY_IN_REQUEST and drive.list_trash(client, user):  # a bound per request
            return redirect(with_notice("/drive/trash", "trash-emptied-part", done), 303)
        return redirect(with_notice("/drive/trash", "trash-emptied"), 303)

    @login_required
    def on_drive_versions(self: Portal, request: Request, file_id: str) -> Response:
        drive.live_file(self.client(), current_user(request), file_id)  # not in the Trash
        item, versions = drive.list_versions(self.client(), current_user(request), file_id)
        return self.render(request, "drive_versions.html", item=item, versions=versions,
                           keep=drive.MAX_VERSIONS, back=folder_url(item.parent))

    @login_required
    def on_drive_version_download(self: Portal, request: Request, file_id: str,
                                  content_id: str) -> Response:
        user, client = current_user(request), self.client()
        item = drive.live_file(client, user, file_id)
        if request.method == "HEAD":
            version = drive.get_version(client, user, file_id, content_id)
            size, chunks = version.size, None
        else:
            version, size, chunks = drive.open_version(client, user, file_id, content_id)
        # As every download: an attachment, never rendered on our origin.
        shown = drive.Item(id=item.id, kind=FILE, name=item.name, parent=item.parent,
                           ctype=version.ctype)
        response = Response(mimetype=download_type(shown), direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(item.name),
            "Cache-Control": "private, no-cache"})
        response.content_length = size
        if chunks is not None:
            response.response = _closing(chunks)
        return response

    @login_required
    def on_drive_version_restore(self: Portal, request: Request, file_id: str,
                                 content_id: str) -> Response:
        user = current_user(request)
        expect = request.form.get("expect", "")
        if not expect.isdigit() or len(expect) > 18:
            raise BadRequest("That page is out of date; look at the versions again.")
        try:
            drive.restore_version(self.client(), user, file_id, content_id, expect=int(expect))
        except drive.Changed as exc:
            item, versions = drive.list_versions(self.client(), user, file_id)
            return self.render(request, "drive_versions.html", status=409,
                               error=http_message(exc), item=item, versions=versions,
                               keep=drive.MAX_VERSIONS, back=folder_url(item.parent))
        return redirect(with_notice(f"/drive/{file_id}/versions", "version-restored"), 303)



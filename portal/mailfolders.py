"""The webmail's folders: the list on every mail page, a folder's pages, and a user's own
folders made, renamed and deleted.

The list is one ``get_row`` of the mailbox row's folder cells
(:func:`shards.model.mail.list_folders`): each cell carries its folder's counts, so
the unread numbers cost no read of any message.  The special folders come first in
the order people expect (Inbox, Sent, Drafts, Junk, Trash), then the user's own,
nested by "/" (:data:`shards.model.mail.DELIMITER`).  A folder page is
``/mail/f/<id>``, newest first, paged as ``/mail`` always was (the Inbox's page:
``/mail`` and ``/mail?folder=sent`` keep working).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect

from raftkv.errors import Refused
from shards.model import mail, mailbox

from .auth import current_user, login_required
from .errors import http_message
from .pages import with_notice
from .pagestore import together

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

PAGE_SIZE = 25  # messages per page of a folder, newest first
# The special folders as the list shows them: its order and names (the store's INBOX
# is "Inbox" here, as in every mail client).
SPECIAL_ORDER = (mail.INBOX, mail.SENT, mail.DRAFTS, mail.JUNK, mail.TRASH)
SPECIAL_LABELS = {mail.INBOX: "Inbox", mail.SENT: "Sent", mail.DRAFTS: "Drafts",
                  mail.JUNK: "Junk", mail.TRASH: "Trash"}
# Folders whose list shows whom a message went to rather than who sent it.
TO_FOLDERS = frozenset({mail.SENT, mail.DRAFTS})


@dataclass(frozen=True)
class NavFolder:
    """One line of the folder list."""

    id: int
    name: str       # the folder's full name ("Work/2026"); a special one's label
    label: str      # what the line shows: the last part below a listed parent
    depth: int      # how far it is indented
    unread: int
    total: int
    special: bool

    @property
    def url(self) -> str:
        return folder_path(self.id)


def folder_path(fid: int) -> str:
    """A folder's page ("/mail" for the Inbox, as it always was)."""
    return "/mail" if fid == mail.INBOX else f"/mail/f/{fid}"


def folder_list(client: KeyValueStore, user: str) -> list[NavFolder]:
    """The folder list: one read of the folder cells, unread counts included."""
    folders = {f.id: f for f in mail.list_folders(client, user)}
    shown = [NavFolder(fid, SPECIAL_LABELS[fid], SPECIAL_LABELS[fid], 0, folders[fid].unseen,
                       folders[fid].exists, True)
             for fid in SPECIAL_ORDER if fid in folders]
    own = sorted((f for f in folders.values() if f.id not in SPECIAL_LABELS),
                 key=lambda f: [part.casefold() for part in f.name.split(mail.DELIMITER)])
    depth_of: dict[str, int] = {}
    for folder in own:
        # Below the nearest listed parent ("a/b/c" under "a" when there is no "a/b").
        parent, label, depth = folder.name, folder.name, 0
        while mail.DELIMITER in parent:
            parent = parent.rsplit(mail.DELIMITER, 1)[0]
            if parent in depth_of:
                label, depth = folder.name[len(parent) + 1:], depth_of[parent] + 1
                break
        depth_of[folder.name] = depth
        shown.append(NavFolder(folder.id, folder.name, label, min(depth, 6), folder.unseen,
                               folder.exists, False))
    return shown


def find_nav(folders: list[NavFolder], fid: int) -> NavFolder:
    for folder in folders:
        if folder.id == fid:
            return folder
    raise NotFound("There is no such folder in your mailbox.")


def _message_id(request: Request, name: str) -> str:
    """A paging link's message id (a GET parameter), or "" if it is not one."""
    value = request.args.get(name, "")
    return value if mailbox.is_message_id(value) else ""


def uid_list(text: str, limit: int) -> list[int]:
    """UIDs from a comma-separated parameter (an undo link's); [] for anything else."""
    if not text or len(text) > limit * 11:
        return []
    parts = text.split(",")
    if not all(p.isdigit() and len(p) <= 10 for p in parts):
        return []
    return [int(p) for p in parts][:limit]


class MailFolderViews:
    """Mixin of :class:`portal.app.Portal`: folder pages and the folders themselves."""

    def mail_page(self, request: Request, template: str, *, folder_id: int | None,
                  status: int = 200, **context: Any) -> Response:
        """Render a mail page with the folder list (``folder_id``: the one to mark)."""
        portal = cast("Portal", self)
        folders = folder_list(portal.client(), current_user(request))
        return portal.render(request, template, status=status, folders=folders,
                           folder_id=folder_id, **context)

    @login_required
    def on_mail(self: Portal, request: Request) -> Response:
        """The Inbox (``?folder=sent``: Sent, the address this page always had)."""
        fid = mail.SENT if request.args.get("folder") == "sent" else mail.INBOX
        return self.show_folder(request, fid)

    @login_required
    def on_mail_folder(self: Portal, request: Request, fid: int) -> Response:
        return self.show_folder(request, fid)

    def show_folder(self, request: Request, fid: int) -> Response:
        """A page of a folder, newest first: one ``get_row`` with a limit from the message
        the link names (ids sort by arrival), never the whole folder."""
        portal = cast("Portal", self)
        user = current_user(request)
        client = portal.client()
        older, newer = _message_id(request, "older"), _message_id(request, "newer")
        # The folder list and the page at the same time: one round trip after the session's.
        # Beside them, the usage cell says whether old mail code (a rolling upgrade) wrote
        # this mailbox: then its cells are folded in and the page read again.
        def read() -> list[Any]:
            return together(
                lambda: folder_list(client, user),
                lambda: mailbox.list_page(client, user, fid, older_than=older,
                                          newer_than=newer, limit=PAGE_SIZE),
                lambda: mail.fold_old_writes(client, user))
        folders, page, folded = read()
        if folded:
            folders, page, _ = read()
        here = find_nav(folders, fid)
        if newer and not page.more:  # "newer" reached the newest: that is the first page
            return redirect(here.url, 303)
        messages = page.messages
        marked = portal.read_marks.pending(user)
        if marked:
            messages = [replace(m, unread=False) if m.id in marked else m for m in messages]
        # A page covers the ids from where it was asked to where its read stopped
        # (page.resume, which may lie past its last message when the folder is rare
        # among the mail): each link reads on from one of those ends.
        if newer:
            newer_link: str | None = page.resume
            older_link: str | None = messages[-1].id if messages else newer
        else:
            newer_link = (messages[0].id if messages else older) if older else None
            older_link = page.resume if page.more else None
        undo = uid_list(request.args.get("undo", ""), 100) if fid != mail.TRASH else []
        targets = [f for f in folders if f.id != fid and f.id != mail.TRASH]
        return portal.render(request, "mail.html", folders=folders, folder_id=fid, here=here,
                           messages=messages, newer=newer_link, older=older_link,
                           to_column=fid in TO_FOLDERS, in_trash=fid == mail.TRASH,
                           in_drafts=fid == mail.DRAFTS, targets=targets, undo=undo,
                           cursor=older, here_page="folder")

    @login_required
    def on_mail_folder_new(self: Portal, request: Request) -> Response:
        """A folder of the user's own, at the top or below one (``parent``: its id)."""
        user = current_user(request)
        name = (request.form.get("name") or "").strip()
        parent = request.form.get("parent", "")
        client = self.client()
        if parent:
            if not parent.isdigit():
                raise BadRequest("Choose a folder to put it in.")
            above = mail.get_folder(client, user, int(parent))
            if above is None:
                raise NotFound("There is no such folder in your mailbox.")
            if name and above.id != mail.INBOX:
                name = f"{above.name}{mail.DELIMITER}{name}"
            elif name:
                name = f"INBOX{mail.DELIMITER}{name}"
        try:
            made = mail.create_folder(client, user, name)
        except Refused as exc:  # BadFolderName, FolderExists, FolderRefused
            return self.mail_page(request, "mail_folder_error.html", folder_id=None,
                                  status=400, error=http_message(exc))
        return redirect(with_notice(folder_path(made.id), "mail-folder-created"), 303)

    @login_required
    def on_mail_folder_rename(self: Portal, request: Request, fid: int) -> Response:
        """A new last part of a folder's name (it keeps its place; its subfolders follow)."""
        user = current_user(request)
        client = self.client()
        folder = mail.get_folder(client, user, fid)
        if folder is None:
            raise NotFound("There is no such folder in your mailbox.")
        leaf = (request.form.get("name") or "").strip()
        if folder.special is not None:
            return self.mail_page(request, "mail_folder_error.html", folder_id=fid, status=400,
                                  error="The special folders keep their names.")
        head, sep, _old = folder.name.rpartition(mail.DELIMITER)
        try:
            mail.rename_folder(client, user, fid, f"{head}{sep}{leaf}")
        except Refused as exc:
            return self.mail_page(request, "mail_folder_error.html", folder_id=fid, status=400,
                                  error=http_message(exc))
        except mail.NoSuchFolder:
            raise NotFound("There is no such folder in your mailbox.") from None
        return redirect(with_notice(folder_path(fid), "mail-folder-renamed"), 303)

    @login_required
    def on_mail_folder_delete(self: Portal, request: Request, fid: int) -> Response:
        """Delete a folder of the user's own and its messages: asks first (a GET, or a POST
        without ``confirm=yes``)."""
        user = current_user(request)
        client = self.client()
        folder = mail.get_folder(client, user, fid)
        if folder is None:
            raise NotFound("There is no such folder in your mailbox.")
        if folder.special is not None:
            return self.mail_page(request, "mail_folder_error.html", folder_id=fid, status=400,
                                  error="The special folders cannot be deleted.")
        if request.method != "POST" or request.form.get("confirm") != "yes":
            return self.mail_page(request, "mail_folder_delete.html", folder_id=fid,
                                  folder=folder)
        try:
            mail.delete_folder(client, user, fid)
        except Refused as exc:  # one with subfolders
            return self.mail_page(request, "mail_folder_error.html", folder_id=fid, status=400,
                                  error=http_message(exc))
        except mail.NoSuchFolder:
            raise NotFound("There is no such folder in your mailbox.") from None
        return redirect(with_notice("/mail", "mail-folder-deleted"), 303)

"""What the webmail does to messages: star, move, delete into Trash (with an undo), restore,
delete for good, empty the Trash.

A folder page's rows are named by UID (``uid=<n>``, posted with the folder in the
URL), so a selection is one :func:`shards.model.mail.move` (a mutation per batch of
:data:`shards.model.mail.layout.BATCH`), never a lookup per message; the reader
names its message by id and finds its folder and UID by the pointer
(:func:`shards.model.mail.locate`).  "Delete" outside Trash is a move into Trash,
which the record remembers (when, and from which folder): the notice's "Undo"
posts the new Trash UIDs back to ``restore``, which moves each message to where it
came from (the Inbox if that folder is gone).  In Trash, "Delete forever" and
"Empty trash" ask first.  Messages trashed 30 days ago leave by themselves
(:class:`portal.heartbeat.TrashSweeper`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, cast

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect

from shards.model import mail, mailbox
from shards.model.mail.layout import record_col, record_from_cell
from shards.model.mail.reads import read_cells

from .auth import current_user, login_required
from .drive import counted
from .mailfolders import folder_path

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

MAX_SELECTED = 100     # messages one form may name (a page shows 25)
EMPTY_BATCH = 500      # Trash records read at a time by "Empty trash"...
EMPTY_ROUNDS = 20      # ...and at most this many times in one request
_NO_MESSAGE = "There is no such message in your mailbox."


def _uids(request: Request) -> list[int]:
    values = request.form.getlist("uid")
    if not values:
        raise BadRequest("Choose at least one message first.")
    if len(values) > MAX_SELECTED:
        raise BadRequest(f"Choose at most {MAX_SELECTED} messages at a time.")
    if not all(v.isdigit() and len(v) <= 10 for v in values):
        raise NotFound(_NO_MESSAGE)
    return sorted({int(v) for v in values})


def _folder_field(request: Request, name: str = "to") -> int:
    value = request.form.get(name, "")
    if not value.isdigit() or len(value) > 6:
        raise BadRequest("Choose a folder to move to.")
    return int(value)


def _back(fid: int, request: Request) -> str:
    """The folder page the form came from (``back``: another folder's, the undo's; its
    page: ``older`` if it is one of our ids)."""
    back = request.form.get("back", "")
    if back.isdigit() and len(back) <= 6:
        fid = int(back)
    older = request.form.get("older", "")
    url = folder_path(fid)
    return f"{url}?older={older}" if mailbox.is_message_id(older) else url


def _with_undo(url: str, trash_uids: list[int]) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}undo={','.join(map(str, trash_uids))}"


def records_at(client: KeyValueStore, user: str, fid: int, uids: list[int]
               ) -> list[mail.Record]:
    """The records of folder ``fid`` at ``uids`` that exist, in that order: one
    ``get_cells`` (per 256)."""
    row = mail.mailbox_row(user)
    cells = read_cells(client, [(row, record_col(fid, uid)) for uid in uids])
    found = []
    for uid, cell in zip(uids, cells, strict=True):
        record = None if cell is None else record_from_cell(fid, uid, cell.value, cell.version)
        if record is not None:
            found.append(record)
    return found


def restore(client: KeyValueStore, user: str, uids: list[int]) -> int:
    """Move Trash's ``uids`` back where each came from (the Inbox if that folder is gone,
    or it came from nowhere we know); how many moved."""
    records = records_at(client, user, mail.TRASH, uids)
    folders = {f.id for f in mail.list_folders(client, user)}
    by_origin: dict[int, list[int]] = defaultdict(list)
    for record in records:
        origin = record.origin
        back = origin if origin is not None and origin in folders and origin != mail.TRASH \
            else mail.INBOX
        by_origin[back].append(record.uid)
    moved = 0
    for dst, group in sorted(by_origin.items()):
        try:
            moved += len(mail.move(client, user, mail.TRASH, group, dst).uids)
        except mail.NoSuchFolder:  # deleted just now: the Inbox takes them
            moved += len(mail.move(client, user, mail.TRASH, group, mail.INBOX).uids)
    return moved


def _moved(transfer: mail.Transfer) -> list[int]:
    return list(transfer.uids.values())


class MailActionViews:
    """Mixin of :class:`portal.app.Portal`: changes to messages."""

    @login_required
    def on_mail_folder_act(self: Portal, request: Request, fid: int) -> Response:
        """A folder page's selection: ``action`` = move (``to``), trash, restore, forever
        (asks first), read or unread."""
        user, client = current_user(request), self.client()
        action = request.form.get("action", "")
        uids = _uids(request)
        try:
            if action == "move":
                dst = _folder_field(request)
                done = _moved(mail.move(client, user, fid, uids, dst))
                return redirect(counted(_back(fid, request), "mail-moved", len(done)), 303)
            if action == "trash" and fid != mail.TRASH:
                done = _moved(mail.move(client, user, fid, uids, mail.TRASH))
                return redirect(_with_undo(counted(_back(fid, request), "mail-trashed",
                                                   len(done)), done), 303)
            if action == "restore" and fid == mail.TRASH:
                count = restore(client, user, uids)
                return redirect(counted(_back(fid, request), "mail-restored", count), 303)
            if action == "forever" and fid == mail.TRASH:
                if request.form.get("confirm") != "yes":
                    records = records_at(client, user, mail.TRASH, uids)
                    return self.mail_page(request, "mail_delete.html", folder_id=fid,
                                          messages=[mailbox.summary(r) for r in records],
                                          uids=uids)
                gone = mail.expunge(client, user, mail.TRASH, uids)
                return redirect(counted(_back(fid, request), "mail-deleted", len(gone)), 303)
            if action in ("read", "unread"):
                mail.store_flags(client, user, fid, uids, [mail.SEEN],
                                 "add" if action == "read" else "remove")
                return redirect(counted(_back(fid, request), f"mail-{action}", len(uids)),
                                303)
        except mail.NoSuchFolder:
            raise NotFound("There is no such folder in your mailbox.") from None
        except mail.FolderRefused as exc:
            raise BadRequest(str(exc)) from None
        raise BadRequest("Choose what to do with the messages.")

    @login_required
    def on_mail_folder_star(self: Portal, request: Request, fid: int) -> Response:
        """A row's star: ``star=<uid>`` sets \\Flagged, ``unstar=<uid>`` clears it."""
        user = current_user(request)
        on = "star" in request.form
        value = request.form.get("star" if on else "unstar", "")
        if not value.isdigit() or len(value) > 10:
            raise NotFound(_NO_MESSAGE)
        try:
            mail.store_flags(self.client(), user, fid, [int(value)], [mail.FLAGGED],
                             "add" if on else "remove")
        except mail.NoSuchFolder:
            raise NotFound("There is no such folder in your mailbox.") from None
        return redirect(counted(_back(fid, request), "starred" if on else "unstarred", 1), 303)

    @login_required
    def on_mail_empty_trash(self: Portal, request: Request) -> Response:
        """Delete everything in Trash for good: asks first."""
        user, client = current_user(request), self.client()
        if request.form.get("confirm") != "yes":
            trash = mail.get_folder(client, user, mail.TRASH)
            return self.mail_page(request, "mail_empty_trash.html", folder_id=mail.TRASH,
                                  count=trash.exists if trash else 0)
        gone = 0
        for _ in range(EMPTY_ROUNDS):
            records = mail.list_newest(client, user, mail.TRASH, limit=EMPTY_BATCH)
            if not records:
                break
            gone += len(mail.expunge(client, user, mail.TRASH, [r.uid for r in records]))
        return redirect(counted(folder_path(mail.TRASH), "mail-deleted", gone)
                        if gone else folder_path(mail.TRASH), 303)

    # -- the reader's buttons: the message by its id ------------------------------------

    def _locate(self, request: Request, msg_id: str) -> mail.Record:
        portal = cast("Portal", self)
        if not mailbox.is_message_id(msg_id):
            raise NotFound(_NO_MESSAGE)
        record = mail.locate(portal.client(), current_user(request), msg_id)
        if record is None:
            raise NotFound(_NO_MESSAGE)
        return record

    @login_required
    def on_mail_message_star(self: Portal, request: Request, msg_id: str) -> Response:
        record = self._locate(request, msg_id)
        wanted = request.form.get("on", "")
        # "toggle": the reader did not know the star (portal.mail): it flips.
        on = wanted == "1" or (wanted == "toggle" and mail.FLAGGED not in record.flags)
        mail.store_flags(self.client(), current_user(request), record.fid, [record.uid],
                         [mail.FLAGGED], "add" if on else "remove")
        return redirect(counted(f"/mail/{msg_id}", "starred" if on else "unstarred", 1), 303)

    @login_required
    def on_mail_message_move(self: Portal, request: Request, msg_id: str) -> Response:
        record = self._locate(request, msg_id)
        dst = _folder_field(request)
        if dst == record.fid:
            return redirect(f"/mail/{msg_id}", 303)
        try:
            mail.move(self.client(), current_user(request), record.fid, [record.uid], dst)
        except mail.NoSuchFolder:
            raise NotFound("There is no such folder in your mailbox.") from None
        return redirect(counted(folder_path(record.fid), "mail-moved", 1), 303)

    @login_required
    def on_mail_delete(self: Portal, request: Request, msg_id: str) -> Response:
        """Outside Trash: into Trash, with an undo; in Trash: for good.  A GET, or a POST
        without ``confirm=yes``, asks first (the reader's button posts the answer itself
        outside Trash: the undo is the way back)."""
        record = self._locate(request, msg_id)
        user, client = current_user(request), self.client()
        in_trash = record.fid == mail.TRASH
        if request.method != "POST" or request.form.get("confirm") != "yes":
            return self.mail_page(request, "mail_delete.html", folder_id=record.fid,
                                  messages=[mailbox.summary(record)], uids=[record.uid],
                                  single=True)
        if in_trash:
            self.message_views.forget(user, msg_id)  # only to free its memory
            mail.expunge(client, user, mail.TRASH, [record.uid])
            return redirect(counted(folder_path(mail.TRASH), "mail-deleted", 1), 303)
        done = _moved(mail.move(client, user, record.fid, [record.uid], mail.TRASH))
        return redirect(_with_undo(counted(folder_path(record.fid), "mail-trashed", 1), done),
                        303)

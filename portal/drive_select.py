"""The drive's answers to many at once: moves and deletes of a selection, and the
question an upload's name clash asks ("Replace" or "Keep both").

A selection is the rows' checkboxes (``item=file:<id>`` or ``folder:<id>``), posted
to ``/drive/select`` with the button pressed (``action=move`` or ``delete``); a GET
of the same fields shows the question only.
Deleting asks first, listing what goes; moving asks where to.  Each batch of up
to :data:`shards.model.drive.BATCH` items is one ``mutate_row``
(:mod:`shards.model.drive.many`); a longer selection is several, in order, and a
refusal says how many went before it (docs/architecture.md, "Pages").

An upload whose name is taken is held (:mod:`shards.model.drive.held`) and the
upload's answer asks; ``/drive/held`` takes the answers, from the plain form's
question page or from static/drive.js, one file at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect

from shards.model import drive
from shards.model.drive import FILE, FOLDER, ROOT

from .auth import current_user, login_required
from .drive import counted, folder_url, json_answer, wants_json
from .drive_trash import trash_and_undo
from .errors import http_message, http_status
from .pages import with_notice

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict
    from werkzeug.wrappers import Response

    from .app import Portal, Request

MAX_SELECTED = 500  # items one selection may name: 20 mutations at most
CHOICES = ("replace", "keep", "cancel")
_KINDS = {"file": FILE, "folder": FOLDER}


def _fields(request: Request) -> MultiDict[str, str]:
    """A question's fields: a GET only asks (a reload, a link), a POST may act."""
    return request.form if request.method == "POST" else request.args


def _selection(request: Request) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for value in _fields(request).getlist("item"):
        kind, _, item_id = value.partition(":")
        if kind not in _KINDS or not drive.is_id(item_id):
            raise NotFound("There is no such item in your drive.")
        if (_KINDS[kind], item_id) not in refs:
            refs.append((_KINDS[kind], item_id))
    if len(refs) > MAX_SELECTED:
        raise BadRequest(f"Choose at most {MAX_SELECTED} items at a time.")
    return refs


def _batches(refs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    return [refs[i:i + drive.BATCH] for i in range(0, len(refs), drive.BATCH)]


class DriveSelectViews:
    """Mixin of :class:`portal.app.Portal`: selections and name-clash answers."""

    @login_required
    def on_drive_select(self: Portal, request: Request) -> Response:
        """The selection's question (GET or POST), or with its answer (POST), the change."""
        user = current_user(request)
        fields = _fields(request)
        folder_id = fields.get("folder", ROOT)
        if folder_id != ROOT and not drive.is_id(folder_id):
            raise NotFound("There is no such folder in your drive.")
        refs = _selection(request)
        action = fields.get("action", "")
        if action not in ("move", "delete"):
            raise BadRequest("Choose Move or Delete.")
        if not refs:
            return self.folder_page(request, folder_id, status=400,
                                    error=f"Tick the files and folders to {action} first.")
        client = self.client()
        try:
            items = drive.read_items(client, user, refs)
        except drive.DriveError as exc:
            return self.drive_refusal(request, folder_id, exc)
        asking = request.method != "POST"
        if action == "delete":
            if asking or request.form.get("confirm") != "yes":
                return self.render(request, "drive_delete_many.html", items=items,
                                   folder=folder_id, back=folder_url(folder_id))
            return self._delete_selected(request, user, folder_id, refs)
        target = "" if asking else request.form.get("target", "")
        if not target:
            return self._move_question(request, user, folder_id, items)
        if target != ROOT and not drive.is_id(target):
            raise NotFound("There is no such folder in your drive.")
        done = 0
        for batch in _batches(refs):
            try:
                done += len(drive.move_many(client, user, batch, target)) or len(batch)
            except drive.DriveError as exc:
                note = f" ({done} moved before this.)" if done else ""
                return self.drive_refusal(request, folder_id, exc, note)
        return redirect(counted(folder_url(target), "moved", len(refs)), 303)

    def _delete_selected(self: Portal, request: Request, user: str, folder_id: str,
                         refs: list[tuple[str, str]]) -> Response:
        return trash_and_undo(self, request, refs, folder_id)  # each batch one mutation

    def _move_question(self: Portal, request: Request, user: str, folder_id: str,
                       items: list[drive.Item]) -> Response:
        folders = drive.all_folders(self.client(), user)
        chosen = {i.id for i in items if i.is_folder}
        targets: list[dict[str, Any]] = []
        for folder in folders.values():
            path = drive.path_in(folders, folder.id)
            if path is None or any(f.id in chosen for f in path):
                continue  # deleted, or a chosen folder and what lies below it
            targets.append({"id": folder.id, "names": [f.name for f in path[1:]],
                            "here": folder.id == folder_id})
        targets.sort(key=lambda t: [n.casefold() for n in t["names"]])
        return self.render(request, "drive_move.html", items=items, targets=targets,
                           folder=folder_id, back=folder_url(folder_id))

    @login_required
    def on_drive_held(self: Portal, request: Request) -> Response:
        """The answers to upload name clashes: ``held=<id>`` and ``choice-<id>`` each."""
        user = current_user(request)
        fields = _fields(request)
        folder_id = fields.get("folder", ROOT)
        ids = fields.getlist("held")
        if (not ids or len(ids) > MAX_SELECTED or not all(drive.is_id(i) for i in ids)
                or (folder_id != ROOT and not drive.is_id(folder_id))):
            raise NotFound("That upload is no longer waiting.")
        if request.method != "POST":  # the question again (a reload)
            return self.clash_page(request, folder_id, ids)
        choices = {i: request.form.get(f"choice-{i}", "") for i in ids}
        client = self.client()
        if not all(c in CHOICES for c in choices.values()):
            return self.clash_page(request, folder_id, ids, status=400,
                                   error="Choose Replace, Keep both or Cancel for each file.")
        placed: list[str] = []
        for held_id, choice in choices.items():
            try:
                if choice == "cancel":
                    drive.drop_held(client, user, held_id)
                    continue
                answer = drive.replace_file if choice == "replace" else drive.keep_both
                placed.append(answer(client, user, held_id, quota=self.user_quota(user)).name)
            except drive.DriveError as exc:
                if wants_json(request):
                    return json_answer({"error": http_message(exc)}, http_status(exc))
                waiting = [i for i in ids if i not in placed and self._still_held(user, i)]
                return self.clash_page(request, folder_id, waiting, status=http_status(exc),
                                       error=http_message(exc))
        if wants_json(request):
            return json_answer({"placed": placed})
        if not placed:
            return redirect(with_notice(folder_url(folder_id), "upload-cancelled"), 303)
        return redirect(counted(folder_url(folder_id), "uploaded", len(placed)), 303)

    def _still_held(self: Portal, user: str, held_id: str) -> bool:
        try:
            drive.get_held(self.client(), user, held_id)
            return True
        except drive.NoSuchItem:
            return False

    def clash_page(self: Portal, request: Request, folder_id: str, ids: list[str], *,
                   status: int = 200, error: str | None = None, uploaded: int = 0) -> Response:
        """The question for uploads held on a name clash: each with what holds its name."""
        user = current_user(request)
        client = self.client()
        clashes = []
        for held_id in ids:
            try:
                held = drive.get_held(client, user, held_id)
            except drive.NoSuchItem:
                continue
            other = drive.get_file(client, user, held.other_id) if held.other_id else None
            clashes.append({"held": held, "other": other,
                            "replace": other is not None and not held.other_is_folder})
        if not clashes:
            return redirect(folder_url(folder_id), 303)
        return self.render(request, "drive_clash.html", status=status, error=error,
                           clashes=clashes, folder=folder_id, uploaded=uploaded,
                           back=folder_url(folder_id))

"""Reading mail: one message, its HTML part and its attachments' names.

Messages are stored raw (RFC 5322) by :mod:`shards.model.mailbox`; this
module only parses them for display.  A plain-text part is shown escaped.  An
HTML part is shown in a sandboxed frame of its own (:mod:`.mailhtml`), remote
images blocked until the reader asks; a message with both shows the HTML, with
a switch to the plain text.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, cast

import nh3
from markupsafe import Markup, escape
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from raftkv.errors import ReadOnly
from raftkv.interface import Unchanged
from shards.model import mail, mailbox
from shards.model.mail.layout import record_col

from . import mailhtml, readmarks
from .auth import current_user, login_required
from .filenames import plain_filename
from .mailfolders import NavFolder, folder_list
from .messageview import MessageView
from .pages import PAGE_SCRIPT_SRC
from .pagestore import together

if TYPE_CHECKING:
    from .app import Portal, Request
    from .pagestore import Key, PageStore

# The message page's policy: our stylesheet only; no script but the page script (by its
# hash, so nothing in a mail can name another), no fonts or images; the one frame is ours
# (the HTML part, .mailhtml); forms may only post back here (the delete question), or on
# through the balancer to another frontend when this one died, and the page script may
# register the failover worker (portal.failover).
MAIL_CSP = ("default-src 'none'; style-src 'self'; img-src 'none'; frame-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; worker-src 'self'; "
            f"{PAGE_SCRIPT_SRC}")
# nh3's defaults minus everything that can fetch a URL by itself.
_HTML_TAGS = nh3.ALLOWED_TAGS - {"img", "picture", "source", "video", "audio", "track",
                                 "map", "area"}
_URL_SCHEMES = {"http", "https", "mailto"}
HEADER_CHARS = 998        # RFC 5322's line limit: longer header values are cut for display
BODY_CHARS = 1024 * 1024  # a page shows at most this much text; the rest is summarised
# Control characters other than tab and newline mean nothing on a page (NUL least of all).
_CONTROL = dict.fromkeys(c for c in range(32) if c not in (9, 10)) | {127: None}


def displayable(text: str, limit: int) -> str:
    """``text`` without control characters, cut to ``limit`` characters."""
    text = text.translate(_CONTROL)
    if len(text) > limit:
        return text[:limit] + f" … [{len(text) - limit:,} more characters not shown]"
    return text


def parse_message(raw: bytes) -> EmailMessage:
    """Parse a stored message; the ``default`` policy decodes RFC 2047 headers."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(message, EmailMessage):  # for mypy: the default policy makes one
        raise TypeError("unexpected message class")
    return message


def header_text(message: EmailMessage, name: str) -> str:
    """A header decoded for display, or its raw text if it will not decode."""
    return displayable(mailbox.header_value(message, name), HEADER_CHARS)


def _part_text(part: EmailMessage) -> str:
    try:
        text = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return text if isinstance(text, str) else ""


def _part(message: EmailMessage, subtype: str) -> str | None:
    """The text of the message's body part of ``subtype``, or None if it has none."""
    part = message.get_body(preferencelist=(subtype,))
    if not isinstance(part, EmailMessage):
        return None
    return displayable(_part_text(part), BODY_CHARS)


def message_body(message: EmailMessage) -> tuple[str, str | Markup]:
    """``("text", str)`` to show escaped, or ``("html", Markup)`` already sanitized."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "text", ""
    if not isinstance(part, EmailMessage):
        return "text", ""
    text = displayable(_part_text(part), BODY_CHARS)
    if part.get_content_subtype() == "html":
        return "html", Markup(sanitize_html(text))
    return "text", text


def sanitize_html(html: str) -> str:
    """Mail HTML reduced to harmless markup: no scripts, styles, images or remote loads."""
    return nh3.clean(html, tags=_HTML_TAGS, url_schemes=_URL_SCHEMES,
                     link_rel="noopener noreferrer nofollow")


def attachments(message: EmailMessage) -> list[dict[str, Any]]:
    """Name and size of each attachment, in order (``/mail/<id>/part/<n>`` downloads one)."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append({"name": plain_filename(part.get_filename(), "(unnamed)"),
                      "size": len(payload) if isinstance(payload, bytes) else 0})
    return found


SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date")


def _place(record_key: Key | None) -> tuple[int, int] | None:
    """(folder id, UID) of a record's key (``u:<fid>:<uid>``)."""
    if record_key is None:
        return None
    _, fid, uid = record_key[1].split(":")
    return int(fid), int(uid)


def _record_hint(request: Request, user: str) -> list[Key]:
    """The record a folder page's link names (``?at=<folder id>.<uid>``), if well formed."""
    fid, dot, uid = request.args.get("at", "").partition(".")
    if not (dot and fid.isdigit() and uid.isdigit() and len(fid) <= 6 and len(uid) <= 10):
        return []
    return [(mail.mailbox_row(user), record_col(int(fid), int(uid)))]


def message_view(raw: bytes) -> MessageView:
    """What the mail view shows of a stored message: parsed, decoded and sanitised."""
    message = parse_message(raw)
    text, html = _part(message, "plain"), _part(message, "html")
    cleaned, remote = mailhtml.clean(html) if html is not None else (None, False)
    if text is None and html is None:
        text = ""  # no body part at all: an empty text, as a mail client shows it
    # A text body escaped here, once, as the template's autoescape would on every visit.
    return MessageView(text=None if text is None else escape(text), html=cleaned,
                       remote_images=remote, headers=tuple((name, header_text(message, name))
                                     for name in SHOWN_HEADERS),
                       attachments=tuple((a["name"], a["size"]) for a in attachments(message)))


def message_keys(user: str, msg_id: str) -> tuple[Key, Key]:
    """A message's metadata cell (its pointer: confirmed and cached) and its raw cell
    (probed by version)."""
    return ((mailbox.mailbox_row(user), mailbox.META_PREFIX + msg_id),
            (mailbox.message_row(user, msg_id), mailbox.RAW_COLUMN))


class MailViews:
    """Mixin of :class:`portal.app.Portal`: the webmail pages."""

    def cells_mail_message(self, user: str, msg_id: str) -> list[Key]:
        """The message's metadata, confirmed with the session (portal.pagestore), and its
        raw cell, named by the version of the view this worker keeps of it
        (portal.messageview): unchanged, the bytes are neither sent nor parsed again."""
        if not mailbox.is_message_id(msg_id):
            return []
        portal = cast("Portal", self)
        meta, raw = message_keys(user, msg_id)
        client = portal.client()
        client.probe(raw, portal.message_views.version(user, msg_id))
        # The record the worker's copy of the pointer names, confirmed in the same read.
        kept = client.cache.peek(meta)
        record = None if kept is None else mailbox.record_key(user, kept.value)
        return [meta, raw, *([record] if record is not None else [])]

    cells_mail_html = cells_mail_message

    def _read_view(self, request: Request, msg_id: str, *, mark_read: bool
                   ) -> tuple[MessageView, mailbox.MessageSummary | None, Key | None,
                              list[NavFolder]]:
        """The message's view (this worker's, if the store confirms it), its summary
        (its folder, UID and flags) if its record was read with the page, the key of its
        record, and (the reader, ``mark_read``) the folder list; with ``mark_read``, a
        GET marks it read.

        The record is where the pointer says: read with the session when this worker
        knew the pointer, else beside the folder list once the pointer is in.  A worker
        that has not read the pointer with the session reads the record the link names
        (``?at=<folder>.<uid>``, as the folder pages write it) with the pointer, in the
        same round trip, and uses it only if the pointer agrees: two round trips, the
        session's and this one."""
        portal = cast("Portal", self)
        user = current_user(request)
        if not mailbox.is_message_id(msg_id):
            raise NotFound("There is no such message in your mailbox.")
        client = portal.client()
        meta_key, raw_key = message_keys(user, msg_id)
        known = portal.message_views.version(user, msg_id)
        # Both were read with the session when this worker knew whose it is; else
        # they are read now, together (one round trip), and only then.
        hint = _record_hint(request, user)
        folders: list[NavFolder] = []

        def read_folders() -> None:
            folders.extend(folder_list(client, user))

        if meta_key in client.found:
            # The pointer came with the session: its record, unless it came too, is read
            # beside the folder list (the reader shows its star).
            pointer = client.found[meta_key]
            where = None if pointer is None else mailbox.record_key(user, pointer.value)
            hint = [where] if mark_read and where is not None and where not in client.found \
                else []
        reads = [*([lambda: client.confirm([meta_key, *hint])] if meta_key not in client.found
                   else [lambda: client.confirm(hint)] if hint else []),
                 *([lambda: client.read_probed(raw_key, known)]
                   if raw_key not in client.probed else []),
                 *([read_folders] if mark_read else [])]
        if reads:
            together(*reads)
        meta, raw = client.found.get(meta_key), client.read_probed(raw_key, known)
        view = None
        if isinstance(raw, Unchanged) and raw.version:
            view = portal.message_views.get(user, msg_id, raw.version)
            if view is None:  # evicted since it was named: read the bytes after all
                raw = client.get(*raw_key)
        if meta is None or (view is None and (raw is None or isinstance(raw, Unchanged))):
            raise NotFound("There is no such message in your mailbox.")
        # The metadata cell points to the message's record (its folder, its flags).
        summary, record_key = self._record_read(client, user, msg_id, meta.value)
        # A HEAD request does not mark mail read; nor does a read-only group take writes.
        if (mark_read and request.method == "GET" and (summary is None or summary.unread)
                and not client.lost(mailbox.mailbox_row(user))
                and not portal.read_marks.note(user, msg_id, _place(record_key))):
            try:
                readmarks.write(client, user, msg_id, _place(record_key))
            except ReadOnly:
                pass  # read-only (shards.readonly): the message shows, still unread
        if view is None:
            assert raw is not None and not isinstance(raw, Unchanged)
            view = message_view(raw.value)
            portal.message_views.put(user, msg_id, raw.version, view)
        return view, summary, record_key, folders

    @staticmethod
    def _record_read(client: PageStore, user: str, msg_id: str, pointer: bytes
                     ) -> tuple[mailbox.MessageSummary | None, Key | None]:
        """The message's summary from its record as read with the session, when this
        worker knew the pointer (cells_mail_message), and the record's key.  Else the
        summary is None: the read mark is noted anyway (its writer skips a message
        already read), and the reader reads the record after that (a third round trip,
        on a worker that had not seen this message)."""
        record_key = mailbox.record_key(user, pointer)
        if record_key is None:  # a mailbox not migrated yet, or garbage
            summary = mailbox.get_summary(client, user, msg_id)
        elif record_key in client.found:
            summary = mailbox.summary_in(msg_id, record_key, client.found[record_key])
        else:
            return None, record_key
        if summary is None:
            raise NotFound("There is no such message in your mailbox.")
        return summary, record_key

    @login_required
    def on_mail_message(self: Portal, request: Request, msg_id: str) -> Response:
        """A message: its HTML part in a sandboxed frame (``?view=plain``: its plain part;
        ``?images=1``: the frame asked with remote images), else its plain part; its
        star, the folders it can move to, and delete (into Trash; in Trash, for good)."""
        view, summary, record_key, folders = self._read_view(request, msg_id, mark_read=True)
        flagged: bool | None = None if summary is None else summary.flagged
        if summary is None and record_key is not None:
            # Opened without a link's hint on a worker that had not seen its pointer: its
            # folder and UID are the pointer's; its star is not known without a third
            # round trip, so the star button toggles ("on=toggle").
            fid, uid = _place(record_key) or (0, 0)
            summary = mailbox.MessageSummary(id=msg_id, sender="", subject="", date=0.0,
                                             unread=False, size=0, folder="", fid=fid, uid=uid)
        if summary is None:
            raise NotFound("There is no such message in your mailbox.")
        show = "plain" if view.html is None or (
            request.args.get("view") == "plain" and view.text is not None) else "html"
        response = self.render(request, "message.html", msg_id=msg_id, message=summary,
                               flagged=flagged,
                               folders=folders, folder_id=summary.fid,
                               targets=[f for f in folders
                                        if f.id not in (summary.fid, mail.TRASH)],
                               show=show, images=request.args.get("images") == "1",
                               sandbox=mailhtml.SANDBOX, **view.context())
        response.headers["Content-Security-Policy"] = self.failover_policy(MAIL_CSP)
        return response

    @login_required
    def on_mail_html(self: Portal, request: Request, msg_id: str) -> Response:
        """The HTML part as the frame's own page, under a policy that runs no script and
        loads remote images only with ``?images=1`` (docs/security.md, "HTML mail")."""
        view, _summary, _key, _folders = self._read_view(request, msg_id, mark_read=False)
        if view.html is None:
            raise NotFound("This message has no HTML part.")
        response = Response(mailhtml.frame_document(view.html), mimetype="text/html")
        response.headers["Content-Security-Policy"] = mailhtml.frame_csp(
            request.args.get("images") == "1")
        # Only our own pages may frame it (app.py keeps a view's own X-Frame-Options).
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Cache-Control"] = "private, no-cache"
        return response

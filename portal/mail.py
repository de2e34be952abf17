"""Reading mail: a folder's messages (inbox, sent), one message, delete.

Messages are stored raw (RFC 5322) by :mod:`shards.model.mailbox`; this
module only parses them for display.  A plain-text part is shown escaped.  A
message with only HTML is cleaned with nh3 (no scripts, no styles, no images,
so nothing remote loads and nothing tracks the reader) and served under a
Content-Security-Policy that would block any of that even if cleaning failed.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import nh3
from markupsafe import Markup
from werkzeug.exceptions import NotFound
from werkzeug.utils import redirect

from raftkv.errors import ReadOnly
from shards.model import mailbox

from .auth import current_user, login_required
from .filenames import plain_filename

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request

# The message page's policy: our stylesheet only; no scripts, frames, fonts or
# remote images; forms may only post back here (the delete button).
MAIL_CSP = ("default-src 'none'; style-src 'self'; img-src 'none'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
# nh3's defaults minus everything that can fetch a URL by itself.
_HTML_TAGS = nh3.ALLOWED_TAGS - {"img", "picture", "source", "video", "audio", "track",
                                 "map", "area"}
_URL_SCHEMES = {"http", "https", "mailto"}
PAGE_SIZE = 25            # messages per page of a folder, newest first
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


class MailViews:
    """Mixin of :class:`portal.app.Portal`: the webmail pages."""

    @login_required
    def on_mail(self: Portal, request: Request) -> Response:
        user = current_user(request)
        folder = "sent" if request.args.get("folder") == "sent" else "inbox"
        messages = mailbox.list_messages(self.client(), user, folder)
        pages = max(1, -(-len(messages) // PAGE_SIZE))
        page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
        return self.render(request, "mail.html", folder=folder, page=page, pages=pages,
                           messages=messages[(page - 1) * PAGE_SIZE:page * PAGE_SIZE],
                           address=f"{user}@{self.config.site.domains[0]}")

    @login_required
    def on_mail_message(self: Portal, request: Request, msg_id: str) -> Response:
        user = current_user(request)
        client = self.client()
        raw = mailbox.get_message(client, user, msg_id)
        if raw is None:
            raise NotFound("There is no such message in your mailbox.")
        if request.method == "GET":  # a HEAD request should not mark mail as read
            try:
                mailbox.mark_read(client, user, msg_id)
            except ReadOnly:
                pass  # read-only (shards.readonly): the message shows, still unread
        message = parse_message(raw)
        kind, body = message_body(message)
        response = self.render(
            request, "message.html", msg_id=msg_id, kind=kind, body=body,
            attachments=attachments(message),
            headers={name: header_text(message, name) for name in ("From", "To", "Cc",
                                                                    "Subject", "Date")})
        response.headers["Content-Security-Policy"] = MAIL_CSP
        return response

    @login_required
    def on_mail_delete(self: Portal, request: Request, msg_id: str) -> Response:
        if not mailbox.delete_message(self.client(), current_user(request), msg_id):
            raise NotFound("There is no such message in your mailbox.")
        return redirect("/mail", 303)

"""Drafts: the compose form saved while the user writes, and continued later.

The form carries the id of its last saved draft (``draft``); each save appends
the new version to Drafts (:func:`shards.model.mail.append`, flagged ``\\Draft``
and ``\\Seen``, counted in the quota) and then expunges the previous one, so one
compose session leaves one draft.  ``static/mail.js`` saves every
:data:`portal.compose.AUTOSAVE_SECONDS` when the text changed (a JSON answer gives the new id);
without script the form's "Save draft" button does the same and shows the form
again.  A draft keeps the text fields (To, Cc, Subject, the text, what it replies
to or forwards) and the form's Message-ID, so a draft sent twice is still one
message; files chosen for attachment are not kept in a draft.  Opening a draft
(``/mail/compose?draft=<id>``) fills the form; sending it deletes it.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, cast

from werkzeug.exceptions import BadRequest, NotFound

from raftkv.errors import OverLimit
from shards.model import mail, mailbox

from .auth import current_user, login_required
from .compose import FORM_MESSAGE_ID
from .drive import json_answer, wants_json
from .errors import http_message, http_status
from .mail import HEADER_CHARS, displayable, parse_message

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from .app import Portal, Request

FORWARD_HEADER = "X-Raftcloud-Forward-Of"  # a forward's original, re-attached when sent
TEXT_FIELDS = ("to", "cc", "subject", "body", "in_reply_to", "forward_of")
TYPED_HEADER = "X-Raftcloud-Draft-{}"  # To and Cc as typed, finished or not


def _parses(text: str) -> bool:
    """Whether a To/Cc field is finished: every part an address."""
    pairs = email.utils.getaddresses([text])
    return bool(pairs) and all("@" in address and address.rpartition("@")[0]
                               for _name, address in pairs)


def draft_bytes(fields: dict[str, str], sender: str, message_id: str) -> bytes:
    """A draft as a message.  Unlike a message sent, its addresses may be unfinished;
    a header that would break the message (a line break in it) is refused.

    :raises BadRequest: a field the message cannot hold.
    """
    message = EmailMessage()
    try:
        message["From"] = sender
        for name, header in (("to", "To"), ("cc", "Cc")):
            if fields.get(name):
                # As typed (an address half written would come back quoted from To), and
                # as To for the mail clients that show Drafts, when it parses.
                message[TYPED_HEADER.format(header)] = fields[name]
                if _parses(fields[name]):
                    message[header] = fields[name]
        if fields.get("subject"):
            message["Subject"] = fields["subject"]
        message["Date"] = email.utils.formatdate(localtime=True)
        message["Message-ID"] = message_id
        if fields.get("in_reply_to"):
            message["In-Reply-To"] = fields["in_reply_to"]
        if mailbox.is_message_id(fields.get("forward_of", "")):
            message[FORWARD_HEADER] = fields["forward_of"]
        message.set_content(fields.get("body", ""))
        return message.as_bytes()
    except ValueError as exc:  # a line break in a header: injection
        raise BadRequest(f"That header is not allowed: {exc}") from None
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on odd input
        raise BadRequest("An address or header of this draft could not be read.") from None


def draft_fields(raw: bytes) -> dict[str, str]:
    """The compose form's fields from a stored draft."""
    message = parse_message(raw)
    body = message.get_body(preferencelist=("plain",))
    text = ""
    if isinstance(body, EmailMessage):
        try:
            content = body.get_content()
            text = content if isinstance(content, str) else ""
        except (LookupError, ValueError):
            text = ""
    fields = {name: displayable(str(message.get(TYPED_HEADER.format(header))
                                    or message.get(header) or ""), HEADER_CHARS)
              for name, header in (("to", "To"), ("cc", "Cc"), ("subject", "Subject"),
                                   ("in_reply_to", "In-Reply-To"))}
    forward = str(message.get(FORWARD_HEADER) or "")
    fields["forward_of"] = forward if mailbox.is_message_id(forward) else ""
    fields["body"] = text
    fields["message_id"] = str(message.get("Message-ID") or "")
    return fields


class DraftViews:
    """Mixin of :class:`portal.app.Portal`: saving drafts and opening them again."""

    def drop_draft(self, user: str, msg_id: str) -> bool:
        """Delete draft ``msg_id`` if it is one (in Drafts); whether it went."""
        portal = cast("Portal", self)
        if not mailbox.is_message_id(msg_id):
            return False
        record = mail.locate(portal.client(), user, msg_id)
        if record is None or record.fid != mail.DRAFTS:
            return False
        return bool(mail.expunge(portal.client(), user, mail.DRAFTS, [record.uid]))

    @login_required
    def on_mail_draft_save(self: Portal, request: Request) -> Response:
        """Save the form as the session's draft, replacing its previous version: a JSON
        answer (``{"draft": id}``) for static/mail.js, else the form again."""
        user, form = current_user(request), request.form
        fields: dict[str, Any] = {name: form.get(name, "") for name in TEXT_FIELDS}
        message_id = self._form_message_id(request)
        raw = draft_bytes(fields, self._address(user), message_id)
        previous = form.get("draft", "")
        try:
            record = mail.append(self.client(), user, mail.DRAFTS, raw,
                                 flags=(mail.SEEN, mail.DRAFT), quota=self.mailbox_quota)
        except OverLimit as exc:  # the mailbox is full
            if wants_json(request):
                return json_answer({"error": http_message(exc)}, status=http_status(exc))
            return self._form(request, status=http_status(exc), draft=previous,
                              error=f"Not saved: {http_message(exc)}", **fields)
        if previous != record.id:
            self.drop_draft(user, previous)
        if wants_json(request):
            return json_answer({"draft": record.id})
        return self._form(request, draft=record.id, notice="Draft saved.", **fields)

    def draft_form(self, request: Request, msg_id: str) -> Response:
        """The compose form filled from draft ``msg_id``."""
        portal = cast("Portal", self)
        user = current_user(request)
        record = mail.locate(portal.client(), user, msg_id) if mailbox.is_message_id(
            msg_id) else None
        raw = None if record is None or record.fid != mail.DRAFTS else mail.get_raw(
            portal.client(), user, msg_id)
        if raw is None:
            raise NotFound("There is no such draft in your mailbox.")
        fields: dict[str, Any] = draft_fields(raw)
        given = fields.pop("message_id")
        if FORM_MESSAGE_ID.fullmatch(given) and given.endswith(
                f"@{portal.config.site.domains[0]}>"):
            fields["message_id"] = given
        return portal._form(request, draft=msg_id, **fields)

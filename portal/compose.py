"""Writing mail in the browser: compose, reply, reply-all, forward, and attachments.

A message is built with the ``email`` package (which refuses header
injection), then handed to :func:`shards.model.outbound.submit` -- the same
path as smtpd's submission port: local recipients at once, the Sent copy,
remote ones through the outbound queue.  A forward re-attaches the original's
attachments on the server side, so they never travel through the browser.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, NotFound, RequestEntityTooLarge
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from raftkv.errors import OverLimit, RaftKVError
from shards.model import accounts, mailbox, outbound, sendlimit

from .auth import current_user, login_required
from .errors import http_message, http_status
from .filenames import content_disposition, plain_filename
from .mail import HEADER_CHARS, displayable, message_body, parse_message
from .pages import PAGE_SCRIPT_HASH, _subresource_hash, with_notice

if TYPE_CHECKING:
    from .app import Portal, Request

# The compose page runs the page script and static/mail.js (saving drafts while the user
# writes: portal.drafts), each by its hash, and the latter posts back here.
MAIL_SCRIPT = "/static/mail.js"
MAIL_SCRIPT_HASH = _subresource_hash("mail.js")
COMPOSE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; worker-src 'self'; "
               f"script-src '{PAGE_SCRIPT_HASH}' '{MAIL_SCRIPT_HASH}'; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
AUTOSAVE_SECONDS = 10  # static/mail.js saves a changed draft this often
log = logging.getLogger("portal.compose")
MAX_MESSAGE = 25 * 1024 * 1024   # as smtpd accepts
MAX_RECIPIENTS = 100
# The multipart framing and the small fields around a message's text and files.
FORM_OVERHEAD = 256 * 1024
TOO_BIG = "A message may be 25 MB at most, attachments included."
_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")  # RFC 6838 type and subtype names


# A Message-ID as make_msgid writes it; a form's is used only if it is one of ours.
FORM_MESSAGE_ID = re.compile(r"<[0-9A-Za-z.\-_]{1,80}@[0-9A-Za-z.\-]{1,253}>")


def _addresses(text: str) -> list[str]:
    """The addresses in a To/Cc field; BadRequest for anything that is not one."""
    if not text.strip():
        # An empty field names nobody.  (getaddresses, since Python 3.13 and the 3.12
        # releases that took its stricter parsing, answers one empty pair for it.)
        return []
    found = []
    for _name, address in email.utils.getaddresses([text]):
        local, at, domain = address.rpartition("@")
        if not (local and at and domain) or any(c.isspace() or c in "<>,;" for c in address):
            raise BadRequest(f"{address or text!r} is not an e-mail address.")
        found.append(address)
    return found


def encoded_size(length: int) -> int:
    """Bytes ``length`` bytes of attachment take in a message: base64, 76-character lines."""
    chars = 4 * -(-length // 3)
    return chars + 2 * -(-chars // 76)


def _upload_size(upload: FileStorage) -> int | None:
    """An upload's size without reading it (werkzeug spooled it to a file), if it can tell."""
    try:
        stream = upload.stream
        size = stream.seek(0, 2)
        stream.seek(0)
        return size
    except (AttributeError, OSError, ValueError):
        return None


def _attachment_type(mimetype: str | None) -> tuple[str, str]:
    """The type an uploaded file is attached as: the browser's, if it is a plain one."""
    maintype, _, subtype = (mimetype or "").partition("/")
    if (not _TOKEN.fullmatch(maintype) or not _TOKEN.fullmatch(subtype)
            or maintype in ("multipart", "message")):  # these would need parts, not bytes
        return "application", "octet-stream"
    return maintype, subtype


def _quote(text: str) -> str:
    return "".join(f"> {line}\n" for line in text.splitlines())


def _prefixed(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}"


class ComposeViews:
    """Mixin of :class:`portal.app.Portal`: the pages that send mail."""

    def _address(self: Portal, user: str) -> str:
        return f"{user}@{self.config.site.domains[0]}"

    def compose_limit(self: Portal, request: Request) -> None:
        """Before a message's body is read: no more than a message may hold.

        Called by the dispatcher, so a body announced larger is refused
        without reading it and a chunked one is cut off at the limit.
        """
        request.max_content_length = min(self.config.max_upload, MAX_MESSAGE + FORM_OVERHEAD)

    def _original(self: Portal, request: Request, msg_id: str) -> EmailMessage:
        raw = mailbox.get_message(self.client(), current_user(request), msg_id)
        if raw is None:
            raise NotFound("There is no such message in your mailbox.")
        return parse_message(raw)

    def _form(self: Portal, request: Request, *, status: int | None = None,
              **fields: Any) -> Response:
        """The compose form; with an ``error``, a 400 unless ``status`` says otherwise."""
        defaults: dict[str, Any] = {"to": "", "cc": "", "subject": "", "body": "", "forward_of": "",
                    "in_reply_to": "", "forwarded": [], "error": None,
                    "send_note": self.send_limits.note(), "draft": "",
                    "message_id": self._form_message_id(request),
                    "mail_script": MAIL_SCRIPT, "mail_script_hash": MAIL_SCRIPT_HASH,
                    "autosave": AUTOSAVE_SECONDS, "here_page": "compose"}
        if status is None:
            status = 400 if fields.get("error") else 200
        if not mailbox.is_message_id(str(fields.get("draft", ""))):
            fields["draft"] = ""
        context = {**defaults, **fields}
        if context["forward_of"] or context["in_reply_to"]:
            context["here_page"] = None  # a reply's form is not the Compose button's page
        response = self.mail_page(request, "compose.html", folder_id=None, **context,
                                  status=status)
        response.headers["Content-Security-Policy"] = self.failover_policy(COMPOSE_CSP)
        return response

    @login_required
    def on_mail_compose(self: Portal, request: Request) -> Response:
        if request.method != "POST":
            if "draft" in request.args:
                return self.draft_form(request, request.args["draft"])
            return self._form(request, to=request.args.get("to", "")[:HEADER_CHARS])
        form = request.form
        try:
            message = self._build(request)
            recipients = _addresses(form.get("to", "")) + _addresses(form.get("cc", ""))
            if not recipients:
                raise BadRequest("Whom should this go to? Fill in To.")
            if len(recipients) > MAX_RECIPIENTS:
                raise BadRequest(f"At most {MAX_RECIPIENTS} recipients, please.")
            self._check_local(recipients)
        except BadRequest as exc:
            return self._form(request, error=exc.description, to=form.get("to", ""),
                              cc=form.get("cc", ""), subject=form.get("subject", ""),
                              body=form.get("body", ""), forward_of=form.get("forward_of", ""),
                              in_reply_to=form.get("in_reply_to", ""),
                              draft=form.get("draft", ""))
        raw = message.as_bytes()
        if len(raw) > MAX_MESSAGE:
            raise RequestEntityTooLarge(TOO_BIG)
        user = current_user(request)
        try:
            self._submit(user, recipients, raw)
        except OverLimit as exc:  # a full mailbox, the hourly caps: the form again, with why
            return self._form(request, status=http_status(exc),
                              error=f"Not sent: {http_message(exc)}", **{
                name: form.get(name, "") for name in ("to", "cc", "subject", "body",
                                                      "forward_of", "in_reply_to", "draft")})
        try:
            self.drop_draft(user, form.get("draft", ""))  # sent: the draft has done its work
        except RaftKVError as exc:  # sent all the same; the draft stays for the user to delete
            log.warning("draft of %s not deleted after sending: %r", user, exc)
        return redirect(with_notice("/mail?folder=sent", "sent"), 303)

    @functools.cached_property
    def send_limits(self: Portal) -> sendlimit.SendLimits:
        """The cluster file's ``[mail]`` sending caps, parsed once per app."""
        return sendlimit.SendLimits.from_table(self.config.cluster.table("mail"))

    @functools.cached_property
    def mailbox_quota(self: Portal) -> int:
        """The cluster file's ``[mail] mailbox_quota``, parsed once per app."""
        return mailbox.quota_setting(self.config.cluster.table("mail"))

    def _submit(self: Portal, user: str, recipients: list[str], raw: bytes) -> None:
        """Send within the account's hourly caps and the local recipients' quotas.

        :raises raftkv.errors.OverLimit: ``SendLimitExceeded``, ``MailboxFull`` (a
            recipient's, or ``SenderMailboxFull``); nothing was sent.
        """
        sendlimit.charge(self.client(), user, len(recipients), self.send_limits)
        outbound.submit(self.client(), user, self._address(user), recipients, raw,
                        domains=self.config.site.domains, quota=self.mailbox_quota)

    def _form_message_id(self: Portal, request: Request) -> str:
        """The Message-ID the form was given when it was first shown, kept through a
        form shown again, else a new one.  The message is sent under it, and sending is
        idempotent by Message-ID (``outbound.submit``): a form sent twice (the failover
        worker sending it on when its frontend died after sending, or a double click)
        sends one message."""
        given = request.form.get("message_id", "") if request.method == "POST" else ""
        if FORM_MESSAGE_ID.fullmatch(given) and given.endswith(
                f"@{self.config.site.domains[0]}>"):
            return given
        return email.utils.make_msgid(domain=self.config.site.domains[0])

    def _build(self: Portal, request: Request) -> EmailMessage:
        form, user = request.form, current_user(request)
        message = EmailMessage()
        try:
            message["From"] = self._address(user)
            message["To"] = form.get("to", "")
            if form.get("cc"):
                message["Cc"] = form["cc"]
            message["Subject"] = form.get("subject", "")
            message["Date"] = email.utils.formatdate(localtime=True)
            message["Message-ID"] = self._form_message_id(request)
            if form.get("in_reply_to"):
                message["In-Reply-To"] = form["in_reply_to"]
                message["References"] = form["in_reply_to"]
        except ValueError as exc:  # a header with a line break in it: injection
            raise BadRequest(f"That header is not allowed: {exc}") from None
        except Exception:  # noqa: BLE001 - the email package raises assorted errors on odd input
            raise BadRequest("An address or header of this message could not be read.") from None
        message.set_content(form.get("body", ""))
        # What is left of the message's size for attachments, as they will be encoded.
        budget = MAX_MESSAGE - len(form.get("body", "").encode("utf-8", "replace"))
        uploads = [u for u in request.files.getlist("attachment") if u.filename]
        # The files wait on disk: refuse too many bytes before reading any of them.
        sizes = [_upload_size(u) for u in uploads]
        if sum(encoded_size(size or 0) for size in sizes) > budget:
            raise RequestEntityTooLarge(TOO_BIG)
        for upload in uploads:
            # Counted while read, too: never more than what is left in memory.
            data = upload.stream.read(max(0, budget) + 1)
            budget -= encoded_size(len(data))
            if budget < 0:
                raise RequestEntityTooLarge(TOO_BIG)
            maintype, subtype = _attachment_type(upload.mimetype)
            filename = (upload.filename or "")[:255]  # never empty: see uploads
            try:
                message.add_attachment(data, maintype=maintype, subtype=subtype,
                                       filename=filename)
            except Exception:  # noqa: BLE001 - as above, for a file name it cannot encode
                raise BadRequest(f"The attachment name {filename!r} "
                                 "cannot be used.") from None
        if form.get("forward_of"):
            for part in self._original(request, form["forward_of"]).iter_attachments():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    budget -= encoded_size(len(payload))
                    if budget < 0:
                        raise RequestEntityTooLarge(TOO_BIG)
                    message.add_attachment(payload, maintype=part.get_content_maintype(),
                                           subtype=part.get_content_subtype(),
                                           filename=part.get_filename() or "attachment")
        return message

    def _check_local(self: Portal, recipients: list[str]) -> None:
        domains = self.config.site.domains
        for address in recipients:
            local, _, domain = address.rpartition("@")
            if domain.lower() in domains and not accounts.user_exists(self.client(),
                                                                      local.lower()):
                raise BadRequest(f"There is no account {address} here.")

    @login_required
    def on_mail_reply(self: Portal, request: Request, msg_id: str) -> Response:
        original = self._original(request, msg_id)
        me = self._address(current_user(request)).lower()
        sender = str(original.get("Reply-To") or original.get("From") or "")
        cc = ""
        if request.args.get("all"):
            others = [a for _, a in email.utils.getaddresses(
                [str(original.get("To") or ""), str(original.get("Cc") or "")])
                if a and a.lower() != me]
            cc = ", ".join(others)
        _kind, body = message_body(original)
        return self._form(
            request, to=displayable(sender, HEADER_CHARS), cc=cc,
            subject=_prefixed("Re:", str(original.get("Subject") or "")),
            in_reply_to=str(original.get("Message-ID") or ""),
            body=f"\n\nOn {original.get('Date', '')}, {sender} wrote:\n{_quote(str(body))}")

    @login_required
    def on_mail_forward(self: Portal, request: Request, msg_id: str) -> Response:
        original = self._original(request, msg_id)
        _kind, body = message_body(original)
        header = "".join(f"{name}: {original.get(name, '')}\n"
                         for name in ("From", "Date", "Subject", "To"))
        names = [part.get_filename() or "attachment" for part in original.iter_attachments()]
        return self._form(
            request, subject=_prefixed("Fwd:", str(original.get("Subject") or "")),
            forward_of=msg_id, forwarded=names,
            body=f"\n\n---------- Forwarded message ----------\n{header}\n{body}")

    @login_required
    def on_mail_part(self: Portal, request: Request, msg_id: str, index: int) -> Response:
        """One attachment, always as a download: mail content never runs in our origin."""
        parts = list(self._original(request, msg_id).iter_attachments())
        if not 0 <= index < len(parts):
            raise NotFound("This message has no such attachment.")
        part = parts[index]
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        response = Response(data, mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = content_disposition(
            plain_filename(part.get_filename(), f"attachment-{index}"))
        response.headers["Content-Security-Policy"] = "sandbox"
        return response

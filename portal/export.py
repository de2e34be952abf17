"""A user's own data, downloaded from the Security page: the mail as one mbox file.

The drive's download is the folder zip of the root (``/drive/d/root/zip``,
:func:`portal.drive.zip_stream`); the mail's is here.  Both are streamed while
they are read from the store, so memory stays bounded whatever their size
(docs/data-model.md, "Exporting your data").

The mbox is written by the standard library's :mod:`mailbox` (its "From " lines,
its quoting of body lines that begin with "From ", its blank line between
messages).  :class:`mailbox.mbox` writes only to a file, so each message goes
through a file of its own in a private temporary directory, read back and
deleted before the next: one message on disk and in memory at a time.  Every
folder goes into the one file, oldest first, each message as it was received.
"""

from __future__ import annotations

import email.utils
import mailbox as mbox_format
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from werkzeug.wrappers import Response

from shards.model import mailbox

from .auth import current_user, login_required
from .filenames import content_disposition

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

MBOX_NAME = "mail.mbox"


class ExportViews:
    @login_required
    def on_account_export_mail(self: Portal, request: Request) -> Response:
        """Every message of every folder as one mbox file, built while it is sent.

        A GET that changes nothing, so no CSRF token: another site can make a
        browser fetch it, but only into that browser's own downloads, and it
        cannot read the answer (no CORS).
        """
        user = current_user(request)
        response = Response(mimetype="application/mbox", direct_passthrough=True, headers={
            "Content-Disposition": content_disposition(MBOX_NAME),
            "Cache-Control": "private, no-store"})
        if request.method != "HEAD":
            response.response = mbox_stream(self.client(), user)
        return response


def mbox_stream(client: KeyValueStore, user: str) -> Iterator[bytes]:
    """``user``'s mail as an mbox, one message at a time, oldest first."""
    with tempfile.TemporaryDirectory(prefix="raftcloud-mbox-") as folder:
        path = Path(folder) / "message.mbox"
        for summary in mailbox.every_message(client, user):
            raw = mailbox.get_message(client, user, summary.id)
            if raw is None:
                continue  # deleted while we read
            yield _as_mbox(path, from_line(summary.sender, summary.date), raw)


def from_line(sender: str, arrived: float) -> bytes:
    """The "From " line mbox puts before a message: the sender's address and the arrival
    time (the address as the From header gives it; MAILER-DAEMON when there is none)."""
    address = email.utils.parseaddr(sender)[1]
    if not address or any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in address):
        address = "MAILER-DAEMON"
    return f"From {address} {time.asctime(time.gmtime(arrived))}".encode("ascii")


def _as_mbox(path: Path, first_line: bytes, raw: bytes) -> bytes:
    """One message in mbox form, as :class:`mailbox.mbox` writes it."""
    box = mbox_format.mbox(path)
    try:
        box.add(first_line + b"\n" + raw)
        box.flush()
    finally:
        box.close()
    try:
        return path.read_bytes()
    finally:
        path.unlink()

"""What every page shares beyond the request: feedback notices, times, the page script.

Feedback ("Uploaded.", "Sent.") travels in the redirect's query as a fixed key,
``?done=uploaded``: the base template shows the text this module holds for the
key, so no user text is ever reflected, and an unknown key shows nothing.  The
one page script (``static/pages.js``) rewrites ``<time>`` elements into the
reader's time zone and drops the key from the address bar; every page's CSP
allows that file by its SHA-256 and nothing else (docs/architecture.md, "Pages").
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

from markupsafe import Markup

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
NOTICE_PARAM = "done"
# Key -> the sentence the page shows after the action.  Keys are what a redirect
# carries; only these can ever be shown.
NOTICES: dict[str, str] = {
    "welcome": "Welcome! Your account is ready.",
    "logged-out": "You have been logged out.",
    "uploaded": "Uploaded.",
    "upload-cancelled": "Upload cancelled; nothing was stored.",
    "folder-created": "Folder created.",
    "share-revoked": "Link revoked: it opens nothing any more.",
    "shared-with": "Shared. They find it under \u201cShared with me\u201d in their drive.",
    "sharing-revoked": "Access removed: the folder opens nothing for them any more.",
    "shared-left": "You left that shared folder.",
    "shared-trashed": "Moved to its owner\u2019s Trash (they can restore it).",
    "renamed": "Renamed.",
    "moved": "Moved.",
    "deleted": "Deleted for good.",
    "trashed": "Moved to Trash.",
    "restored": "Restored.",
    "restored-renamed": "Restored under a new name: its name was taken meanwhile.",
    "restored-root": "Restored to the top folder: the folder it was in is gone.",
    "trash-none": "That was no longer in your Trash.",
    "trash-emptied": "The Trash is empty; everything in it was deleted for good.",
    "version-restored": "That version is the current one now; the one it replaced is kept.",
    "sent": "Your message has been sent.",
    "mail-deleted": "The message has been deleted for good.",
    "mail-trashed": "Moved to Trash.",
    "mail-moved": "The message has been moved.",
    "mail-restored": "The message is back where it was.",
    "mail-read": "Marked as read.",
    "mail-unread": "Marked as unread.",
    "starred": "Starred.",
    "unstarred": "The star is removed.",
    "mail-folder-created": "Folder created.",
    "mail-folder-renamed": "Folder renamed.",
    "mail-folder-deleted": "The folder has been deleted for good.",
    "password-changed": "Your password has been changed.",
    # Counted (portal.drive_select): the count travels as ?n=<number>, never as text.
    "uploaded-n": "Uploaded {n} files.",
    "moved-n": "Moved {n} items.",
    "deleted-n": "Deleted {n} items for good.",
    "trashed-n": "Moved {n} items to Trash.",
    "restored-n": "Restored {n} items.",
    "trash-deleted": "Deleted for good.",
    "trash-deleted-n": "Deleted {n} items for good.",
    "trash-emptied-part": "Deleted {n} items for good; empty the Trash again for the rest.",
    "mail-deleted-n": "Deleted {n} messages for good.",
    "mail-trashed-n": "Moved {n} messages to Trash.",
    "mail-moved-n": "Moved {n} messages.",
    "mail-restored-n": "Restored {n} messages.",
    "mail-read-n": "Marked {n} messages as read.",
    "mail-unread-n": "Marked {n} messages as unread.",
    # The admin console's (portal/admin_users.py).
    "user-disabled": "The user is disabled and signed out everywhere.",
    "user-enabled": "The user is enabled again.",
    "quota-set": "The quota is set.",
}
COUNT_PARAM = "n"


def with_notice(url: str, key: str, count: int | None = None) -> str:
    """``url`` with the notice ``key`` added to its query (any other parameters kept);
    a counted key (``{n}`` in its text) takes the ``count``."""
    assert key in NOTICES and (count is None) == ("{n}" not in NOTICES[key]), key
    fields = {NOTICE_PARAM: key} if count is None else {NOTICE_PARAM: key, COUNT_PARAM: count}
    parts = urlsplit(url)
    query = "&".join(p for p in (parts.query, urlencode(fields)) if p)
    return urlunsplit(parts._replace(query=query))


def notice_for(key: str | None, count: str | None = None) -> str | None:
    """The sentence for a key from a query, or None for no key or one we never send
    (or a counted one without a plain number)."""
    text = NOTICES.get(key) if key else None
    if text is None or "{n}" not in text:
        return text
    if not count or not count.isdigit() or len(count) > 9:
        return None
    return text.format(n=int(count))


def time_tag(timestamp: float) -> Markup:
    """A Unix time as a page shows it: UTC text in a ``<time>`` that the page script
    rewrites for the reader's time zone ("4:09 PM", "Dec 2", "2025-12-02")."""
    utc = time.gmtime(timestamp)
    return Markup('<time datetime="{}">{}</time>').format(
        time.strftime("%Y-%m-%dT%H:%M:%SZ", utc), time.strftime("%Y-%m-%d %H:%M UTC", utc))


def mail_date(header: str) -> Markup | str:
    """A mail's Date header as a ``<time>``; the header's own text when it does not parse."""
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return header
    if when.tzinfo is None:  # "-0000" or no zone: the sender's clock, not a known instant
        return header
    return time_tag(when.timestamp())


def _subresource_hash(name: str) -> str:
    with open(os.path.join(STATIC_DIR, name), "rb") as script:
        return "sha256-" + base64.b64encode(hashlib.sha256(script.read()).digest()).decode()


# The page script's hash: its <script integrity> and the CSP's only script source, so
# no other script runs, not even another file served by this site (a drive download).
PAGE_SCRIPT = "/static/pages.js"
PAGE_SCRIPT_HASH = _subresource_hash("pages.js")
PAGE_SCRIPT_SRC = f"script-src '{PAGE_SCRIPT_HASH}'"

"""The webmail's search box: ``/mail/search?q=<words>`` (``&f=<folder id>``: one folder).

The search belongs to the mail model (issue 19: an index kept with the messages,
so a query does not read every body).  The page calls
``shards.model.mail.search`` when the model has it, with this signature::

    search(client, user, folder: int | None, *, text: str = "", sender: str = "",
           to: str = "", subject: str = "", body: str = "", since: float | None = None,
           before: float | None = None, limit: int = 50) -> list[Record]

(``folder`` None: every folder; ``text`` matches any of from, to, subject and body;
records newest first.)  Until it exists, the page searches the records' own
headers (from, to, subject) newest first, at most :data:`SCAN_RECORDS` records in
all: a box that works, not the search the issue asks for.  The query's words
``from:x``, ``to:x`` and ``subject:x`` narrow it to one header (quotes keep spaces).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import NotFound

from shards.model import mail, mailbox

from .auth import current_user, login_required
from .mailfolders import folder_list

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

RESULTS = 50           # messages a search shows
SCAN_RECORDS = 2000    # records the header-only search reads at most, all folders together
SCAN_BATCH = 250       # records a read
MAX_QUERY = 200        # characters
_FIELDS = {"from": "sender", "to": "to", "subject": "subject"}


def parse_query(query: str) -> dict[str, str]:
    """The search's fields from the box: ``from:``, ``to:``, ``subject:`` words, the rest
    as ``text`` (lower-cased for matching)."""
    try:
        words = shlex.split(query)
    except ValueError:  # an unbalanced quote: take the words as they are
        words = query.split()
    fields: dict[str, str] = {}
    rest = []
    for word in words:
        name, colon, value = word.partition(":")
        if colon and name.lower() in _FIELDS and value:
            fields[_FIELDS[name.lower()]] = value
        else:
            rest.append(word)
    if rest:
        fields["text"] = " ".join(rest)
    return fields


def _matches(record: mail.Record, fields: dict[str, str]) -> bool:
    for name in ("sender", "to", "subject"):
        if name in fields and fields[name].casefold() not in getattr(record, name).casefold():
            return False
    text = fields.get("text", "").casefold()
    return not text or any(text in value.casefold()
                           for value in (record.sender, record.to, record.cc, record.subject))


def header_search(client: KeyValueStore, user: str, folders: list[int], fields: dict[str, str],
                  limit: int = RESULTS) -> tuple[list[mail.Record], bool]:
    """The stand-in search: records whose headers match, newest first per folder; and
    whether it stopped at :data:`SCAN_RECORDS` before reading every record."""
    found: list[mail.Record] = []
    budget = SCAN_RECORDS
    for fid in folders:
        before: int | None = None
        while budget > 0 and len(found) < limit:
            records = mail.list_newest(client, user, fid, before=before,
                                       limit=min(SCAN_BATCH, budget))
            budget -= len(records)
            found += [r for r in records if _matches(r, fields)]
            if len(records) < SCAN_BATCH:
                break
            before = records[-1].uid
        if budget <= 0 or len(found) >= limit:
            return found[:limit], budget <= 0
    return found[:limit], False


def model_search() -> Callable[..., list[mail.Record]] | None:
    """The model's search, once it is there (see the module's docstring)."""
    found: Any = getattr(mail, "search", None)
    return found if callable(found) else None


class MailSearchViews:
    """Mixin of :class:`portal.app.Portal`: the search page."""

    @login_required
    def on_mail_search(self: Portal, request: Request) -> Response:
        user, client = current_user(request), self.client()
        query = request.args.get("q", "")[:MAX_QUERY].strip()
        folders = folder_list(client, user)
        chosen = request.args.get("f", "")
        fid = int(chosen) if chosen.isdigit() and len(chosen) <= 6 else None
        if fid is not None and fid not in {f.id for f in folders}:
            raise NotFound("There is no such folder in your mailbox.")
        results: list[mail.Record] = []
        partial = False
        fields = parse_query(query) if query else {}
        if fields:
            search = model_search()
            if search is not None:
                results = search(client, user, fid, limit=RESULTS, **fields)
            else:
                results, partial = header_search(
                    client, user, [fid] if fid is not None else [f.id for f in folders], fields)
        names = {f.id: f.name for f in folders}
        return self.render(request, "mail_search.html", folders=folders, folder_id=fid,
                           q=query, messages=[mailbox.summary(r) for r in results],
                           names=names, partial=partial, searched=bool(fields),
                           folder_name=names.get(fid) if fid is not None else None)

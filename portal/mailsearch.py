"""The webmail's search box: ``/mail/search?q=<words>`` (``&f=<folder id>``: one folder).

The search is the mail model's (:func:`shards.model.mail.search`: header terms from
the records, words from the index kept with the messages, so no body is read for a
query).  The box takes words, searched in the index (sender, recipients, subject and
text alike: each must begin a word of the message), and narrowing words:
``from:x``, ``to:x`` (To or Cc), ``subject:x``, ``body:x``, ``after:YYYY-MM-DD`` and
``before:YYYY-MM-DD`` (quotes keep spaces).  Without a folder every folder is
searched, one :func:`~shards.model.mail.search` each; the page shows the newest
:data:`RESULTS` matches, their records read in one ``get_cells`` a folder.
"""

from __future__ import annotations

import calendar
import shlex
import time
from typing import TYPE_CHECKING

from werkzeug.exceptions import NotFound

from shards.model import mail, mailbox

from .auth import current_user, login_required
from .errors import http_message
from .mailactions import records_at
from .mailfolders import folder_list

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

RESULTS = 50           # messages a search shows
MAX_QUERY = 200        # characters
_FIELDS = {"from": "sender", "to": "to", "subject": "subject", "body": "body"}
_DATES = {"after": "since", "since": "since", "before": "before"}


def _day(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        return None


def parse_query(query: str) -> mail.Query:
    """The model's query from the box's text (see the module docstring).

    :raises BadQuery: a date that is not YYYY-MM-DD.
    """
    try:
        parts = shlex.split(query)
    except ValueError:  # an unbalanced quote: take the words as they are
        parts = query.split()
    terms: dict[str, str] = {}
    dates: dict[str, float] = {}
    rest = []
    for part in parts:
        name, colon, value = part.partition(":")
        key = name.lower()
        if colon and value and key in _FIELDS:
            terms[_FIELDS[key]] = f"{terms[_FIELDS[key]]} {value}" if _FIELDS[key] in terms \
                else value
        elif colon and value and key in _DATES:
            day = _day(value)
            if day is None:
                raise mail.BadQuery(f"Write dates as YYYY-MM-DD: {value!r} is not one.")
            dates[_DATES[key]] = day
        else:
            rest.append(part)
    if rest:
        terms["text"] = " ".join(rest)
    return mail.Query(sender=terms.get("sender"), to=terms.get("to"),
                      subject=terms.get("subject"), body=terms.get("body"),
                      text=terms.get("text"), since=dates.get("since"),
                      before=dates.get("before"))


def search_folders(client: KeyValueStore, user: str, folders: list[int], query: mail.Query,
                   limit: int = RESULTS) -> tuple[list[mail.Record], bool]:
    """The newest ``limit`` records matching ``query`` in ``folders`` (newest first in
    each, the folders in order), and whether every answer was complete."""
    found: list[mail.Record] = []
    complete = True
    for fid in folders:
        if len(found) >= limit:
            break
        answer = mail.search(client, user, fid, query)
        complete = complete and answer.complete
        newest = sorted(answer.uids, reverse=True)[:limit - len(found)]
        found += records_at(client, user, fid, newest)
    return found, complete


class MailSearchViews:
    """Mixin of :class:`portal.app.Portal`: the search page."""

    @login_required
    def on_mail_search(self: Portal, request: Request) -> Response:
        user, client = current_user(request), self.client()
        text = request.args.get("q", "")[:MAX_QUERY].strip()
        folders = folder_list(client, user)
        chosen = request.args.get("f", "")
        fid = int(chosen) if chosen.isdigit() and len(chosen) <= 6 else None
        if fid is not None and fid not in {f.id for f in folders}:
            raise NotFound("There is no such folder in your mailbox.")
        results: list[mail.Record] = []
        complete, error = True, None
        if text:
            try:
                results, complete = search_folders(
                    client, user, [fid] if fid is not None else [f.id for f in folders],
                    parse_query(text))
            except mail.BadQuery as exc:
                error = http_message(exc)
        names = {f.id: f.name for f in folders}
        return self.render(request, "mail_search.html", status=400 if error else 200,
                           folders=folders, folder_id=fid, q=text, error=error,
                           messages=[mailbox.summary(r) for r in results], names=names,
                           partial=not complete, searched=bool(text),
                           folder_name=names.get(fid) if fid is not None else None)

"""Searching a folder: by sender, recipients, subject, dates from the records, words from the index.

A :class:`Query` holds optional terms, all of which must match:

- ``sender``, ``to`` (To or Cc), ``subject``: a case-insensitive substring of the
  record's field (the decoded header as the listing shows it);
- ``since``, ``before``: the internal date (arrival, or APPEND's date) is at or
  after ``since`` and before ``before`` (unix seconds);
- ``body``, ``text``: words.  Each word of the term must *begin* a word of the
  message: "deliv" finds "delivery", "livery" does not.  The index holds the words
  of From, To, Cc, Subject and the text parts alike (:mod:`.index`), so the two
  terms search the same words.  A word shorter than 2 characters is refused.

Header terms and dates are answered from the folder's records, never a body.
Words are answered from the index: a prefix read of ``w:<word>`` per word (at
most :data:`MAX_POSTINGS` cells each), intersected, and mapped to the folder's
UIDs through the mailbox's records or ``m:`` pointers (so a message expunged or
moved away never shows, whatever the index still holds).  A word found in more
messages than that is checked against the other words' matches through their
``t:`` lists instead; if every word is that common the answer is cut
(``complete`` False).  Messages not yet indexed (a mailbox stored before the
index, :func:`~.index.backfill` not finished) are read and matched here, at most
:data:`MAX_FALLBACK` of them per search (past that the answer is ``complete``
False too).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from raftkv.errors import Refused

from ..errors import MailError
from .index import (
    MAX_TOKEN,
    MIN_TOKEN,
    WORD_PREFIX,
    body_texts,
    index_row,
    is_done,
    message_tokens,
    msg_id_of,
    normalise,
    read_head,
    tokens_col,
    unindexed,
    words,
)
from .layout import Record, mailbox_row, pointer_col, record_prefix, unpack, unpack_pointer
from .migrate import ensure_current
from .reads import need_folder, read_cells, records_of

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

MAX_TERM = 1000        # characters of one term
MAX_WORDS = 16         # words of the query's word terms together
MAX_POSTINGS = 20_000  # index cells one word may read
MAX_VERIFY = 2_000     # messages whose t: lists one search may read
MAX_FALLBACK = 200     # not-yet-indexed messages one search may read


class BadQuery(MailError, Refused):
    """A query that cannot be answered: a word too short, too many words, a term too long."""


@dataclass(frozen=True)
class Query:
    """What to look for (see the module docstring); None or "" is no term."""

    sender: str | None = None
    to: str | None = None
    subject: str | None = None
    body: str | None = None
    text: str | None = None
    since: float | None = None
    before: float | None = None

    def check(self) -> None:
        """:raises BadQuery: a term too long, a word too short, too many words."""
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and len(value) > MAX_TERM:
                raise BadQuery(f"A search term has at most {MAX_TERM} characters.")
        found = self.words()
        if any(len(w) < MIN_TOKEN for w in found):
            raise BadQuery(f"Each word searched for needs at least {MIN_TOKEN} characters.")
        if len(found) > MAX_WORDS:
            raise BadQuery(f"A search looks for at most {MAX_WORDS} words.")
        if (self.body or self.text) and not found:
            raise BadQuery("Search for words of letters or digits.")

    def words(self) -> list[str]:
        """The words of the body and text terms, as the index holds them (cut, once each)."""
        both = words(self.body or "") + words(self.text or "")
        return list(dict.fromkeys(w[:MAX_TOKEN] for w in both))


@dataclass(frozen=True)
class Found:
    """A search's answer: the matching UIDs, ascending, and whether it is the whole answer
    (False when a bound cut it: see the module docstring)."""

    uids: list[int]
    complete: bool = True


def search(client: KeyValueStore, user: str, fid: int, query: Query) -> Found:
    """The UIDs of folder ``fid`` matching ``query``.

    :raises BadQuery: the query is refused (:meth:`Query.check`).
    :raises NoSuchFolder: no such folder.
    """
    query.check()
    ensure_current(client, user)
    need_folder(client, user, fid)
    found = query.words()
    if found and not _has_record_terms(query) and is_done(client, user):
        ids, complete = matching_ids(client, user, found, None)
        if complete:  # else every word was too common to read: the folder's records bound it
            return Found(_uids_by_pointer(client, user, fid, ids))
    cells = client.get_row(mailbox_row(user), prefix=record_prefix(fid))
    records = [r for r in records_of(cells, fid) if _record_matches(r, query)]
    if not found:
        return Found([r.uid for r in records])
    ids, complete = matching_ids(client, user, found, [r.id for r in records])
    return Found([r.uid for r in records if r.id in ids], complete)


def _has_record_terms(query: Query) -> bool:
    return any((query.sender, query.to, query.subject, query.since is not None,
                query.before is not None))


def _record_matches(record: Record, query: Query) -> bool:
    def has(field: str, term: str | None) -> bool:
        return not term or normalise(term) in normalise(field)
    return (has(record.sender, query.sender) and has(f"{record.to} {record.cc}", query.to)
            and has(record.subject, query.subject)
            and (query.since is None or record.date >= query.since)
            and (query.before is None or record.date < query.before))


def _uids_by_pointer(client: KeyValueStore, user: str, fid: int, ids: Iterable[str]) -> list[int]:
    row = mailbox_row(user)
    wanted = list(ids)
    uids = []
    for cell in read_cells(client, [(row, pointer_col(m)) for m in wanted]):
        where = None if cell is None else unpack_pointer(cell.value)
        if where is not None and where[0] == fid:
            uids.append(where[1])
    return sorted(uids)


def matching_ids(client: KeyValueStore, user: str, wanted: list[str],
                 among: Collection[str] | None) -> tuple[set[str], bool]:
    """The message ids holding every word of ``wanted`` (each the beginning of one of its
    words), among ``among`` if given (else any the index knows), and whether that is
    complete.  The not-yet-indexed messages of ``among`` are read and matched (at most
    :data:`MAX_FALLBACK`) unless the mailbox is fully indexed; the IMAP server calls this
    with the selected folder's ids to narrow a SEARCH."""
    complete = True
    postings: dict[str, set[str]] = {}
    common: list[str] = []
    for word in sorted(wanted, key=len, reverse=True):  # longer words: likely rarer, read first
        ids = _postings(client, user, word)
        if ids is None:
            common.append(word)
        else:
            postings[word] = ids if among is None else ids & set(among)
    if postings:
        matched = set.intersection(*postings.values())
    else:  # every word too common: check the messages themselves, as many as the bound allows
        if among is None:
            return set(), False
        pool = list(among)
        matched = set(pool[:MAX_VERIFY])
        complete = len(pool) <= MAX_VERIFY
    if common:
        matched = _verified(client, user, matched, common)
    if among is not None and not is_done(client, user):
        pending = list(unindexed(client, user, among))
        complete = complete and len(pending) <= MAX_FALLBACK
        matched |= _read_and_match(client, user, pending[:MAX_FALLBACK], wanted)
    return matched, complete


def _postings(client: KeyValueStore, user: str, word: str) -> set[str] | None:
    """The ids of the messages with a word beginning with ``word``; None if more than
    :data:`MAX_POSTINGS` index cells hold one (the word is too common to read)."""
    cells = client.get_row(index_row(user), prefix=f"{WORD_PREFIX}{word}",
                           limit=MAX_POSTINGS + 1)
    if len(cells) > MAX_POSTINGS:
        return None
    return {msg_id_of(column) for column in cells}


def _verified(client: KeyValueStore, user: str, ids: set[str], common: list[str]) -> set[str]:
    """Those of ``ids`` whose ``t:`` list has a token beginning with each of ``common``
    (at most :data:`MAX_VERIFY` lists read: the rest are dropped)."""
    row = index_row(user)
    wanted = sorted(ids)[:MAX_VERIFY]
    kept = set()
    for msg_id, cell in zip(wanted, read_cells(client, [(row, tokens_col(m)) for m in wanted]),
                            strict=True):
        found = None if cell is None else unpack(cell.value)
        if isinstance(found, list) and _holds(found, common):
            kept.add(msg_id)
    return kept


def _holds(tokens: list[str], wanted: Iterable[str]) -> bool:
    return all(any(isinstance(t, str) and t.startswith(w) for t in tokens) for w in wanted)


def _read_and_match(client: KeyValueStore, user: str, msg_ids: list[str],
                    wanted: list[str]) -> set[str]:
    """Those of ``msg_ids`` (not indexed yet) holding every word, read from their bytes."""
    return {m for m in msg_ids if _holds(message_tokens(read_head(client, user, m)), wanted)}


__all__ = ["BadQuery", "Found", "Query", "body_texts", "matching_ids", "search"]

"""SEARCH BODY and TEXT from the mailbox's word index, not from every message's bytes.

pymap matches BODY and TEXT by loading each message's content and looking for
the string in its bytes: every body of the folder read for every such search.
Here each BODY or TEXT key, wherever it sits (under NOT, OR, parentheses), is
answered from the index (:func:`shards.model.mail.matching_ids`, with the
selected folder's message ids) and replaced by the set of UIDs it matched;
pymap then matches the rewritten keys, loading content only where another key
needs it.  So the words match as the index matches them: each word of the
string must begin a word of the message's From, To, Cc, Subject or text (decoded
from its transfer encoding and charset), in any order, not a substring of the
raw bytes (docs/imap.md, "The backend on the mail model").  A string the index cannot answer (a word
of one character) is left to pymap's own matching.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from pymap.frozen import frozenlist
from pymap.parsing.specials import SearchKey, SequenceSet

from shards.model import mail

WORD_KEYS = (b"BODY", b"TEXT")

# (words) -> the selected folder's UIDs holding them all.
Lookup = Callable[[list[str]], Awaitable[set[int]]]


def index_words(key: SearchKey) -> list[str] | None:
    """The words a BODY or TEXT key looks for, if the index can answer it."""
    if key.value not in WORD_KEYS or not isinstance(key.filter, str):
        return None
    query = mail.Query(text=key.filter)
    try:
        query.check()
    except mail.BadQuery:
        return None
    return query.words()


async def rewrite(keys: Iterable[SearchKey], lookup: Lookup) -> frozenset[SearchKey]:
    """``keys`` with every BODY or TEXT key the index can answer replaced by a UID set."""
    return frozenset([await _rewrite(key, lookup) for key in keys])


async def _rewrite(key: SearchKey, lookup: Lookup) -> SearchKey:
    found = index_words(key)
    if found is not None:
        uids = sorted(await lookup(found))
        return SearchKey(b"SEQSET", SequenceSet(uids, uid=True), key.inverse)
    if key.value == b"OR" and isinstance(key.filter, tuple):
        left, right = key.filter
        return SearchKey(b"OR", (await _rewrite(left, lookup), await _rewrite(right, lookup)),
                         key.inverse)
    if key.value == b"KEYSET" and isinstance(key.filter, frozenlist):
        rewritten = [await _rewrite(k, lookup) for k in key.filter]
        return SearchKey(b"KEYSET", frozenlist(rewritten), key.inverse)
    return key

"""The one table from errors to HTTP: the status, the sentence shown, and Retry-After.

Every error of the tree (:mod:`raftkv.errors`, :mod:`shards.model.errors`) that a
page does not handle reaches :meth:`portal.app.Portal.dispatch_request`, which
answers with :func:`http_error`.  A page that shows a refusal on its own form
(a folder listing, the account pages, compose) takes the status from
:func:`http_status` and the sentence from :func:`http_message`, so an error
means the same wherever it surfaces.  smtpd has the SMTP table
(:mod:`smtpd.replies`); ``docs/architecture.md``, "Errors", has both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from werkzeug.exceptions import HTTPException, ServiceUnavailable, TooManyRequests, default_exceptions

from raftkv.errors import (
    ConditionFailed,
    OverLimit,
    RaftKVError,
    ReadOnly,
    Refused,
    TooLarge,
    UnavailableError,
)
from shards.model.drive.grants import NotAllowed
from shards.model.errors import (
    CannotDelete,
    MailboxFull,
    NameTaken,
    NotFound,
    QuotaExceeded,
    SendLimitExceeded,
)
from shards.readonly import READ_ONLY_MESSAGE

log = logging.getLogger("portal")

RETRY_AFTER = 2  # seconds; about one Raft election plus a client retry


@dataclass(frozen=True)
class HttpAnswer:
    """What one row of the table answers."""

    status: int
    message: str | None = None  # None: the error's own sentence (the data model writes them for users)
    retry_after: bool = False   # send Retry-After: the error's own wait, else RETRY_AFTER
    logged: bool = False        # worth an operator's look: logged as an error


# Checked in order: the first class the error is an instance of decides, so each
# specific class comes before its group.
HTTP_TABLE: tuple[tuple[type[RaftKVError], HttpAnswer], ...] = (
    (NotFound, HttpAnswer(404)),
    (NameTaken, HttpAnswer(409)),
    (CannotDelete, HttpAnswer(403)),
    (NotAllowed, HttpAnswer(403)),  # a recipient's mode (shards.model.drive.grants)
    (QuotaExceeded, HttpAnswer(413)),
    # Shown on the compose form again, which answers 400 for any reason not to send.
    (MailboxFull, HttpAnswer(400)),
    (SendLimitExceeded, HttpAnswer(400)),
    (TooLarge, HttpAnswer(413, "That is larger than the store accepts.")),
    (Refused, HttpAnswer(400)),
    (OverLimit, HttpAnswer(429, retry_after=True)),
    (ConditionFailed, HttpAnswer(
        409, "Someone changed this at the same moment. Please reload and try again.")),
    # A write while the group has lost its majority (shards.readonly): the page says why.
    (ReadOnly, HttpAnswer(503, READ_ONLY_MESSAGE, retry_after=True)),
    (UnavailableError, HttpAnswer(
        503, "The storage cluster is not answering right now (perhaps electing a new "
        "leader). Please try again in a moment.", retry_after=True)),
    # Anything else (WrongShard escaping the shards client because it could not
    # catch up with a reconfiguration, a malformed answer): worth a retry, not a traceback.
    (RaftKVError, HttpAnswer(503, "The storage cluster answered with an error. Please try again.",
                             retry_after=True, logged=True)),
)


def http_answer(exc: RaftKVError) -> HttpAnswer:
    """The row of :data:`HTTP_TABLE` for ``exc``."""
    for cls, answer in HTTP_TABLE:
        if isinstance(exc, cls):
            return answer
    raise TypeError(f"not an error of the tree: {exc!r}")  # RaftKVError's row takes them all


def http_status(exc: RaftKVError) -> int:
    """The HTTP status that ``exc`` means."""
    return http_answer(exc).status


def http_message(exc: RaftKVError) -> str:
    """The sentence shown for ``exc``."""
    answer = http_answer(exc)
    return answer.message if answer.message is not None else str(exc)


def retry_after(exc: RaftKVError) -> int | None:
    """Seconds for Retry-After, or None when the answer has no such header."""
    if not http_answer(exc).retry_after:
        return None
    if isinstance(exc, OverLimit):
        return None if exc.retry_after is None else max(1, math.ceil(exc.retry_after))
    return RETRY_AFTER


def http_error(exc: RaftKVError) -> HTTPException:
    """``exc`` as the werkzeug exception whose page the user sees."""
    answer = http_answer(exc)
    if answer.logged:
        log.error("store error: %r", exc)
    message = http_message(exc)
    wait = retry_after(exc)
    if answer.status == 503:
        return ServiceUnavailable(message, retry_after=wait)
    if answer.status == 429:
        return TooManyRequests(message, retry_after=wait)
    return default_exceptions[answer.status](message)

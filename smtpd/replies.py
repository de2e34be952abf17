"""The one table from errors to SMTP replies, and the reply lines the handlers send.

A handler command that fails for any reason answers :func:`smtp_reply` of the
error: the store's errors and the data model's (:mod:`raftkv.errors`,
:mod:`shards.model.errors`) by their class, a refusal the handler decided
itself (:class:`Rejected`) with its own line, and anything else -- a bug of
ours -- with a temporary 451, so the sender keeps the message and retries.
The portal has the HTTP table (:mod:`portal.errors`); ``docs/architecture.md``,
"Errors", has both.

AUTH is the one exception: RFC 4954 §6 answers any failure of the check
itself with 454 4.7.0 (:data:`AUTH_UNAVAILABLE`), whatever its cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from raftkv.errors import OverLimit, RaftKVError, ReadOnly, Refused, TooLarge, UnavailableError
from shards.model.errors import MailboxFull, SenderMailboxFull, SendLimitExceeded

log = logging.getLogger(__name__)

RELAY_DENIED = "550 5.7.1 Relaying denied"
NO_SUCH_USER = "550 5.1.1 No such user"
BAD_ADDRESS = "553 5.1.3 Bad recipient address syntax"
BAD_SENDER = "553 5.1.7 Bad sender address syntax"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_BIG = "552 5.3.4 Message too big for system"
HEADERS_TOO_BIG = "552 5.3.4 Header section too big (limit 4 MiB)"
TRY_LATER = "451 4.3.0 Try again later"
MAILBOX_FULL = "552 5.2.2 Mailbox full"
SENDER_MAILBOX_FULL = "552 5.2.2 Your mailbox is over its quota; delete mail before sending"
READ_ONLY = "451 4.3.0 Mailbox read-only while the store recovers; try again later"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure"


class Rejected(Refused):
    """A command the handler refuses itself (relaying, an unknown user, a bad address);
    ``reply`` is the permanent SMTP reply line to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def send_limit_reply(exc: SendLimitExceeded) -> str:
    """550/451 with the limit's own sentence: 550 when waiting cannot help."""
    return f"{'550 5.7.1' if exc.permanent else '451 4.7.1'} {_sentence(exc)}"


def _sentence(exc: BaseException) -> str:
    # Our own sentences, yet a reply is one line of printable text whatever they hold.
    return "".join(ch for ch in str(exc) if ch.isprintable())[:400]


Reply = str | Callable[[BaseException], str]

# Checked in order: the first class the error is an instance of decides, so each
# specific class comes before its group.  The level is how the failure is logged.
SMTP_TABLE: tuple[tuple[type[BaseException], Reply, int | None], ...] = (
    (Rejected, lambda exc: cast(Rejected, exc).reply, None),
    (SenderMailboxFull, SENDER_MAILBOX_FULL, None),
    (MailboxFull, MAILBOX_FULL, None),
    (SendLimitExceeded, lambda exc: send_limit_reply(cast(SendLimitExceeded, exc)), None),
    (TooLarge, TOO_BIG, None),
    (Refused, lambda exc: f"550 5.7.1 {_sentence(exc)}", logging.INFO),
    (OverLimit, lambda exc: f"451 4.7.1 {_sentence(exc)}", logging.INFO),
    # Temporary in every other case: the sender keeps the message and retries,
    # which is the safe outcome for anything that is our fault rather than theirs.
    (ReadOnly, READ_ONLY, logging.WARNING),
    (UnavailableError, TRY_LATER, logging.WARNING),
    (RaftKVError, TRY_LATER, logging.ERROR),
)


def smtp_reply(exc: BaseException) -> str:
    """The SMTP reply for a command that failed with ``exc`` (the only such mapping)."""
    for cls, reply, level in SMTP_TABLE:
        if isinstance(exc, cls):
            if level is not None:
                log.log(level, "answering %s: %s: %s", cls.__name__, type(exc).__name__, exc)
            return reply if isinstance(reply, str) else reply(exc)
    log.error("unexpected error, answering 451", exc_info=exc)
    return TRY_LATER

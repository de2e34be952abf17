"""Store and model failures in IMAP's words: the one mapping of the IMAP server.

A command that fails in the store or the mail model is answered ``NO`` with a
response code of RFC 5530 and a sentence; nothing of it reaches the client as
a traceback or a dropped connection.  pymap's own errors
(:class:`pymap.exceptions.ResponseError`) carry their response already.
"""

from __future__ import annotations

import logging

from pymap.exceptions import ResponseError
from pymap.parsing.response import ResponseCode, ResponseNo

from raftkv.errors import (
    ConditionFailed,
    OverLimit,
    RaftKVError,
    ReadOnly,
    Refused,
    TooLarge,
    UnavailableError,
)
from shards.model.errors import NotFound
from shards.readonly import READ_ONLY_MESSAGE

log = logging.getLogger(__name__)

TRY_AGAIN = "The mail store is busy or unavailable; try again in a moment."
CONTENDED = "The folder kept changing while this ran; try again."


class StoreRefusal(ResponseError):
    """``NO [code] text``."""

    def __init__(self, code: bytes, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(tag, _line(self.text).encode("utf-8"), ResponseCode.of(self.code))


# Checked in order: the first class the error is an instance of decides, so each
# specific class comes before its family.  None as the text: the error's own sentence.
IMAP_TABLE: tuple[tuple[type[BaseException], bytes, str | None, int | None], ...] = (
    (ReadOnly, b"UNAVAILABLE", READ_ONLY_MESSAGE, logging.INFO),
    (NotFound, b"NONEXISTENT", None, None),
    (TooLarge, b"TOOBIG", None, None),
    (Refused, b"CANNOT", None, None),
    (OverLimit, b"OVERQUOTA", None, None),
    (ConditionFailed, b"INUSE", CONTENDED, logging.INFO),
    (UnavailableError, b"UNAVAILABLE", TRY_AGAIN, logging.WARNING),
    (RaftKVError, b"UNAVAILABLE", TRY_AGAIN, logging.ERROR),
)


def imap_error(exc: BaseException) -> StoreRefusal | None:
    """The ``NO`` for a command that failed with ``exc``; None for anything else (a bug)."""
    for cls, code, text, level in IMAP_TABLE:
        if isinstance(exc, cls):
            if level is not None:
                log.log(level, "answering NO [%s]: %s: %s", code.decode(), type(exc).__name__,
                        exc)
            return StoreRefusal(code, text if text is not None else _sentence(exc))
    return None


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[:1].upper() + text[1:] if text else "The command could not be done."


def _line(text: str) -> str:
    # A response text is one line of printable characters, whatever the sentence holds.
    return "".join(ch for ch in text if ch.isprintable())[:400]

"""How much mail one account may send: messages and recipients per hour.

Open signup plus a submission port is a spam relay unless each account's
sending is capped.  Every door that sends for a user (smtpd's submission port,
the webmail's compose page) calls :func:`charge` before handing a message to
:func:`shards.model.outbound.submit`; the counters live in the store, so every
smtpd and every frontend counts against the same budget.

An account younger than ``new_account_age`` gets the lower ``new_account_*``
caps: a throwaway account made to send spam is young.

The counter is a fixed hourly window, one cell per user in the user's
hash-tagged row ``{<name>}/sendlimit`` (column ``hour``) holding
``[window start, messages, recipients]``, updated by CPUT on the version
read, so two doors charging at once both count.  A message is charged whole
or not at all: one over the cap is refused and costs nothing.

The settings are keys of the cluster file's ``[mail]`` table
(:meth:`SendLimits.from_table`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import msgpack

from raftkv.errors import ConditionFailed, ConfigError

from . import accounts
from .errors import SendLimitExceeded

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["SendLimitExceeded", "SendLimits", "charge"]

WINDOW = 3600.0  # seconds: the caps are per hour
COLUMN = "hour"
_ATTEMPTS = 20


@dataclass(frozen=True)
class SendLimits:
    """Caps per account and hour (``[mail]`` keys of the same names)."""

    send_per_hour: int = 100                    # messages
    recipients_per_hour: int = 500              # recipients, summed over those messages
    new_account_send_per_hour: int = 10
    new_account_recipients_per_hour: int = 30
    new_account_age: float = 86400.0            # seconds: younger accounts are "new"

    @classmethod
    def from_table(cls, mail_table: Mapping[str, Any]) -> SendLimits:
        """Our keys of the ``[mail]`` table (other keys belong to other settings)."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = mail_table.get(field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    field.type == "int" and not isinstance(value, int)):
                raise ConfigError(f"mail.{field.name} must be a non-negative number")
            values[field.name] = value
        return cls(**values)

    def note(self) -> str:
        """The limits in a sentence, for the compose page."""
        return (f"Each account may send {self.send_per_hour} messages to "
                f"{self.recipients_per_hour} recipients per hour "
                f"({self.new_account_send_per_hour} to {self.new_account_recipients_per_hour} "
                f"in its first {self.new_account_age / 3600:g} hours).")

    def caps(self, account_age: float) -> tuple[int, int]:
        """``(messages, recipients)`` per hour for an account of that age (seconds)."""
        if account_age < self.new_account_age:
            return self.new_account_send_per_hour, self.new_account_recipients_per_hour
        return self.send_per_hour, self.recipients_per_hour


def counter_key(user: str) -> tuple[str, str]:
    """The row and column of ``user``'s hourly counter."""
    return f"{{{user}}}/sendlimit", COLUMN


def account_age(client: KeyValueStore, user: str, now: float) -> float:
    """Seconds since ``user``'s account was made; 0 (new) when unknown."""
    loaded = accounts.load(client, user)
    try:
        return 0.0 if loaded is None else max(0.0, now - float(loaded[0]["created"]))
    except (ValueError, TypeError, KeyError):
        return 0.0


def charge(client: KeyValueStore, user: str, recipients: int, limits: SendLimits, *,
           now: float | None = None) -> None:
    """Count one message to ``recipients`` recipients against ``user``'s hour.

    :raises SendLimitExceeded: over a cap; nothing was counted.
    """
    now = time.time() if now is None else now
    max_messages, max_recipients = limits.caps(account_age(client, user, now))
    if recipients > max_recipients:
        raise SendLimitExceeded(
            f"A message may go to at most {max_recipients} recipients from this account "
            f"(this one has {recipients}).", permanent=True, retry_after=0.0)
    row, column = counter_key(user)
    for _ in range(_ATTEMPTS):
        cell = client.get(row, column)
        start, messages, sent_to = _unpack(cell.value) if cell is not None else (now, 0, 0)
        if now - start >= WINDOW or now < start:
            start, messages, sent_to = now, 0, 0
        if messages + 1 > max_messages or sent_to + recipients > max_recipients:
            wait = start + WINDOW - now
            raise SendLimitExceeded(
                f"This account may send {max_messages} messages to {max_recipients} "
                f"recipients per hour; try again in {int(wait // 60) + 1} minutes.",
                permanent=False, retry_after=wait)
        value = msgpack.packb([start, messages + 1, sent_to + recipients])
        try:
            client.cput(row, column, value, if_version=0 if cell is None else cell.version)
            return
        except ConditionFailed:
            continue  # another door counted at the same moment: count on top of it
    raise ConditionFailed("the sending counter kept changing")


def _unpack(value: bytes) -> tuple[float, int, int]:
    try:
        start, messages, recipients = msgpack.unpackb(value)
        return float(start), int(messages), int(recipients)
    except (ValueError, TypeError, msgpack.UnpackException):
        return 0.0, 0, 0

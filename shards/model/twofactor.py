"""Optional two-factor sign-in: TOTP (RFC 6238, with ``pyotp``), recovery codes, pending logins.

Layout::

    row user/<name>     column totp        msgpack {secret, enabled, step, recovery: [sha256 hex]}
    row {<name>}/login  column p:<sha256(token)>
                                           msgpack {sid, next, expires, tries}: a password
                                           that was right, waiting for the second step
                                           (at most MAX_PENDING per account, the newest)

The TOTP cell sits beside the account cell (same row) but is its own cell, so
using a code never races a password change.  Each update is a CPUT on the
version read: a code is accepted only for a time step later than the last one
used (``step``), and a recovery code is removed as it is used, so neither can
be replayed, not even by two frontends at the same moment.

A pending login is not a session: it only lets the browser that typed the
password (``sid`` is the hash of its session cookie) try a code, at most
:data:`MAX_TRIES` times within :data:`PENDING_TTL` seconds.  Each try takes
its slot (a CPUT) before the code is checked, so parallel guesses count too.
Those tries only end one pending login; what bounds guessing is the
per-account code counter of :func:`shards.model.ratelimit.check_code`, which
a fresh login does not reset.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import pyotp

from raftkv.errors import ConditionFailed

from .accounts import account_row, valid_username
from .errors import TwoFactorError

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

TOTP_COL = "totp"     # beside accounts.ACCOUNT_COL in the account's row
PENDING_TTL = 300.0   # seconds between the password and the code
MAX_TRIES = 5         # codes one pending login may try
MAX_PENDING = 5       # pending logins kept per account (older ones end)
RECOVERY_CODES = 10
STEP = 30             # seconds per TOTP code (RFC 6238's default, what every app uses)
_ATTEMPTS = 10        # CPUT retries under contention
_PENDING_PREFIX = "p:"


@dataclass(frozen=True)
class Pending:
    """A login waiting for its second step."""

    user: str
    next: str
    tries_left: int


def _unpack(cell: Cell | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    try:
        record = msgpack.unpackb(cell.value, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return record if isinstance(record, dict) else None


def _pack(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _normalise(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()[:64]


def _load(client: KeyValueStore, user: str) -> tuple[dict[str, Any] | None, int]:
    cell = client.get(account_row(user), TOTP_COL) if valid_username(user) else None
    return _unpack(cell), cell.version if cell is not None else 0


def is_enabled(client: KeyValueStore, user: str) -> bool:
    """True if ``user`` signs in with a second factor."""
    record, _ = _load(client, user)
    return bool(record and record.get("enabled"))


def status(client: KeyValueStore, user: str) -> tuple[bool, int]:
    """(two-factor on?, recovery codes left), from one read: what the Security page shows."""
    record, _ = _load(client, user)
    if not record:
        return False, 0
    return bool(record.get("enabled")), len(record.get("recovery", ()))


def recovery_left(client: KeyValueStore, user: str) -> int:
    return status(client, user)[1]


def begin_enrolment(client: KeyValueStore, user: str) -> str:
    """A new secret for ``user`` (not yet in force: :func:`confirm_enrolment` turns it on).

    :raises TwoFactorError: two-factor sign-in is already on.
    """
    for _ in range(_ATTEMPTS):
        record, version = _load(client, user)
        if record and record.get("enabled"):
            raise TwoFactorError("Two-factor sign-in is already on.")
        secret = pyotp.random_base32()
        try:
            client.cput(account_row(user), TOTP_COL,
                        _pack({"secret": secret, "enabled": False, "step": 0, "recovery": []}),
                        if_version=version)
            return secret
        except ConditionFailed:
            continue
    raise ConditionFailed("the account kept changing")


def pending_secret(client: KeyValueStore, user: str) -> str | None:
    """The secret of an enrolment begun and not yet confirmed."""
    record, _ = _load(client, user)
    if record and not record.get("enabled"):
        return str(record.get("secret", "")) or None
    return None


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads (usually as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def confirm_enrolment(client: KeyValueStore, user: str, code: str,
                      now: float | None = None) -> list[str]:
    """Turn two-factor sign-in on if ``code`` is right; returns the recovery codes (shown once).

    :raises TwoFactorError: no enrolment begun, or a wrong code.
    """
    now = time.time() if now is None else now
    for _ in range(_ATTEMPTS):
        record, version = _load(client, user)
        if not record or record.get("enabled") or not record.get("secret"):
            raise TwoFactorError("Start setting up two-factor sign-in first.")
        step = _matching_step(record, code, now)
        if step is None:
            raise TwoFactorError("That code is not right. Check the clock of your device "
                                 "and type the code it shows now.")
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        record.update(enabled=True, step=step, recovery=[_hash(_normalise(c)) for c in codes])
        try:
            client.cput(account_row(user), TOTP_COL, _pack(record), if_version=version)
            return codes
        except ConditionFailed:
            continue
    raise ConditionFailed("the account kept changing")


def disable(client: KeyValueStore, user: str) -> None:
    """Turn two-factor sign-in off (the caller checked the password or a code)."""
    client.delete(account_row(user), TOTP_COL)


def use_code(client: KeyValueStore, user: str, code: str, now: float | None = None) -> bool:
    """True if ``code`` is ``user``'s current TOTP code or one of the recovery codes; uses it up.

    A TOTP code of the previous, current or next step (clock drift) is
    accepted once: the step used is remembered and no earlier or equal step
    is accepted again.
    """
    now = time.time() if now is None else now
    if not isinstance(code, str):
        return False
    for _ in range(_ATTEMPTS):
        record, version = _load(client, user)
        if not record or not record.get("enabled"):
            return False
        step = _matching_step(record, code, now)
        if step is not None:
            record["step"] = step
        else:
            digest = _hash(_normalise(code))
            remaining = [h for h in record.get("recovery", ())
                         if not hmac.compare_digest(h, digest)]
            if len(remaining) == len(record.get("recovery", ())):
                return False
            record["recovery"] = remaining
        try:
            client.cput(account_row(user), TOTP_COL, _pack(record), if_version=version)
            return True
        except ConditionFailed:
            continue  # used at the same moment elsewhere: check again against what won
    return False


def _matching_step(record: dict[str, Any], code: str, now: float) -> int | None:
    code = "".join(code.split())
    if len(code) != 6 or not (code.isascii() and code.isdigit()):  # not "١٢٣٤٥٦"
        return None
    totp = pyotp.TOTP(record["secret"], interval=STEP)
    current = int(now // STEP)
    for step in (current - 1, current, current + 1):
        if step > int(record.get("step", 0)) and hmac.compare_digest(totp.generate_otp(step),
                                                                     code):
            return step
    return None


def _new_recovery_code() -> str:
    raw = secrets.token_hex(6)  # 48 bits; each code works once
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


# -- pending logins -------------------------------------------------------------------


def _login_row(user: str) -> str:
    return f"{{{user}}}/login"


def start_pending(client: KeyValueStore, user: str, sid_hash: str, next_url: str,
                  now: float | None = None) -> str:
    """Record that ``user``'s password was right in the browser ``sid_hash``; returns the token."""
    now = time.time() if now is None else now
    row = _login_row(user)
    # Abandoned pending logins would pile up in the row: drop the stale ones,
    # and keep only the newest few so the row stays small whatever is sent.
    live: list[tuple[float, str]] = []
    for column, cell in client.get_row(row, prefix=_PENDING_PREFIX).items():
        record = _unpack(cell)
        expires = record.get("expires", 0) if record else 0
        if not isinstance(expires, (int, float)) or expires < now:
            client.delete(row, column)
        else:
            live.append((float(expires), column))
    for _, column in sorted(live)[:max(0, len(live) - MAX_PENDING + 1)]:
        client.delete(row, column)
    token = secrets.token_urlsafe(24)
    record = {"sid": sid_hash, "next": next_url, "expires": now + PENDING_TTL, "tries": 0}
    client.put(row, _PENDING_PREFIX + _hash(token), _pack(record))
    return token


def take_try(client: KeyValueStore, user: str, token: str, sid_hash: str,
             now: float | None = None) -> Pending | None:
    """Count one code try of the pending login ``token``; None if it is gone, expired,
    of another browser, or out of tries (then it ends)."""
    now = time.time() if now is None else now
    if not valid_username(user) or not isinstance(token, str) or not token:
        return None
    row, column = _login_row(user), _PENDING_PREFIX + _hash(token)
    for _ in range(_ATTEMPTS):
        cell = client.get(row, column)
        record = _unpack(cell)
        if cell is None or record is None:
            return None
        if not hmac.compare_digest(str(record.get("sid", "")), sid_hash):
            return None
        tries = int(record.get("tries", 0))
        if record.get("expires", 0) < now or tries >= MAX_TRIES:
            client.delete(row, column)
            return None
        record["tries"] = tries + 1
        try:
            client.cput(row, column, _pack(record), if_version=cell.version)
        except ConditionFailed:
            continue  # another try at the same moment: count on top of it
        return Pending(user=user, next=str(record.get("next", "/")),
                       tries_left=MAX_TRIES - tries - 1)
    return None


def end_pending(client: KeyValueStore, user: str, token: str) -> None:
    client.delete(_login_row(user), _PENDING_PREFIX + _hash(token))

"""App passwords: one random password per device, for the doors that cannot ask for a code.

With two-factor sign-in on, a mail client (SMTP AUTH) -- and later a WebDAV
client -- cannot type a TOTP code, and letting it in with the account password
alone would let anyone holding that password skip the second factor.  So, as
at Google and Fastmail, the user makes a named *app password* per device on
the Security page: shown once, revocable one by one, and with two-factor
sign-in on the only thing those doors take.

An app password is 16 characters from a 32-letter alphabet (80 random bits),
shown as four groups of four.  Being random, it is stored as a keyed hash
(HMAC-SHA256 under a key derived from the cluster secret, passed in as
``key``) rather than with argon2: checking it costs microseconds, and a copy
of the store without the secret does not let anyone test guesses offline.

Layout: one cell, row ``{<name>}/apppw`` column ``list``, msgpack list of
``{id, name, created, used, mac}`` (at most :data:`MAX_PER_USER`).  One cell
means every change is one CPUT on the version read, so the cap holds under
concurrent creation, and one read checks a password.  The row carries the
user's hash tag, so deleting the account (:mod:`.erase`) removes it.

Checking goes through :func:`shards.model.ratelimit.check_password`'s slots
(:func:`check_credential`): a wrong app password counts toward the same
per-address, per-pair and per-account limits as a wrong account password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from raftkv.errors import ConditionFailed, RaftKVError

from . import accounts, ratelimit, twofactor
from .errors import AppPasswordError, NoSuchAppPassword

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["KEY_PURPOSE", "MAX_PER_USER", "AppPassword", "AppPasswordError", "Checked",
           "check_credential", "create", "list_for", "matching", "revoke"]

KEY_PURPOSE = "app-passwords"  # cluster.derive_key(KEY_PURPOSE) is the HMAC key
MAX_PER_USER = 20
NAME_MAX = 64                  # characters of a device name
USED_EVERY = 3600.0            # seconds between writes of "last used" (a write per check is waste)
# Lowercase letters and digits without o/0 and l/1: read off a screen, typed on a phone.
ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
LENGTH = 16                    # 16 letters of 32: 80 bits
_COL = "list"
_ATTEMPTS = 10


@dataclass(frozen=True)
class AppPassword:
    """One app password as listed (never the password itself)."""

    id: str
    name: str
    created: float
    used: float  # 0: never


@dataclass(frozen=True)
class Checked:
    """The outcome of :func:`check_credential`."""

    right: bool
    retry_after: float = 0.0           # > 0: refused unchecked (the limiter)
    app_password: str | None = None    # the name of the app password that was right
    needs_app_password: bool = False   # the account password was right, but two-factor is on

    @property
    def limited(self) -> bool:
        return self.retry_after > 0


def _row(user: str) -> str:
    return f"{{{user}}}/apppw"


def cell_of(user: str) -> tuple[str, str]:
    """The (row, column) of ``user``'s app passwords (a page confirms it with others)."""
    return _row(user), _COL


def _load(client: KeyValueStore, user: str) -> tuple[list[dict[str, Any]], int]:
    cell = client.get(_row(user), _COL)
    if cell is None:
        return [], 0
    try:
        records = msgpack.unpackb(cell.value, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        records = []
    if not isinstance(records, list):
        records = []
    return [r for r in records if isinstance(r, dict)], cell.version


def _store(client: KeyValueStore, user: str, records: list[dict[str, Any]], version: int) -> None:
    client.cput(_row(user), _COL, msgpack.packb(records, use_bin_type=True), if_version=version)


def _normalise(text: str) -> str | None:
    """The 16 letters of something typed as an app password, or None if it cannot be one."""
    letters = "".join(ch for ch in text if ch not in " -\t").lower()
    if len(letters) != LENGTH or any(ch not in ALPHABET for ch in letters):
        return None
    return letters


def _mac(key: bytes, user: str, letters: str) -> str:
    # The user is in the MAC: the same letters hash differently for another account.
    return hmac.new(key, f"{user}\0{letters}".encode(), hashlib.sha256).hexdigest()


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise AppPasswordError("Give the app password a name, such as the device it is for.")
    if len(name) > NAME_MAX:
        raise AppPasswordError(f"The name is too long (at most {NAME_MAX} characters).")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise AppPasswordError("The name may not contain control or invisible characters.")
    return name


def create(client: KeyValueStore, user: str, name: str, key: bytes, *,
           now: float | None = None) -> str:
    """Make an app password named ``name`` for ``user``; returns it (shown once, never stored).

    :raises AppPasswordError: a bad name, or :data:`MAX_PER_USER` exist already.
    """
    now = time.time() if now is None else now
    name = _clean_name(name)
    letters = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    record = {"id": secrets.token_hex(8), "name": name, "created": now, "used": 0.0,
              "mac": _mac(key, user, letters)}
    for _ in range(_ATTEMPTS):
        records, version = _load(client, user)
        if len(records) >= MAX_PER_USER:
            raise AppPasswordError(f"You have {MAX_PER_USER} app passwords, the most allowed. "
                                   "Revoke one you no longer use first.")
        try:
            _store(client, user, [*records, record], version)
        except ConditionFailed:
            continue  # changed at the same moment: count again
        return " ".join(letters[i:i + 4] for i in range(0, LENGTH, 4))
    raise ConditionFailed("the app passwords kept changing")


def list_for(client: KeyValueStore, user: str) -> list[AppPassword]:
    """``user``'s app passwords, oldest first."""
    records, _ = _load(client, user)
    return [AppPassword(id=str(r.get("id", "")), name=str(r.get("name", "")),
                        created=float(r.get("created", 0)), used=float(r.get("used", 0)))
            for r in records]


def revoke(client: KeyValueStore, user: str, password_id: str) -> str:
    """Remove one app password; returns its name.

    :raises NoSuchAppPassword: there is no such app password (revoked already?).
    """
    for _ in range(_ATTEMPTS):
        records, version = _load(client, user)
        kept = [r for r in records if r.get("id") != password_id]
        if len(kept) == len(records):
            raise NoSuchAppPassword("No such app password (revoked already?).")
        try:
            _store(client, user, kept, version)
        except ConditionFailed:
            continue
        gone = next(r for r in records if r.get("id") == password_id)
        return str(gone.get("name", ""))
    raise ConditionFailed("the app passwords kept changing")


def revoke_all(client: KeyValueStore, user: str) -> None:
    """Remove every app password of ``user`` (a new account password ends them, as it ends
    sessions: a thief who read the old one may have made an app password with it)."""
    client.delete(_row(user), _COL)


def matching(client: KeyValueStore, user: str, text: str, key: bytes, *,
             now: float | None = None) -> str | None:
    """The name of ``user``'s app password ``text`` is, or None; notes when it was used.

    "Last used" is written at most every :data:`USED_EVERY` seconds and only
    if nothing changed meanwhile: a lost update is an older date, never a
    failed check.
    """
    letters = _normalise(text) if accounts.valid_username(user) else None
    if letters is None:
        return None
    mac = _mac(key, user, letters)
    records, version = _load(client, user)
    found = None
    for record in records:  # every one compared, in constant time
        if hmac.compare_digest(str(record.get("mac", "")), mac):
            found = record
    if found is None:
        return None
    now = time.time() if now is None else now
    if now - float(found.get("used", 0)) >= USED_EVERY:
        found["used"] = now
        try:
            _store(client, user, records, version)
        except RaftKVError:  # ConditionFailed or an unreachable store: best effort
            pass
    return str(found.get("name", ""))


def check_credential(client: KeyValueStore, user: str, secret_text: str, address: str,
                     limits: ratelimit.Limits, app_key: bytes, *,
                     password_allowed: bool | None = None,
                     now: float | None = None) -> Checked:
    """Check what a client that cannot do two-factor sign-in gave as a password.

    An app password of ``user`` is always right.  The account password is
    right only while two-factor sign-in is off (``password_allowed`` None asks
    the store); with it on, a right account password is refused with
    ``needs_app_password`` so the door can say what to do.  Such a refusal is
    not counted as a failure: a phone still trying the old password after the
    user turned two-factor on must not lock the account for everyone.

    Every attempt takes the shared limiter's slots first
    (:func:`shards.model.ratelimit.check_password`), so guesses at app
    passwords and at the account password count together, over every door.

    :raises raftkv.errors.RaftKVError: the store could not be reached.
    """
    found: dict[str, Any] = {}

    def verify(client: KeyValueStore, user: str, text: str) -> bool:
        name = matching(client, user, text, app_key, now=now)
        if name is not None and accounts.is_active(client, user):  # not disabled by the admin
            found["app"] = name
            return True
        if accounts.verify_password(client, user, text):
            found["password"] = True
            return True
        return False

    verdict = ratelimit.check_password(client, user, secret_text, address, limits, now=now,
                                       verify=verify)
    if verdict.limited or not verdict.right:
        return Checked(right=False, retry_after=verdict.retry_after)
    if "app" in found:
        return Checked(right=True, app_password=found["app"])
    if password_allowed is None:  # asked only of a right account password
        password_allowed = not twofactor.is_enabled(client, user)
    if password_allowed:
        return Checked(right=True)
    return Checked(right=False, needs_app_password=True)

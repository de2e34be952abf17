"""User accounts: names, argon2id password hashes, the admin flag.

Used by the portal (signup, login, password change) and by smtpd (SMTP AUTH),
so it depends on nothing web-specific.  One account is one cell: row
``user/<name>``, column ``account``, a msgpack map::

    {"v": 1, "name": str, "hash": argon2id str, "admin": bool, "created": float,
     "disabled": bool (absent: false)}

Creating an account is a CPUT with ``if_version=0`` ("must be absent"), so two
frontends racing to create the same name end with exactly one winner; every
later update is a CPUT on the version that was read.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from raftkv.errors import ConditionFailed

from .errors import InvalidPassword, InvalidUsername, UserExists, WrongPassword

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore

ACCOUNT_COL = "account"
MIN_PASSWORD = 8
# argon2 happily hashes megabytes; bound the work one request can ask for.
MAX_PASSWORD = 1024
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3, 64 MiB).
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps "no such user" and
# "wrong password" equally slow, so timing does not reveal which names exist.
_DUMMY_HASH = _hasher.hash("no such user, no such password")


def account_row(name: str) -> str:
    """The row holding ``name``'s account cell."""
    return f"user/{name}"


def valid_username(name: str) -> bool:
    """1-32 characters of ``[a-z0-9._-]``, starting with a letter or digit.

    Lowercase only, so "Alice" and "alice" can never be two accounts; the
    same name is the local part of the user's mail address.
    """
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def check_password_rules(password: str) -> None:
    """Raise :class:`InvalidPassword` unless ``password`` is acceptable as a new password."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidPassword(f"A password needs at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise InvalidPassword(f"A password may have at most {MAX_PASSWORD} characters.")
    if not _encodable(password):
        raise InvalidPassword("A password cannot contain unpaired surrogate characters.")


def check_new_account(name: str, password: str) -> None:
    """Raise what :func:`create_user` would for a bad name or password, without hashing.

    Signup counts its attempts per address only once this holds, so a typo costs no slot.

    :raises InvalidUsername: the name breaks the rules.
    :raises InvalidPassword: the password is too short or too long.
    """
    if not valid_username(name):
        raise InvalidUsername(
            "A user name is 1-32 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit.")
    check_password_rules(password)


def create_user(client: KeyValueStore, name: str, password: str, *, admin: bool = False) -> None:
    """Create an account atomically.

    :raises InvalidUsername: the name breaks the rules.
    :raises InvalidPassword: the password is too short or too long.
    :raises UserExists: the name is taken.
    :raises raftkv.errors.UnavailableError: the store could not be reached.
    """
    check_new_account(name, password)
    record = {"v": 1, "name": name, "hash": _hasher.hash(password),
              "admin": bool(admin), "created": time.time()}
    try:
        client.cput(account_row(name), ACCOUNT_COL, _pack(record), if_version=0)
    except ConditionFailed:
        raise UserExists(f"The name {name!r} is taken.") from None


def user_exists(client: KeyValueStore, name: str) -> bool:
    """True if ``name`` has an account."""
    return valid_username(name) and client.get(account_row(name), ACCOUNT_COL) is not None


def is_admin(client: KeyValueStore, name: str) -> bool:
    """True if ``name`` exists and is an administrator."""
    record = load(client, name)
    return record is not None and bool(record[0].get("admin"))


def verify_password(client: KeyValueStore, name: str, password: str) -> bool:
    """True if ``name`` exists and ``password`` is its password.

    Unknown names cost as much time as wrong passwords.  A hash made with
    older parameters is upgraded in passing (best effort, on the version read).
    """
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return False
    loaded = load(client, name)
    if loaded is None:
        _verify(_DUMMY_HASH, password)
        return False
    record, cell = loaded
    if not _verify(record.get("hash", ""), password):
        return False
    if record.get("disabled"):
        return False  # checked after the hash: a disabled account answers as slowly
    if _hasher.check_needs_rehash(record["hash"]):
        record["hash"] = _hasher.hash(password)
        try:
            client.cput(account_row(name), ACCOUNT_COL, _pack(record), if_version=cell.version)
        except ConditionFailed:
            pass  # someone changed the account meanwhile; their write wins
    return True


def change_password(client: KeyValueStore, name: str, old: str, new: str) -> None:
    """Replace ``name``'s password, given the current one.

    The update is a CPUT on the version whose hash was checked, so a
    concurrent change cannot be silently overwritten; on a conflict the check
    is simply redone against the newer record.

    :raises WrongPassword: ``old`` is not the current password.
    :raises InvalidPassword: ``new`` breaks the rules.
    """
    check_password_rules(new)
    for _ in range(5):
        loaded = load(client, name)
        if loaded is None or not _verify(loaded[0].get("hash", ""), old):
            raise WrongPassword("The current password is not correct.")
        record, cell = loaded
        record["hash"] = _hasher.hash(new)
        try:
            client.cput(account_row(name), ACCOUNT_COL, _pack(record), if_version=cell.version)
            return
        except ConditionFailed:
            continue
    raise ConditionFailed("The account kept changing; try again.")


def is_active(client: KeyValueStore, name: str) -> bool:
    """True if ``name`` exists and an administrator has not disabled it."""
    record = load(client, name)
    return record is not None and not record[0].get("disabled")


def set_disabled(client: KeyValueStore, name: str, disabled: bool) -> bool:
    """Disable (no password, app password or SMTP login works) or enable ``name``;
    False if there is no such account.  Its sessions are the caller's to end."""
    return _update(client, name, lambda record: record.update(disabled=bool(disabled)))


def reset_password(client: KeyValueStore, name: str) -> str | None:
    """Give ``name`` a new random password and return it (None: no such account).

    It is shown once to the administrator, who hands it over; the user changes it
    (docs/architecture.md, "Pages": why not a link by mail).
    """
    new = secrets.token_urlsafe(12)  # 16 characters, 96 bits
    hashed = _hasher.hash(new)
    return new if _update(client, name, lambda record: record.update(hash=hashed)) else None


def _update(client: KeyValueStore, name: str, change: Callable[[dict[str, Any]], None]) -> bool:
    """Apply ``change`` to ``name``'s record by a CPUT on the version read; False if absent."""
    for _ in range(5):
        loaded = load(client, name)
        if loaded is None:
            return False
        record, cell = loaded
        change(record)
        try:
            client.cput(account_row(name), ACCOUNT_COL, _pack(record), if_version=cell.version)
            return True
        except ConditionFailed:
            continue
    raise ConditionFailed("The account kept changing; try again.")


def load(client: KeyValueStore, name: str) -> tuple[dict[str, Any], Cell] | None:
    """``name``'s account record and its cell, or None (no such account, or unreadable)."""
    if not valid_username(name):
        return None
    cell = client.get(account_row(name), ACCOUNT_COL)
    if cell is None:
        return None
    record = msgpack.unpackb(cell.value, raw=False)
    if not isinstance(record, dict):
        return None
    return record, cell


def _encodable(text: str) -> bool:
    # argon2 hashes the UTF-8 bytes; a lone surrogate (possible in a str decoded
    # with "surrogateescape", or built by a later door) has none.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _verify(hashed: str, password: str) -> bool:
    if not _encodable(password):
        return False
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _pack(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)

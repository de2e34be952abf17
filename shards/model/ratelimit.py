"""Counters of failed logins, kept in the store so that every frontend sees the same count.

A limit is "at most ``limit`` failures per ``window`` seconds" for one key (an
account, a client address).  The counter is a fixed window: one cell holding
``[window start, failures]``, updated by CPUT on the version read, so two
frontends counting at once both count.  Only failures are counted, so a
user who types the password right is never slowed down; a key over its
limit is refused *before* the password is checked, so guessing costs the
attacker time without costing us an argon2 hash per try.

Layout: an account's counter sits in the user's hash-tagged row
``{<name>}/login`` (column ``failures``); an address's in ``login-addr/<addr>``
(IPv6 addresses counted per /64, which is what one customer usually holds).
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING

import msgpack

from raftkv.errors import ConditionFailed

if TYPE_CHECKING:
    from shards import Client

__all__ = ["account_key", "address_key", "blocked_for", "record_failure", "reset"]

COLUMN = "failures"
_ATTEMPTS = 10

Key = tuple[str, str]


def account_key(name: str) -> Key:
    """The counter of failed logins to one account."""
    return f"{{{name}}}/login", COLUMN


def address_key(addr: str) -> Key:
    """The counter of failed logins from one client address (an IPv6 /64 as one)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"login-addr/{addr[:64]}", COLUMN
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"login-addr/{ip.ipv4_mapped}", COLUMN
        return f"login-addr/{ipaddress.ip_network(f'{ip}/64', strict=False)}", COLUMN
    return f"login-addr/{ip}", COLUMN


def _read(client: Client, key: Key) -> tuple[float, int, int]:
    """``(window start, failures, cell version)``; zeros for no counter."""
    cell = client.get(*key)
    if cell is None:
        return 0.0, 0, 0
    try:
        start, count = msgpack.unpackb(cell.value)
        return float(start), int(count), cell.version
    except (ValueError, TypeError, msgpack.UnpackException):
        return 0.0, 0, cell.version


def blocked_for(client: Client, key: Key, *, limit: int, window: float,
                now: float | None = None) -> float:
    """Seconds until ``key`` may try again; 0 when it may try now."""
    now = time.time() if now is None else now
    start, count, _ = _read(client, key)
    if count >= limit and now - start < window:
        return start + window - now
    return 0.0


def record_failure(client: Client, key: Key, *, window: float,
                   now: float | None = None) -> int:
    """Count one failure; returns the failures in the current window."""
    now = time.time() if now is None else now
    for _ in range(_ATTEMPTS):
        start, count, version = _read(client, key)
        if now - start >= window:
            start, count = now, 0
        try:
            client.cput(*key, msgpack.packb([start, count + 1]), if_version=version)
            return count + 1
        except ConditionFailed:
            continue  # another frontend counted at the same moment: count on top of it
    raise ConditionFailed("the login counter kept changing")


def reset(client: Client, key: Key) -> None:
    """Forget the failures of ``key`` (after a successful login to the account)."""
    client.delete(*key)

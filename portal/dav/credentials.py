"""HTTP Basic sign-in for WebDAV clients, checked once and then remembered for a while.

A WebDAV client sends its password with every request, and a sync of a few
thousand files is a few thousand requests: checking the account password
(argon2) each time would cost seconds of CPU per sync, and even an app
password costs store round trips.  So a credential that was right is
remembered in this worker process for :data:`REMEMBER` seconds, keyed by an
HMAC of user and password under a key made when the process starts: the cache
never holds a password, and a copy of its keys is worth nothing elsewhere.
Only what was right is remembered; wrong guesses always go to the shared
limiter (:func:`shards.model.apppasswords.check_credential`), so they count on
every frontend and every door, and only failures count.

A remembered credential outlives a password change, a revoked app password or
a disabled account by at most :data:`REMEMBER` seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shards.model import accounts, apppasswords

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore
    from shards.model import ratelimit

REMEMBER = 300.0       # seconds a right credential is trusted without asking the store again
MAX_REMEMBERED = 4096  # credentials one worker remembers; the oldest go first
MAX_HEADER = 1024      # characters of an Authorization header worth decoding


@dataclass(frozen=True)
class Outcome:
    """What a request's credentials were found to be."""

    user: str | None = None             # set: signed in as this user
    retry_after: float = 0.0            # > 0: refused unchecked by the limiter
    needs_app_password: bool = False    # the account password, with two-factor sign-in on


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header, or None."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user or not password:
        return None
    return user.strip().lower(), password


class Remembered:
    """A bounded LRU of right credentials for :data:`REMEMBER` seconds, safe across threads."""

    def __init__(self, *, size: int = MAX_REMEMBERED, ttl: float = REMEMBER) -> None:
        self._key = secrets.token_bytes(32)  # per process: the cache's keys mean nothing elsewhere
        self._size, self._ttl = size, ttl
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def get(self, user: str, password: str, now: float) -> bool:
        digest = self._digest(user, password)
        with self._lock:
            found = self._entries.get(digest)
            if found is None:
                return False
            if found[1] <= now or found[0] != user:
                del self._entries[digest]
                return False
            self._entries.move_to_end(digest)
            return True

    def put(self, user: str, password: str, now: float) -> None:
        digest = self._digest(user, password)
        with self._lock:
            self._entries[digest] = (user, now + self._ttl)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    """Checks Basic credentials: app passwords always, the account password only
    without two-factor sign-in, a disabled account never."""

    def __init__(self, limits: ratelimit.Limits, app_key: bytes,
                 remembered: Remembered | None = None) -> None:
        self._limits, self._app_key = limits, app_key
        self.remembered = remembered or Remembered()

    def check(self, client: KeyValueStore, header: str | None, address: str, *,
              now: float | None = None) -> Outcome:
        """Who the request is from (``Outcome.user`` None: ask for credentials).

        :raises raftkv.errors.RaftKVError: the store could not be asked.
        """
        found = basic_credentials(header)
        if found is None:
            return Outcome()
        user, password = found
        now = time.time() if now is None else now
        if self.remembered.get(user, password, now):
            return Outcome(user=user)
        if not accounts.valid_username(user) or len(password) > accounts.MAX_PASSWORD:
            return Outcome()
        checked = apppasswords.check_credential(client, user, password, address, self._limits,
                                                self._app_key, now=now)
        if checked.limited:
            return Outcome(retry_after=checked.retry_after)
        if checked.needs_app_password:
            return Outcome(needs_app_password=True)
        if not checked.right:
            return Outcome()
        # Right also means active: check_credential refuses a disabled account's app
        # passwords, and the account password of one never verifies.
        self.remembered.put(user, password, now)
        return Outcome(user=user)

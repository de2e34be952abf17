"""One limiter for every way of proving a password (web login, SMTP AUTH, any later door).

Three counters (four for IPv6) guard each attempt, all kept in the store so every frontend and
every smtpd sees the same counts:

- **per client address** (all accounts): a few failures are free, then each
  further attempt waits ``delay`` seconds, doubling per failure up to
  ``max_delay``.  Spraying many accounts from one address slows down
  exponentially; nobody is locked out for good.
- **per IPv6 /48** (all accounts): the address counter above takes an IPv6
  /64 as one address, but a customer often holds a /48, which is 65,536 /64s.
  So IPv6 failures are also summed over the /48, with a much larger free
  budget (``network`` rule: 200 an hour) and the same growing wait.
- **per (account, address) pair**: fewer free failures, then the same kind of
  growing wait.  One address guessing one account is slowed long before the
  account lock below; a user who mistypes at home slows only themselves, and a
  right password resets the pair.
- **per account** (from everywhere): many more failures (50 an hour by default)
  lock the account for everyone for an hour.  Only a distributed attack gets
  this far, and it is the one thing that bounds guesses spread over thousands
  of addresses.  Locking far later than the pair keeps attackers from locking a
  user out with a handful of guesses.

An attempt *takes its slot* before the password hash is computed: each counter
is incremented with a CPUT on the version read (two frontends counting at
once both count), and an attempt whose counter is in its wait is refused
without hashing.  So N guesses sent at once cost at most the free attempts in
argon2 time, however they are spread over frontends and threads.  A right
password gives its slots back (an exact undo when nobody counted meanwhile),
so users who type their password right are never slowed down.

A counter is one cell, msgpack ``[window start, attempts, wait until]``.  It
starts afresh (the cell is overwritten, never a new one) once its ``window``
has passed and no wait is pending; a counter given back to zero is deleted.
Every write gives the cell a time to live until then (plus a minute of slack
for the frontends' and the store's clocks), so the store forgets the counters
of addresses that stop trying without any sweeper.

Two-factor codes have their own counter, **per account** (``code`` rule: 10
wrong codes per 15 minutes, then a growing wait).  It does not hang on a
pending login, so logging in again (which a right password allows at once)
gives no fresh tries; a right code gives back only its own slot
(:func:`check_code`).

Layout: the account counter is ``{<name>}/login`` column ``failures`` and the
pair ``{<name>}/login`` column ``from:<addr>`` (on the user's shard), and the code
counter ``{<name>}/login`` column ``code-failures``; the address counter is
``login-addr/<addr>`` column ``failures``; signups per
address ``signup-addr/<addr>`` column ``count``.  IPv6 addresses count per /64,
which is what one customer usually holds, and their /48 counter is
``login-net/<prefix>/48`` column ``failures``.  Share links: misses per address
``link-miss/<addr>`` column ``count`` (``link`` rule), wrong passwords per link
``share/<link hash>`` column ``failures`` (``pair`` rule, beside the link's lookup cell).

Settings: the cluster file's ``[auth]`` table (:meth:`Limits.from_table`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from raftkv.errors import ConditionFailed, ConfigError

from . import accounts

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

__all__ = ["Limits", "Rule", "Verdict", "account_key", "address_key", "check_code",
           "check_link_password", "check_password", "code_key", "count_link_miss",
           "link_miss_key", "link_miss_wait", "link_password_key", "network_key", "pair_key",
           "signup_key", "take_signup_slot"]

# CPUT rounds an attempt tries before it gives up; giving up refuses the
# attempt (it is one of many at the same instant on the same counter).
_ATTEMPTS = 32
_EXPIRY_SLACK = 60.0  # seconds a counter outlives its window and wait: clocks differ a little
_CONTENDED_WAIT = 1.0

Key = tuple[str, str]
_RULES = ("address", "network", "pair", "account", "signup", "code", "link")


@dataclass(frozen=True)
class Rule:
    """``free`` attempts per ``window`` seconds; then each waits ``delay``, doubling up to
    ``max_delay``."""

    free: int
    window: float
    delay: float
    max_delay: float

    def wait_after(self, attempts: int) -> float:
        """Seconds the next attempt must wait once ``attempts`` are counted in the window."""
        if attempts < self.free:
            return 0.0
        return min(self.delay * 2.0 ** min(attempts - self.free, 64), self.max_delay)

    def validate(self, name: str) -> None:
        if self.free < 1 or self.window <= 0 or self.delay <= 0 or self.max_delay < self.delay:
            raise ConfigError(f"[auth] {name}: free, window and delay must be positive "
                              "and max_delay at least delay")


@dataclass(frozen=True)
class Limits:
    """Every limit on proving a password or signing up; see the module docstring."""

    address: Rule = Rule(free=20, window=3600.0, delay=1.0, max_delay=600.0)
    network: Rule = Rule(free=200, window=3600.0, delay=1.0, max_delay=600.0)
    pair: Rule = Rule(free=5, window=3600.0, delay=30.0, max_delay=900.0)
    account: Rule = Rule(free=50, window=3600.0, delay=3600.0, max_delay=3600.0)
    signup: Rule = Rule(free=5, window=3600.0, delay=3600.0, max_delay=3600.0)
    code: Rule = Rule(free=10, window=900.0, delay=60.0, max_delay=3600.0)
    # Share links (shards.model.drive.shares) opened from one address that open nothing.
    link: Rule = Rule(free=20, window=3600.0, delay=10.0, max_delay=3600.0)
    failures_per_connection: int = 3  # failed AUTH commands before smtpd closes with 421

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Limits:
        """Limits from the cluster file's ``[auth]`` table; absent keys keep their defaults.

        ``address``, ``network``, ``pair``, ``account``, ``signup``, ``code`` and ``link`` are tables
        of ``free``,
        ``window``, ``delay`` and ``max_delay``; ``failures_per_connection`` a number.

        :raises ConfigError: an unknown key or a value that cannot work.
        """
        rules = _RULES
        unknown = set(table) - {*rules, "failures_per_connection"}
        if unknown:
            raise ConfigError(f"[auth] has unknown keys: {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        for name in rules:
            if name in table:
                changes[name] = _rule(name, getattr(cls, name), table[name])
        if "failures_per_connection" in table:
            changes["failures_per_connection"] = _number(
                "failures_per_connection", table["failures_per_connection"], int)
        limits = dataclasses.replace(cls(), **changes)
        limits.validate()
        return limits

    def validate(self) -> None:
        """:raises ConfigError: a value that cannot work."""
        for name in _RULES:
            getattr(self, name).validate(name)
        if self.failures_per_connection < 1:
            raise ConfigError("[auth] failures_per_connection must be positive")


def _rule(name: str, default: Rule, table: Any) -> Rule:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[auth] {name} must be a table of free, window, delay, max_delay")
    fields = {f.name: f.type for f in dataclasses.fields(Rule)}
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"[auth] {name} has unknown keys: {', '.join(sorted(unknown))}")
    return dataclasses.replace(default, **{
        key: _number(f"{name}.{key}", value, int if key == "free" else float)
        for key, value in table.items()})


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not isinstance(value, int)):
        raise ConfigError(f"[auth] {name} must be a number")
    return kind(value)


# -- keys ------------------------------------------------------------------------

def _address(addr: str) -> str:
    """An address as counted: IPv4 as is, IPv6 per /64, anything else cut short."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def network_key(addr: str) -> Key | None:
    """The counter of password attempts from an IPv6 address's /48; None for other addresses."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is not None:
        return None
    return f"login-net/{ipaddress.ip_network(f'{ip}/48', strict=False)}", "failures"


def account_key(name: str) -> Key:
    """The counter of password attempts on one account, from anywhere."""
    return f"{{{name}}}/login", "failures"


def pair_key(name: str, addr: str) -> Key:
    """The counter of password attempts on one account from one client address."""
    return f"{{{name}}}/login", f"from:{_address(addr)}"


def address_key(addr: str) -> Key:
    """The counter of password attempts from one client address (an IPv6 /64 as one)."""
    return f"login-addr/{_address(addr)}", "failures"


def code_key(name: str) -> Key:
    """The counter of two-factor codes tried on one account, from any login or page."""
    return f"{{{name}}}/login", "code-failures"


def link_miss_key(addr: str) -> Key:
    """The counter of share links tried from one address that open nothing."""
    return f"link-miss/{_address(addr)}", "count"


def link_password_key(link_hash: str) -> Key:
    """The counter of wrong passwords on one share link, from anywhere (beside its lookup)."""
    return f"share/{link_hash}", "failures"


def signup_key(addr: str) -> Key:
    """The counter of signups from one client address."""
    return f"signup-addr/{_address(addr)}", "count"


# -- counters --------------------------------------------------------------------

@dataclass(frozen=True)
class _Slot:
    """An attempt counted in one cell: enough to give it back."""

    key: Key
    version: int          # the version our CPUT wrote
    before: bytes | None  # the cell's value before it (None: there was no cell)
    window: float         # the rule's window, for the lifetime of what a give-back writes
    now: float            # the time the attempt was counted at


def _state(value: bytes | None) -> tuple[float, int, float]:
    """``(window start, attempts, wait until)`` of a counter's value; zeros for none or garbage."""
    if value is None:
        return 0.0, 0, 0.0
    try:
        start, count, until = msgpack.unpackb(value)
        return float(start), int(count), float(until)
    except (ValueError, TypeError, msgpack.UnpackException):
        return 0.0, 0, 0.0


def _lifetime(value: bytes | None, window: float, now: float) -> float:
    """Seconds a counter holding ``value`` matters from ``now``: until its window ends
    and its wait is over (then it would start afresh anyway), plus the slack."""
    start, _count, until = _state(value)
    return max(start + window - now, until - now, 0.0) + _EXPIRY_SLACK


def _take(client: KeyValueStore, key: Key, rule: Rule, now: float) -> _Slot | float:
    """Count one attempt, or return the seconds it must wait (nothing counted)."""
    for _ in range(_ATTEMPTS):
        cell = client.get(*key)
        start, count, until = _state(cell.value if cell else None)
        if now < until:
            return until - now
        if now - start >= rule.window:
            start, count = now, 0  # a new window, in the same cell
        count += 1
        wait = rule.wait_after(count)
        value = msgpack.packb([start, count, now + wait if wait else 0.0])
        try:
            version = client.cput(*key, value, if_version=cell.version if cell else 0,
                                  ttl=_lifetime(value, rule.window, now))
        except ConditionFailed:
            continue  # someone counted at the same moment: count on top of them
        return _Slot(key, version, cell.value if cell else None, rule.window, now)
    return _CONTENDED_WAIT


def _give_back(client: KeyValueStore, slot: _Slot) -> None:
    """Uncount an attempt: restore the cell if nobody counted since, else decrement."""
    row, col = slot.key
    try:
        if slot.before is None:
            client.mutate_row(row, [("version", col, slot.version)], [("delete", col)])
        else:
            client.cput(row, col, slot.before, if_version=slot.version,
                        ttl=_lifetime(slot.before, slot.window, slot.now))
        return
    except ConditionFailed:
        pass
    for _ in range(_ATTEMPTS):
        cell = client.get(row, col)
        if cell is None:
            return
        start, count, until = _state(cell.value)
        if count <= 0:
            return
        try:
            if count == 1 and until == 0:
                client.mutate_row(row, [("version", col, cell.version)], [("delete", col)])
            else:
                value = msgpack.packb([start, count - 1, until])
                client.cput(row, col, value, if_version=cell.version,
                            ttl=_lifetime(value, slot.window, slot.now))
            return
        except ConditionFailed:
            continue


# -- the public checks -------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check_password`."""

    right: bool               # the password is the account's
    retry_after: float = 0.0  # > 0: refused without checking; try again after this many seconds

    @property
    def limited(self) -> bool:
        return self.retry_after > 0


def check_password(client: KeyValueStore, user: str, password: str, address: str, limits: Limits,
                   *, now: float | None = None,
                   verify: Callable[[KeyValueStore, str, str], bool] | None = None) -> Verdict:
    """Check ``user``'s password for a client at ``address``, within ``limits``.

    Every door that takes a password calls this, so one count covers them all.
    The slots are taken before the argon2 hash is computed; a refused attempt
    costs a few store round trips and no hashing.  The answer says nothing about
    the password when the attempt is refused.

    ``verify(client, user, password)`` replaces the argon2 check for a door that
    takes other secrets too (app passwords: :mod:`.apppasswords`), so those are
    counted in the same slots.

    :raises raftkv.errors.RaftKVError: the store could not be reached (slots
        already taken stay counted: failing closed).
    """
    now = time.time() if now is None else now
    verify = verify or accounts.verify_password
    counters = [(address_key(address), limits.address)]
    network = network_key(address)
    if network is not None:
        counters.append((network, limits.network))
    if accounts.valid_username(user):
        counters += [(pair_key(user, address), limits.pair), (account_key(user), limits.account)]
    taken: list[_Slot] = []
    for key, rule in counters:
        slot = _take(client, key, rule, now)
        if not isinstance(slot, _Slot):
            for earlier in reversed(taken):
                _give_back(client, earlier)
            return Verdict(right=False, retry_after=slot)
        taken.append(slot)
    if not verify(client, user, password):
        return Verdict(right=False)  # the slots stay counted: that is the failure
    for slot in taken:
        if slot.key == pair_key(user, address):
            client.delete(*slot.key)  # this address knows the password: forget its misses
        else:
            _give_back(client, slot)
    return Verdict(right=True)


def check_code(client: KeyValueStore, user: str, code: str, limits: Limits,
               verify: Callable[[KeyValueStore, str, str], bool], *,
               now: float | None = None) -> Verdict:
    """Check a two-factor ``code`` of ``user`` with ``verify``, within ``limits.code``.

    The slot is taken before the code is checked (parallel guesses count), and
    counted per account whichever pending login or page the code came through.
    A right code gives back its own slot only: the wrong ones before it stay
    counted, so a guesser holding the password cannot reset the count.
    """
    now = time.time() if now is None else now
    if not accounts.valid_username(user):
        return Verdict(right=False)
    slot = _take(client, code_key(user), limits.code, now)
    if not isinstance(slot, _Slot):
        return Verdict(right=False, retry_after=slot)
    if not verify(client, user, code):
        return Verdict(right=False)
    _give_back(client, slot)
    return Verdict(right=True)


def take_signup_slot(client: KeyValueStore, address: str, limits: Limits, *,
                     now: float | None = None) -> float:
    """Count one signup from ``address``: 0 when it may go ahead, else seconds to wait.

    Taken before the account is created (and its password hashed), and kept
    whether or not the name was free: each try costs an argon2 hash.
    """
    now = time.time() if now is None else now
    slot = _take(client, signup_key(address), limits.signup, now)
    return 0.0 if isinstance(slot, _Slot) else slot


def link_miss_wait(client: KeyValueStore, address: str, *, now: float | None = None) -> float:
    """Seconds ``address`` must wait before trying another share link (0: go ahead).

    Read before a link is looked up, so an address that guessed too often is
    refused without a lookup; only misses are counted (:func:`count_link_miss`).
    """
    now = time.time() if now is None else now
    cell = client.get(*link_miss_key(address))
    until = _state(cell.value if cell else None)[2]
    return max(0.0, until - now)


def count_link_miss(client: KeyValueStore, address: str, limits: Limits, *,
                    now: float | None = None) -> float:
    """Count a share link from ``address`` that opened nothing: 0, or the seconds to wait
    when the address was refused meanwhile (the miss is then not counted)."""
    now = time.time() if now is None else now
    slot = _take(client, link_miss_key(address), limits.link, now)
    return 0.0 if isinstance(slot, _Slot) else slot


def check_link_password(client: KeyValueStore, link_hash: str, address: str, limits: Limits,
                        verify: Callable[[], bool], *, now: float | None = None) -> Verdict:
    """Check a share link's password as :func:`check_password` checks an account's.

    The same address counters as every login (so guessing link passwords and
    account passwords from one address share one budget), and the link's own
    counter with the ``pair`` rule in place of the account's: a link's
    password guessed from many addresses slows down, and the owner's account
    is never locked by it.
    """
    now = time.time() if now is None else now
    counters = [(address_key(address), limits.address)]
    network = network_key(address)
    if network is not None:
        counters.append((network, limits.network))
    counters.append((link_password_key(link_hash), limits.pair))
    taken: list[_Slot] = []
    for key, rule in counters:
        slot = _take(client, key, rule, now)
        if not isinstance(slot, _Slot):
            for earlier in reversed(taken):
                _give_back(client, earlier)
            return Verdict(right=False, retry_after=slot)
        taken.append(slot)
    if not verify():
        return Verdict(right=False)
    for slot in taken:
        _give_back(client, slot)
    return Verdict(right=True)

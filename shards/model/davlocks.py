"""WebDAV locks, kept in the store so a lock taken through one frontend holds on every other.

One row per user (the ``{user}`` hash tag: the user's shard, moved and erased with
the rest of the account)::

    row {<user>}/davlock
        n                       msgpack int: locks held in the row (live, or expired
                                and not yet purged); every change puts it
        t:<token>               msgpack {p: path, x: expire}: a lock found by its token
        l:<path>\\x00<token>     msgpack lock record: the locks *on* a path are the
                                prefix ``l:<path>\\x00``, the locks *below* it ``l:<path>/``
        l:~<sha256>\\x00<token>  the same for a root too long for a column key (over
                                :data:`MAX_INDEXED` bytes), found by its hash
        x:<expire>:<token>      the path: the locks in expiry order (the lazy purge)

A path is what WebDAV names (the lock root, as the client's URL names it).  Every
change is **one** ``mutate_row`` conditioned on the version of ``n`` read before
anything else, and puts ``n`` again (deletes it at zero): changes of one user's locks
are serialised without a lock, so a create re-checks the conflicts it read (two
frontends locking one path exclusively end with one lock and a :class:`LockConflict`),
and the count stays exact under the cap.  Expired locks are hidden on every read; each change also
deletes up to :data:`PURGE_BATCH` of the oldest expired ones (``x:`` sorts by expiry),
so expired locks never outnumber the cap for long and never hold its room.

Bounds: a timeout is at most :data:`MAX_TIMEOUT` (an infinite or a year-long request
gets the cap), at most :data:`MAX_LOCKS` locks per user, paths of at most
:data:`MAX_PATH` bytes and owner XML of at most :data:`MAX_OWNER` bytes (a change
stays under a Raft entry's 32 KiB).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.errors import ConditionFailed, OverLimit, Refused

from .codec import pack as _pack
from .codec import unpack as _unpack
from .errors import NotFound
from .retry import attempts

if TYPE_CHECKING:
    from raftkv.interface import Cell, KeyValueStore, Mutation

MAX_TIMEOUT = 3600.0      # seconds: "Infinite" and longer requests get this
MIN_TIMEOUT = 1.0         # seconds: a zero or tiny timeout becomes this
MAX_LOCKS = 1000          # live locks per user
MAX_PATH = 4096           # bytes of a lock root (UTF-8): a URL path, quoted
MAX_INDEXED = 380         # bytes of a root kept in its column (row and column keys stop at 498)
MAX_OWNER = 2048          # bytes of the <owner> XML a client sends
PURGE_BATCH = 8           # expired locks deleted by one change (about 1.1 KiB of columns each)
ATTEMPTS = 10             # re-reads when another change of the same user's locks won
SCOPES = ("exclusive", "shared")
DEPTHS = ("0", "infinity")
_TOKEN_PREFIX = "opaquelocktoken:"
_COUNT = "n"
_LONG = "~"               # l:~<hash>: a long root (sorts apart from roots, which begin "/")
# The time every call without ``now`` reads (tests move it; the store's clock plays no part).
clock = time.time


class LockError(Refused):
    """A lock request the store refuses; the message says why."""


class BadLock(LockError):
    """A malformed request: path, scope, depth or owner out of bounds."""


class LockConflict(LockError):
    """Another lock covers the path; ``roots`` are the conflicting locks' roots."""

    def __init__(self, roots: list[str]) -> None:
        super().__init__("The resource is locked.")
        self.roots = roots


class NoSuchLock(NotFound):
    """No live lock has this token (never made, released, or expired)."""


class TooManyLocks(OverLimit):
    """The user holds :data:`MAX_LOCKS` live locks already."""


@dataclass(frozen=True)
class Lock:
    """A live lock, as WebDAV describes it (``type`` is always "write")."""

    token: str
    root: str            # the locked path, normalised: "/a/b", no trailing slash
    scope: str           # "exclusive" or "shared"
    depth: str           # "0" or "infinity"
    owner: bytes         # the client's <owner> element, as XML (may be empty)
    principal: str       # the user who took it
    timeout: float       # seconds granted at the last create or refresh
    expire: float        # time.time() at which it ends
    type: str = "write"


def lock_row(user: str) -> str:
    """The row holding every lock ``user`` took."""
    return f"{{{user}}}/davlock"


def normalize(path: str) -> str:
    """``path`` as a lock root ("/a/b"), or :class:`BadLock` for one a lock cannot name."""
    if not isinstance(path, str):
        raise BadLock("A lock path must be text.")
    path = "/" + path.strip("/")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise BadLock(f"A lock path can be at most {MAX_PATH} bytes long.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadLock("A lock path cannot contain control characters.")
    return path


def capped_timeout(timeout: float | None) -> float:
    """The timeout granted for a request of ``timeout`` seconds (None or < 0: infinite)."""
    if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT:
        return MAX_TIMEOUT
    return max(MIN_TIMEOUT, float(timeout))


def is_token(token: object) -> bool:
    """True if ``token`` has the shape of a token :func:`create` makes (others are never held)."""
    if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX):
        return False
    try:
        return str(uuid.UUID(token[len(_TOKEN_PREFIX):])) == token[len(_TOKEN_PREFIX):]
    except ValueError:
        return False


def ancestors(path: str) -> list[str]:
    """The lock roots above ``path``, nearest first: "/a/b" -> ["/a", "/"]."""
    found = []
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        found.append(path)
    return found


# -- reads ---------------------------------------------------------------------------------


def get(client: KeyValueStore, user: str, token: str, *, now: float | None = None) -> Lock | None:
    """The live lock with ``token``, or None."""
    if not is_token(token):
        return None
    now = clock() if now is None else now
    row = lock_row(user)
    found = _token_cell(client.get(row, _token_col(token)))
    if found is None or found[1] < now:
        return None
    cell = client.get(row, _path_col(found[0], token))
    return None if cell is None else _live(_lock_from(found[0], token, cell.value), now)


def locks_at(client: KeyValueStore, user: str, path: str, *, include_root: bool = True,
             include_children: bool = False, now: float | None = None) -> list[Lock]:
    """The live locks on ``path`` (``include_root``) and on paths below it
    (``include_children``): one ``get_row`` each (two below a path, to see long roots),
    whatever else the user holds.  A path no lock can name has none on or below it."""
    try:
        path = normalize(path)
    except BadLock:
        return []
    now = clock() if now is None else now
    found = []
    if include_root:
        found += _on(client, user, path, now)
    if include_children:
        found += _below(client, user, path, now)
    return found


def every_lock(client: KeyValueStore, user: str, *, limit: int,
               now: float | None = None) -> list[Lock] | None:
    """All of the user's live locks in one ``get_row``, or None if the row holds more
    than ``limit`` (live or not): a request that asks about many paths reads them once."""
    cells = client.get_row(lock_row(user), "l:", limit=limit + 1)
    if len(cells) > limit:
        return None
    return _parse(cells, clock() if now is None else now)


def select(locks: list[Lock], path: str, *, include_root: bool, include_children: bool,
           now: float | None = None) -> list[Lock]:
    """Of ``locks``, the live ones :func:`locks_at` would answer for ``path``."""
    try:
        path = normalize(path)
    except BadLock:
        return []
    now = clock() if now is None else now
    below = "/" if path == "/" else path + "/"
    return [lock for lock in locks if lock.expire >= now and (
        (include_root and lock.root == path)
        or (include_children and lock.root != path and lock.root.startswith(below)))]


def _on(client: KeyValueStore, user: str, path: str, now: float) -> list[Lock]:
    cells = client.get_row(lock_row(user), f"l:{_key(path)}\x00")
    return [lock for lock in _parse(cells, now) if lock.root == path]


def _below(client: KeyValueStore, user: str, path: str, now: float) -> list[Lock]:
    cells: dict[str, Cell] = {}
    if _key(path) == path:          # below a long path, every root is long too
        cells.update(client.get_row(lock_row(user), "l:/" if path == "/" else f"l:{path}/"))
    cells.update(client.get_row(lock_row(user), f"l:{_LONG}"))
    below = "/" if path == "/" else path + "/"
    return [lock for lock in _parse(cells, now)
            if lock.root != path and lock.root.startswith(below)]


def _parse(cells: dict[str, Cell], now: float) -> list[Lock]:
    found = []
    for column, cell in cells.items():
        key, _, token = column[2:].partition("\x00")
        lock = _live(_lock_from(key, token, cell.value), now)
        if lock is not None:
            found.append(lock)
    return found


def conflicts(client: KeyValueStore, user: str, path: str, scope: str, depth: str, *,
              now: float) -> list[str]:
    """Roots of the live locks a new lock (``scope``, ``depth``) on ``path`` would clash
    with: the rules of WsgiDAV's LockManager (RFC 4918, 6.1): a lock on the path, or
    a depth-infinity lock above it, unless both are shared; for a depth-infinity
    request, any lock below."""
    roots = []
    for above in [path, *ancestors(path)]:
        for lock in _on(client, user, above, now):
            if above != path and lock.depth != "infinity":
                continue
            if lock.scope == "shared" and scope == "shared":
                continue
            roots.append(lock.root)
    if depth == "infinity":
        roots += [lock.root for lock in _below(client, user, path, now)]
    return roots


# -- changes -------------------------------------------------------------------------------


def create(client: KeyValueStore, user: str, path: str, *, scope: str, depth: str,
           owner: bytes, principal: str, timeout: float | None,
           now: float | None = None) -> Lock:
    """Take a new lock on ``path``; the token is made here.

    :raises LockConflict: a live lock clashes (checked again in the same
        conditioned mutation that writes the lock, so no two frontends both win).
    :raises TooManyLocks: the user already holds :data:`MAX_LOCKS` live locks.
    :raises BadLock: path, scope, depth or owner out of bounds.
    """
    path = normalize(path)
    if scope not in SCOPES or depth not in DEPTHS:
        raise BadLock("A lock's scope must be exclusive or shared, its depth 0 or infinity.")
    if not isinstance(owner, bytes) or len(owner) > MAX_OWNER:
        raise BadLock(f"A lock's owner can be at most {MAX_OWNER} bytes of XML.")
    granted = capped_timeout(timeout)
    token = _TOKEN_PREFIX + str(uuid.uuid4())

    def change(count: int, stamp: float, purged: set[str]) -> tuple[list[Mutation], int, Lock]:
        clash = conflicts(client, user, path, scope, depth, now=stamp)
        if clash:
            raise LockConflict(clash)
        if count >= MAX_LOCKS:
            raise TooManyLocks(f"You hold {MAX_LOCKS} locks already: unlock some first.")
        lock = Lock(token=token, root=path, scope=scope, depth=depth, owner=owner,
                    principal=principal, timeout=granted, expire=_expiry(stamp, granted))
        return _put(lock), 1, lock

    return _change(client, user, change, now)


def refresh(client: KeyValueStore, user: str, token: str, timeout: float | None, *,
            now: float | None = None) -> Lock:
    """Give the live lock ``token`` a new timeout from now (capped like a new lock's).

    :raises NoSuchLock: no live lock has this token (an expired one cannot be revived).
    """
    granted = capped_timeout(timeout)

    def change(count: int, stamp: float, purged: set[str]) -> tuple[list[Mutation], int, Lock]:
        old = None if token in purged else get(client, user, token, now=stamp)
        if old is None:
            raise NoSuchLock("No such lock: it was released or has expired.")
        lock = dataclasses.replace(old, timeout=granted, expire=_expiry(stamp, granted))
        return [("delete", _expiry_col(old.expire, token)), *_put(lock)], 0, lock

    return _change(client, user, change, now)


def delete(client: KeyValueStore, user: str, token: str, *, now: float | None = None) -> bool:
    """Remove the lock ``token``; True if it was live (an expired one goes as well)."""
    if not is_token(token):
        return False

    def change(count: int, stamp: float, purged: set[str]) -> tuple[list[Mutation], int, bool]:
        found = None if token in purged else _token_cell(
            client.get(lock_row(user), _token_col(token)))
        if found is None:
            return [], 0, False
        path, expire = found
        return _drop(path, token, expire), -1, expire >= stamp

    return _change(client, user, change, now)


def clear(client: KeyValueStore, user: str) -> int:
    """Remove every lock of ``user`` (tests, account clean-up); how many were held."""
    removed = 0

    def change(count: int, stamp: float, purged: set[str]) -> tuple[list[Mutation], int, int]:
        mutations: list[Mutation] = []
        cells = client.get_row(lock_row(user), "t:", limit=PURGE_BATCH)
        mine = {column: cell for column, cell in cells.items() if column[2:] not in purged}
        for column, cell in mine.items():
            found = _token_cell(cell)
            if found is None:       # unreadable: drop the cell itself
                mutations.append(("delete", column))
            else:
                mutations += _drop(found[0], column[2:], found[1])
        return mutations, -len(mine), len(mine) + len(purged)

    while batch := _change(client, user, change, None):
        removed += batch
    return removed


def _change[T](client: KeyValueStore, user: str,
               change: Callable[[int, float, set[str]], tuple[list[Mutation], int, T]],
               now: float | None) -> T:
    """Run ``change(count, now, purged tokens) -> (mutations, count delta, result)`` as one
    mutation conditioned on ``n``'s version, with a purge of expired locks; re-read and
    retry when another change of this user's locks landed first."""
    row = lock_row(user)
    for _ in attempts(ATTEMPTS):
        stamp = clock() if now is None else now
        cell = client.get(row, _COUNT)
        version = 0 if cell is None else cell.version
        count = 0 if cell is None else _int(cell.value)
        purge, purged = _expired(client, user, stamp)
        mutations, delta, result = change(count - len(purged), stamp, purged)
        if not mutations and not purge:
            return result
        total = max(0, count - len(purged) + delta)
        try:
            # At zero the count cell goes too (an unused row vanishes).  Safe: absent
            # means no lock is stored, so a writer conditioned on "absent" whose reads
            # are older still writes a true count and cannot miss a conflict.
            last: Mutation = ("put", _COUNT, _pack(total)) if total else ("delete", _COUNT)
            client.mutate_row(row, [("version", _COUNT, version)], [*purge, *mutations, last])
            return result
        except ConditionFailed:
            continue  # attempts() pauses a random, growing time before the next try
    raise ConditionFailed("the locks kept changing")


def _expired(client: KeyValueStore, user: str, now: float) -> tuple[list[Mutation], set[str]]:
    """Deletions of up to :data:`PURGE_BATCH` expired locks (the oldest), and their tokens."""
    mutations: list[Mutation] = []
    tokens = set()
    for column, cell in client.get_row(lock_row(user), "x:", limit=PURGE_BATCH).items():
        stamp, _, token = column[2:].partition(":")
        try:
            expire = float(stamp)
        except ValueError:
            expire = 0.0
        if expire >= now:
            break
        path = cell.value.decode("utf-8", "replace")
        mutations += _drop(path, token, expire)
        tokens.add(token)
    return mutations, tokens


def _put(lock: Lock) -> list[Mutation]:
    record = {"root": lock.root, "scope": lock.scope, "depth": lock.depth, "owner": lock.owner,
              "principal": lock.principal, "timeout": lock.timeout, "expire": lock.expire}
    return [("put", _token_col(lock.token), _pack({"p": lock.root, "x": lock.expire})),
            ("put", _path_col(lock.root, lock.token), _pack(record)),
            ("put", _expiry_col(lock.expire, lock.token), lock.root.encode("utf-8"))]


def _drop(path: str, token: str, expire: float) -> list[Mutation]:
    return [("delete", _token_col(token)), ("delete", _path_col(path, token)),
            ("delete", _expiry_col(expire, token))]


def _expiry(now: float, timeout: float) -> float:
    # Rounded to the millisecond so that the x: column can be rebuilt from the record.
    return round(now + timeout, 3)


def _token_col(token: str) -> str:
    return f"t:{token}"


def _key(path: str) -> str:
    """How a root appears in its column: itself, or ``~`` and its hash when too long."""
    raw = path.encode("utf-8", "surrogatepass")
    return path if len(raw) <= MAX_INDEXED else _LONG + hashlib.sha256(raw).hexdigest()


def _path_col(path: str, token: str) -> str:
    return f"l:{_key(path)}\x00{token}"


def _expiry_col(expire: float, token: str) -> str:
    # Fixed width, so column order is expiry order (for times before the year 33658).
    return f"x:{expire:017.3f}:{token}"


def _token_cell(cell: Cell | None) -> tuple[str, float] | None:
    record = None if cell is None else _unpack(cell.value)
    if not isinstance(record, dict) or not isinstance(record.get("p"), str):
        return None
    return record["p"], float(record.get("x", 0.0))


def _lock_from(path: str, token: str, value: bytes) -> Lock | None:
    record = _unpack(value)
    if not isinstance(record, dict):
        return None
    root = record.get("root")
    return Lock(token=token, root=root if isinstance(root, str) else path, scope=str(record.get("scope")),
                depth=str(record.get("depth")), owner=bytes(record.get("owner") or b""),
                principal=str(record.get("principal")),
                timeout=float(record.get("timeout", 0.0)), expire=float(record.get("expire", 0.0)))


def _live(lock: Lock | None, now: float) -> Lock | None:
    return lock if lock is not None and lock.expire >= now else None


def _int(value: bytes) -> int:
    number = _unpack(value)
    return number if isinstance(number, int) else 0


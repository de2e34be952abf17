"""Deleting an account and every row and blob of it.

What a user owns in the store:

- ``user/<name>``: the account cell and the TOTP cell (:mod:`.twofactor`);
- every row tagged ``{<name>}``: the drive (``{name}/drive``, ``{name}/file:<id>``),
  the mailbox (``{name}/mail``, ``{name}/msg:<id>``), login counters and pending
  logins (``{name}/login``), the sessions index (``{name}/sessions``), and any
  row a later feature adds under the tag.  The tag puts them all on one shard
  and rows sort by name, so one scan from ``{name}/`` finds every one of them;
- session rows (``session/<hash>``), which only the portal knows how to end
  (``end_sessions``, a callback: this layer does not import the portal);
- outbound queue entries sent from the user's addresses, not being delivered
  right now (a worker holding a lease finishes its delivery: stopping mail
  already handed over for sending is not ours to do).

Blobs (files, large messages) are content-addressed chunks that the store's
garbage collector takes once no cell names them, so deleting the cells is
enough.

Resumable: the first step marks the account cell ``deleting`` and removes its
password hash, so nobody can log in (web or SMTP) from then on and the name
cannot be taken by a new signup.  Every later step is idempotent, so running
:func:`erase_account` again after an interruption -- the portal offers it to a
session of an account marked ``deleting`` -- finishes the job.  Sessions are
ended only after the data is gone (so the user can come back to finish) and
before the account cell goes (so no session outlives its account and could
become a new account's of the same name).  A last sweep catches mail that
smtpd delivered while the data was being deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgpack

from raftkv.errors import ConditionFailed

from . import accounts, outbound
from .accounts import ACCOUNT_COL, account_row, valid_username
from .drive import grants
from .errors import CannotDelete

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore, ShardedStore

_DELETES_PER_WRITE = 200  # column deletes per mutate_row: well under the 32 KiB entry cap
_SCAN_PAGE = 10           # rows per scan (each page carries up to 1000 cells per row)
_ATTEMPTS = 10


def tagged_prefix(user: str) -> str:
    return f"{{{user}}}/"


def is_deleting(client: KeyValueStore, user: str) -> bool:
    """True if ``user``'s deletion has begun and not finished."""
    record = _record(client, user)
    return bool(record and record[0].get("deleting"))


def erase_account(client: ShardedStore, user: str, *, domains: Iterable[str],
                  end_sessions: Callable[[], None], keep_rows: Iterable[str] = (),
                  now: float | None = None) -> None:
    """Delete ``user`` and all their data; safe to call again after an interruption.

    ``keep_rows`` (the sessions index) survive the first sweep, because
    ``end_sessions`` needs them; the last sweep takes them too.

    :raises CannotDelete: ``user`` is an administrator.
    """
    mark_deleting(client, user, now=now)
    # Folders others share with the user: their grants live in the owners' rows, and a
    # later account of this name must not find them.
    grants.leave_all(client, user)
    sweep_user_rows(client, user, keep=frozenset(keep_rows))
    drop_outbound(client, [f"{user}@{domain}" for domain in domains], now=now)
    end_sessions()
    _delete_all_cells(client, account_row(user))  # account and TOTP cells
    sweep_user_rows(client, user)


def mark_deleting(client: KeyValueStore, user: str, *, now: float | None = None) -> None:
    """Step one: no more logins, and the name stays taken until the end.

    :raises CannotDelete: an administrator (the cluster needs its admin).
    """
    now = time.time() if now is None else now
    for _ in range(_ATTEMPTS):
        loaded = _record(client, user)
        if loaded is None:
            return  # already gone (a retry of a finished deletion): nothing to mark
        record, version = loaded
        if record.get("admin"):
            raise CannotDelete("The administrator account cannot be deleted.")
        if record.get("deleting"):
            return
        record["deleting"] = now
        record["hash"] = ""  # no password verifies against an empty hash
        try:
            client.cput(account_row(user), ACCOUNT_COL, msgpack.packb(record, use_bin_type=True),
                        if_version=version)
            return
        except ConditionFailed:
            continue
    raise ConditionFailed("the account kept changing")


def user_rows(client: ShardedStore, user: str) -> list[str]:
    """Every row tagged with ``user`` (one shard; rows sort by name, so they are adjacent)."""
    if not valid_username(user):
        raise ValueError(f"not a user name: {user!r}")
    prefix = tagged_prefix(user)
    shard = client.shard_of(prefix)
    rows: list[str] = []
    after = prefix[:-1]  # "{user}": sorts just before every "{user}/..."
    while True:
        page = client.scan(shard, after, _SCAN_PAGE)
        for row, _cells in page:
            if row.startswith(prefix):
                rows.append(row)
            elif row > prefix:
                return rows
        if len(page) < _SCAN_PAGE:
            return rows
        after = page[-1][0]


def sweep_user_rows(client: ShardedStore, user: str, keep: frozenset[str] = frozenset()) -> int:
    """Delete every cell of every row tagged ``user`` except the rows in ``keep``."""
    deleted = 0
    for row in user_rows(client, user):
        if row not in keep:
            deleted += _delete_all_cells(client, row)
    return deleted


def drop_outbound(client: KeyValueStore, senders: list[str], *, now: float | None = None) -> int:
    """Remove queued outbound mail sent from ``senders`` that no worker is delivering now."""
    now = time.time() if now is None else now
    wanted = {s.lower() for s in senders}
    dropped = 0
    for entry in outbound.pending(client):
        if entry.sender.lower() in wanted and entry.lease_until <= now:
            # finish() is conditional on the version read: an entry claimed by a
            # worker since is left to that worker.
            dropped += outbound.finish(client, entry)
    return dropped


def _delete_all_cells(client: KeyValueStore, row: str) -> int:
    deleted = 0
    for _ in range(_ATTEMPTS):  # again while cells keep arriving (mail), but not forever
        columns = list(client.get_row(row))
        if not columns:
            break
        for start in range(0, len(columns), _DELETES_PER_WRITE):
            batch = columns[start:start + _DELETES_PER_WRITE]
            client.mutate_row(row, [], [("delete", column) for column in batch])
            deleted += len(batch)
    return deleted


def _record(client: KeyValueStore, user: str) -> tuple[dict[str, Any], int] | None:
    loaded = accounts.load(client, user)
    return None if loaded is None else (loaded[0], loaded[1].version)

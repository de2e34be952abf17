"""The admin console's users: a list by name (searched by prefix), disable, enable,
a new password, a drive quota of their own.

There is no index of users: accounts are rows ``user/<name>`` spread over every
shard by their hash.  Within a shard rows are sorted, so each shard's accounts
from a name on are one short scan; a page is the first names of all the shards'
answers merged (docs/architecture.md, "Pages": the admin console).

A reset password is shown once, on the answer to the admin's POST (never in a
URL, a notice or the store in clear), for the admin to hand over: a link by mail
would land in the very mailbox the user cannot open.
"""

from __future__ import annotations

import contextvars
import heapq
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgpack
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect

from raftkv.interface import Cell
from shards.model import accounts, drive, quota

from .auth import current_user, login_required
from .pages import with_notice

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from raftkv.interface import KeyValueStore

    from .app import Portal, Request

USERS_SHOWN = 20            # users per page of the list
SCANS_AT_ONCE = 8           # shards scanned at the same time for one page
USER_ROW_PREFIX = accounts.account_row("")  # "user/"
MIB = 1 << 20
# The actions that cannot be taken back by the same button: they ask first.
ASKS_FIRST = {"disable": "Disable", "reset": "Reset the password of"}


def _just_before(key: str) -> str:
    """A row key below every row starting with ``key`` and above every smaller row
    not starting with ``key[:-1]`` (scans are exclusive of their ``after``)."""
    return key[:-1] + chr(ord(key[-1]) - 1) + "\U0010ffff"


def _shard_accounts(client: KeyValueStore, shard: int, start: str, prefix: str,
                    limit: int) -> list[tuple[str, Cell]]:
    """Up to ``limit`` accounts of one shard whose row follows ``start`` and starts with
    ``prefix``, in order: one scan, since a shard's rows are sorted."""
    found = []
    for row, cells in client.scan(shard, start, limit=limit):
        if not row.startswith(prefix):
            break
        cell = cells.get(accounts.ACCOUNT_COL)
        if cell is not None:
            found.append((row[len(USER_ROW_PREFIX):], cell))
    return found


def list_users(client: KeyValueStore, shards: int, prefix: str = "", after: str = "",
               limit: int = USERS_SHOWN) -> tuple[list[tuple[str, Cell]], str | None]:
    """One page of accounts whose names start with ``prefix``, after the name ``after``:
    ``([(name, account cell)], the next page's ``after`` or None)``."""
    row_prefix = USER_ROW_PREFIX + prefix
    start = max(USER_ROW_PREFIX + after, _just_before(row_prefix))
    context = contextvars.copy_context()  # each scan counts for the request (read-only notice)
    with ThreadPoolExecutor(SCANS_AT_ONCE, thread_name_prefix="admin-users") as pool:
        per_shard = list(pool.map(
            lambda shard: context.copy().run(_shard_accounts, client, shard, start, row_prefix,
                                             limit + 1), range(shards)))
    merged = list(heapq.merge(*per_shard, key=lambda found: found[0]))
    page = merged[:limit]
    return page, page[-1][0] if len(merged) > limit else None


def _record(cell: Cell) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(cell.value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return {}
    return record if isinstance(record, dict) else {}


class AdminUserViews:
    """Mixin of :class:`portal.app.Portal`: the admin console's users."""

    def user_quota(self: Portal, user: str) -> int:
        """``user``'s drive quota: their own (set here), else the frontend's setting.  A
        drive page confirmed the cell with the session (portal.folders.page_keys)."""
        return quota.limit(self.client(), user, self.config.quota)

    def quota_and_usage(self: Portal, user: str) -> tuple[int, int]:
        """``user``'s quota and the bytes they use, read in one round trip (one row)."""
        client = self.client()
        client.confirm([(drive.drive_row(user), drive.USAGE_COL), quota.limit_key(user)])
        return self.user_quota(user), drive.usage(client, user)

    def _user_rows(self: Portal, found: list[tuple[str, Cell]]) -> list[dict[str, Any]]:
        """What the list shows of each account, with its drive usage and quota in one read."""
        client = self.client()
        keys = [key for name, _ in found
                for key in ((drive.drive_row(name), drive.USAGE_COL), quota.limit_key(name))]
        answers = client.get_cells(keys) if keys else []
        rows = []
        for i, (name, cell) in enumerate(found):
            used, limit = answers[2 * i], answers[2 * i + 1]
            record = _record(cell)
            own = quota.limit_of(limit if isinstance(limit, Cell) else None, -1)
            rows.append({
                "name": name, "admin": bool(record.get("admin")),
                "disabled": bool(record.get("disabled")), "created": record.get("created"),
                "used": drive.usage_of(used if isinstance(used, Cell) else None),
                "quota": own if own >= 0 else self.config.quota, "own_quota": own >= 0})
        return rows

    @login_required
    def on_admin_users(self: Portal, request: Request) -> Response:
        """The users, :data:`USERS_SHOWN` a page, by name; ``q`` a name prefix."""
        self._require_admin(request)
        prefix = (request.args.get("q") or "").strip().lower()
        after = request.args.get("after") or ""
        if len(prefix) > 32 or (prefix and not accounts.valid_username(prefix)):
            return self.render(request, "admin_users.html", status=400, q=prefix, users=[],
                               next=None, error="A name has only a-z, 0-9, '.', '_' and '-'.")
        found, following = list_users(self.client(), self.config.cluster.shards, prefix, after)
        return self.render(request, "admin_users.html", q=prefix, users=self._user_rows(found),
                           next=following, after=after, error=None)

    def _one_user(self: Portal, name: str) -> dict[str, Any]:
        loaded = accounts.load(self.client(), name)
        if loaded is None:
            raise NotFound(f"There is no user called {name!r}.")
        return self._user_rows([(name, loaded[1])])[0]

    @login_required
    def on_admin_user(self: Portal, request: Request, name: str) -> Response:
        """One user: their state, drive use and quota, and the actions."""
        self._require_admin(request)
        return self.render(request, "admin_user.html", u=self._one_user(name), mib=MIB)

    @login_required
    def on_admin_user_action(self: Portal, request: Request, name: str,
                             action: str) -> Response:
        """Disable, enable, reset the password, set the quota; the first two of those that
        cannot be undone by the same button ask first (:data:`ASKS_FIRST`)."""
        self._require_admin(request)
        client = self.client()
        user = self._one_user(name)
        page = f"/admin/users/{name}"
        if action == "disable" and name == current_user(request):
            raise BadRequest("You cannot disable your own account: you would lock yourself out.")
        if action in ASKS_FIRST and request.form_field("confirm") != "yes":
            return self.render(request, "admin_user_confirm.html", status=409, u=user,
                               action=action, verb=ASKS_FIRST[action])
        if action == "disable":
            accounts.set_disabled(client, name, True)
            self.sessions.revoke_all(name)  # signed out everywhere, at once
            return redirect(with_notice(page, "user-disabled"), 303)
        if action == "enable":
            accounts.set_disabled(client, name, False)
            return redirect(with_notice(page, "user-enabled"), 303)
        if action == "reset":
            password = accounts.reset_password(client, name)
            if password is None:
                raise NotFound(f"There is no user called {name!r}.")
            self.sessions.revoke_all(name)  # whoever knew the old one is signed out
            response = self.render(request, "admin_password.html", u=user, password=password,
                                   notice="The password has been reset.")
            response.headers["Cache-Control"] = "no-store"  # shown once: not from a cache
            return response
        quota.set_limit(client, name, _quota_field(request))
        return redirect(with_notice(page, "quota-set"), 303)


def _quota_field(request: Request) -> int | None:
    """The quota form's MiB as bytes; empty means the frontend's setting."""
    text = (request.form_field("quota_mib") or "").strip()
    if not text:
        return None
    try:
        mib = int(text)
    except ValueError:
        raise BadRequest("A quota is a whole number of MB (of 1024 KB), or empty.") from None
    if not 0 <= mib * MIB <= quota.MAX_LIMIT:
        raise BadRequest("A quota is 0 MB or more (up to a pebibyte).")
    return mib * MIB

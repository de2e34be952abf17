"""The admin console: every node and replica, the host supervisors' buttons, a raw-data browser.

The admin flag is re-read from the account on every visit (the one in the
session is only for drawing the nav bar), so taking it away takes effect at once.

A storage replica's state combines what it says itself (``status``) with
what its host's supervisor says (:mod:`shards.control`): *alive* (it answers),
*disabled* (its supervisor reports it stopped), *unreachable* (running, or
unknown, but silent).  Disable is the supervisor's kill -9; restart is kill -9
then start, so a node that really crashed can be brought back too.  Either
asks first when it would leave the replica's group without a majority.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from werkzeug.exceptions import Forbidden, NotFound, ServiceUnavailable
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from raftkv.errors import ConfigError, UnavailableError
from shards.control import ControlError, supervisor_for
from shards.model import accounts, outbound, registry

from .admin_metrics import metrics_targets, snapshot
from .auth import current_user, login_required
from .pages import PAGE_SCRIPT_HASH
from .pages import _subresource_hash as subresource_hash  # noqa: PLC2701 - pages.js's way
from .pagestore import together

if TYPE_CHECKING:
    from raftkv.cluster import ReplicaConfig
    from raftkv.interface import KeyValueStore

    from .app import Portal, Request
    from .pagestore import Key

PAGE = 10            # rows per page of the data browser
CELLS_SHOWN = 20     # cells shown per row on a page; the row view shows all
TEXT_SHOWN = 300     # characters of a value shown before it is cut
HEX_SHOWN = 64       # bytes of a binary value shown as hex
PREV_SCANS = 400     # scans spent finding the previous page (400 x 25 rows)
# Fields of our own records that are never shown, even to an admin: a password
# hash on a page is one screenshot away from an offline guessing attack.
SECRET_FIELDS = frozenset({"hash", "password", "secret", "token"})
REDACTED = "(hidden)"
# The charts' own script, allowed by its hash like the page script (docs/architecture.md,
# "Pages"); the page fetches its JSON from this site and nowhere else (and the page script
# may register the failover worker: portal.failover).
ADMIN_SCRIPT = "/static/admin.js"
ADMIN_SCRIPT_HASH = subresource_hash("admin.js")
CHARTS_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
              "frame-ancestors 'none'; base-uri 'none'; connect-src 'self'; worker-src 'self'; "
              f"script-src '{PAGE_SCRIPT_HASH}' '{ADMIN_SCRIPT_HASH}'")


def show_value(value: bytes) -> dict[str, Any]:
    """How the data browser shows one value: never raw markup, never megabytes.

    Returns ``{"kind", "text", "size"}``: printable UTF-8 as text, our own
    msgpack records decoded (blob manifests named as such), anything else as
    hex; every form cut to a few hundred characters.
    """
    size = len(value)
    try:
        text = value.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
            return {"kind": "text", "text": _cut(text, size), "size": size,
                    "times": times_in(_number(text))}
    except UnicodeDecodeError:
        pass
    try:
        decoded = msgpack.unpackb(value, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError):
        decoded = None
    shown = _decoded_view(value, decoded, size)
    shown["times"] = times_in(decoded) if shown["kind"] == "msgpack" else []
    return shown


def _number(text: str) -> float | None:
    try:
        return float(text) if len(text) < 24 else None
    except ValueError:
        return None


def _decoded_view(value: bytes, decoded: Any, size: int) -> dict[str, Any]:
    if isinstance(decoded, dict) and set(decoded) == {"v", "size", "chunks"}:
        chunks = decoded["chunks"]
        return {"kind": "blob", "size": size,
                "text": f"large value: {decoded['size']:,} bytes in "
                        f"{len(chunks) if isinstance(chunks, list) else '?'} chunk(s) beside Raft"}
    if isinstance(decoded, dict):
        decoded = {k: REDACTED if k in SECRET_FIELDS else v for k, v in decoded.items()}
    if isinstance(decoded, (dict, list, int, float, str)) and size > 1:
        return {"kind": "msgpack", "text": _cut(repr(decoded), size), "size": size}
    shown = value[:HEX_SHOWN].hex(" ")
    return {"kind": "hex", "size": size,
            "text": shown + (f" … ({size:,} bytes)" if size > HEX_SHOWN else "")}


def _cut(text: str, size: int) -> str:
    if len(text) <= TEXT_SHOWN:
        return text
    return f"{text[:TEXT_SHOWN]} … ({size:,} bytes)"


# Unix times a value may hold that the browser shows as dates: 2000-01-01 to 2100-01-01.
TIMES_FROM, TIMES_TO = 946_684_800, 4_102_444_800


@dataclass(frozen=True)
class Place:
    """Where a page of the data browser starts: after ``after`` in ``shard`` ("" = its start)."""

    shard: int
    after: str = ""


def times_in(decoded: Any) -> list[tuple[str, float]]:
    """``(field, Unix time)`` of the numbers in a value that look like recent times: the
    value itself, or a field of a map (one level down too: a session's record)."""
    def when(value: Any) -> float | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and TIMES_FROM <= value < TIMES_TO:
            return float(value)
        return None
    if not isinstance(decoded, dict):
        at = when(decoded)
        return [("", at)] if at is not None else []
    found = []
    for key, value in decoded.items():
        inner = value.items() if isinstance(value, dict) else [("", value)]
        for sub, item in inner:
            at = when(item)
            if at is not None:
                found.append((f"{key}.{sub}" if sub else str(key), at))
    return found[:8]


def page_at(client: KeyValueStore, shards: int, start: Place,
            size: int = PAGE) -> tuple[list[tuple[int, str, dict[str, Any]]], Place | None]:
    """``size`` rows from ``start`` on, continuing into the next shards when one ends:
    ``([(shard, row, cells)], where the next page starts or None)``.  Empty shards cost
    one scan each, so a page costs at most one scan per shard."""
    rows: list[tuple[int, str, dict[str, Any]]] = []
    shard, after = start.shard, start.after
    while shard < shards and len(rows) <= size:
        wanted = size + 1 - len(rows)  # one more than shown: is there a next page?
        page = client.scan(shard, after, limit=wanted)
        rows += [(shard, row, cells) for row, cells in page]
        if len(page) == wanted:
            break
        shard, after = shard + 1, ""
    if len(rows) <= size:
        return rows, None
    last = rows[size - 1]
    return rows[:size], Place(last[0], last[1])


def _tail(client: KeyValueStore, shard: int, before: str | None, keep: int) -> list[str]:
    """The last ``keep`` rows of ``shard`` below ``before`` (None: the whole shard).  The
    store scans forward only: this walks the shard from its start, for at most
    :data:`PREV_SCANS` scans (past that, the rows are the last ones it saw)."""
    window: list[str] = []
    after = ""
    for _ in range(PREV_SCANS):
        page = client.scan(shard, after, limit=25)
        for row, _cells in page:
            if before is not None and row >= before:
                return window
            window = [*window[-(keep - 1):], row] if keep > 1 else [row]
        if len(page) < 25:
            break
        after = page[-1][0]
    return window


def place_before(client: KeyValueStore, first: tuple[int, str],
                 size: int = PAGE) -> Place | None:
    """Where the page before the one starting at row ``first`` = ``(shard, row)`` starts,
    going back into earlier shards as needed; None if nothing comes before it."""
    shard, before = first
    window: list[tuple[int, str]] = []
    bound: str | None = before
    while shard >= 0 and len(window) <= size:
        window = [(shard, row) for row in _tail(client, shard, bound, size + 1 - len(window))
                  ] + window
        shard, bound = shard - 1, None
    if not window:
        return None
    if len(window) <= size:
        return Place(0)  # fewer than a page before: the first page
    return Place(*window[0])  # the page begins right after the row before it


def _row_view(row: str, cells: dict[str, Any], limit: int | None, shard: int,
              group: int | None) -> dict[str, Any]:
    shown = sorted(cells.items())[:limit] if limit else sorted(cells.items())
    return {"row": row, "more": len(cells) - len(shown), "shard": shard, "group": group,
            "cells": [{"col": col, "version": cell.version, **show_value(cell.value)}
                      for col, cell in shown]}


class AdminViews:
    """Mixin of :class:`portal.app.Portal`: the admin pages."""

    def _require_admin(self: Portal, request: Request) -> None:
        if not accounts.is_admin(self.client(), current_user(request)):
            raise Forbidden("The admin console is for administrators only.")

    def _supervised(self: Portal) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Every supervised process by name, and the supervisors that did not answer."""
        processes: dict[str, dict[str, Any]] = {}
        silent = []
        for host in sorted(self.config.supervisors):
            try:
                for proc in supervisor_for(self.config.cluster, host, timeout=2.0).processes():
                    processes[str(proc.get("name"))] = {**proc, "host": host}
            except ControlError:
                silent.append(host)
        return processes, silent

    def cells_admin(self: Portal, user: str) -> list[Key]:
        """The account record (the admin flag), confirmed with the session."""
        return [(accounts.account_row(user), accounts.ACCOUNT_COL)]

    @login_required
    def on_admin(self: Portal, request: Request) -> Response:
        client = self.client()
        account = self.cells_admin(current_user(request))
        # Each part is shown even when another cannot be had: the registry lives in
        # the store, the replicas and supervisors answer for themselves.
        parts: list[Callable[[], Any]] = [
            self._supervised, lambda: _or_none(lambda: registry.list_nodes(client)),
            lambda: _or_none(client.status)]
        if all(key in client.found for key in account):
            # The admin flag first: its cell came with the session, in the request's first
            # round trip, so a non-admin makes the worker ask no supervisor or replica.
            self._require_admin(request)
            results = together(*parts)
        else:
            # A worker that did not know this session yet could not name the account in
            # the first round trip: the flag is read with the rest, as one round trip
            # (two in all, like every page), and decides before anything they met is
            # raised or shown -- a non-admin gets a 403, never another part's error.
            _, *caught = together(lambda: client.confirm(account),
                                  *(functools.partial(_caught, part) for part in parts))
            self._require_admin(request)
            results = [_raised(outcome) for outcome in caught]
        (processes, silent), listed, status = results
        nodes: list[dict[str, Any]] | None = None
        if listed is not None:
            nodes = [{**vars(n), "state": _node_state(n.alive, processes.get(n.name))}
                     for n in sorted(listed, key=lambda n: (n.kind, n.name))]
        statuses = {s["name"]: s for s in status} if status is not None else {}
        replicas = []
        for group in self.config.cluster.all_groups():  # the config group (0) first
            for replica in group.replicas:
                status = statuses.get(replica.name, {})
                replicas.append({
                    "role": None, "term": None, "commit_index": None, "applied_index": None,
                    **status, "name": replica.name, "group": group.id, "addr": replica.client,
                    "host": replica.host, "state": _replica_state(status, processes.get(replica.name)),
                    "controllable": replica.host in self.config.supervisors})
        return self.render(request, "admin.html", nodes=nodes, replicas=replicas,
                           silent=silent, now=time.time())

    @login_required
    def on_admin_node(self: Portal, request: Request, name: str, action: str) -> Response:
        """Disable (kill -9) or restart (kill -9, start) one storage replica through its supervisor."""
        self._require_admin(request)
        cluster = self.config.cluster
        try:
            replica = cluster.replica(name)
            supervisor = supervisor_for(cluster, replica.host)
        except ConfigError:
            raise NotFound(f"No storage replica named {name!r} can be controlled.") from None
        alive = self._alive_in_group(replica)
        majority = len(cluster.group(replica.group).replicas) // 2 + 1
        if (name in alive and len(alive) - 1 < majority
                and request.form.get("confirm") != "yes"):
            return self.render(request, "admin_confirm.html", status=409, name=name,
                               action=action, group=replica.group, alive=sorted(alive),
                               majority=majority)
        try:
            supervisor.stop(name)
            if action == "restart":
                supervisor.start(name)
        except ControlError as exc:
            raise ServiceUnavailable(f"The supervisor of host {replica.host!r} did not do it: "
                                     f"{exc}") from None
        return redirect("/admin", 303)

    def _alive_in_group(self: Portal, replica: ReplicaConfig) -> set[str]:
        names = {r.name for r in self.config.cluster.group(replica.group).replicas}
        try:
            return {s["name"] for s in self.client().status()
                    if s.get("alive") and s.get("name") in names}
        except UnavailableError:
            return set()

    def _group_of_shard(self: Portal, shard: int) -> int | None:
        """The group serving ``shard`` as this worker routes it (None: not known here)."""
        route = getattr(self.worker_client(), "group_of_shard", None)
        try:
            return int(route(shard)) if route is not None else None
        except (KeyError, ValueError, TypeError):
            return None

    @login_required
    def on_admin_data(self: Portal, request: Request) -> Response:
        """The raw-data browser: :data:`PAGE` rows at a time over the whole key space
        (one shard after another, each row with its shard and group), or one row whole."""
        self._require_admin(request)
        client = self.client()
        shards = self.config.cluster.shards
        row_key = request.args.get("row")
        if row_key:
            cells = client.get_row(row_key)
            shard = client.shard_of(row_key)
            return self.render(request, "admin_data.html", shards=shards, shard=shard,
                               row_key=row_key, prev=None, next=None, rows=[
                                   _row_view(row_key, cells, None, shard,
                                             self._group_of_shard(shard))] if cells else [])
        try:
            shard = int(request.args.get("shard", "0"))
        except ValueError:
            shard = -1
        if not 0 <= shard < shards:
            raise NotFound(f"Shards are numbered 0 to {shards - 1}.")
        start = Place(shard, request.args.get("after", ""))
        found, following = page_at(client, shards, start)
        rows = [_row_view(row, cells, CELLS_SHOWN, at, self._group_of_shard(at))
                for at, row, cells in found]
        before = None
        if start != Place(0):
            before = place_before(client, (found[0][0], found[0][1]) if found
                                  else (shards - 1, "\U0010ffff"))
        return self.render(request, "admin_data.html", shards=shards, shard=shard, row_key="",
                           rows=rows, next=following, prev=before)

    @login_required
    def on_admin_queue(self: Portal, request: Request) -> Response:
        """The outbound mail queue: pending, retrying (next attempt, last error), bounced."""
        self._require_admin(request)
        client = self.client()
        entries, bounces = together(lambda: outbound.pending(client),
                                    lambda: outbound.bounced(client))
        now = time.time()
        retrying = [e for e in entries if e.attempts > 0]
        pending = [e for e in entries if e.attempts == 0]
        return self.render(request, "admin_queue.html", pending=pending, retrying=retrying,
                           bounced=bounces, now=now)


    @login_required
    def on_admin_charts(self: Portal, request: Request) -> Response:
        """Requests per second and latency per process, drawn by ``static/admin.js``."""
        self._require_admin(request)
        found = metrics_targets(self.config.cluster, self.config.frontend)
        response = self.render(request, "admin_charts.html", targets=found,
                               admin_script=ADMIN_SCRIPT, admin_script_hash=ADMIN_SCRIPT_HASH)
        response.headers["Content-Security-Policy"] = self.failover_policy(CHARTS_CSP)
        return response

    @login_required
    def on_admin_charts_json(self: Portal, request: Request) -> Response:
        """Every process's running totals now (portal.admin_metrics); the script makes rates."""
        self._require_admin(request)
        found = metrics_targets(self.config.cluster, self.config.frontend)
        body = snapshot(found) if found is not None else {"enabled": False}
        return Response(json.dumps(body), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})


class _Failed:
    """An exception held until the admin flag has been checked (on_admin)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _caught(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - raised by _raised, once the caller may see it
        return _Failed(exc)


def _raised(outcome: Any) -> Any:
    if isinstance(outcome, _Failed):
        raise outcome.error
    return outcome


def _or_none[T](read: Callable[[], T]) -> T | None:
    """What ``read`` returns, or None if the store cannot answer it now."""
    try:
        return read()
    except UnavailableError:
        return None


def _node_state(alive: bool, proc: dict[str, Any] | None) -> str:
    if alive:
        return "alive"
    if proc is not None and not proc.get("alive"):
        return "disabled"
    return "unreachable"


def _replica_state(status: dict[str, Any], proc: dict[str, Any] | None) -> str:
    if status.get("alive"):
        return "alive"
    if proc is not None and not proc.get("alive"):
        return "disabled"
    return "unreachable"

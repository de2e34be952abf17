"""Save the whole cluster into one backup file while it serves.

The cut (docs/operations.md, "Backup and restore"): every group is frozen
(:mod:`raftkv.freezing`), every group's frozen state is opened from one read
transaction at its leader (:mod:`raftkv.backup_offers`), then every group is
thawed; only if each thaw finds its freeze still in force is the cut kept.  So
writes pause for those few round trips, and the file holds, for every group,
its state at its freeze entry.  Since no group applied a write between its
freeze and its thaw, and every freeze was in force before the first thaw, no
write in the backup can depend on one that is not in it: a client that saw a
write acknowledged could only issue a later one after the thaws.  Every write
acknowledged before the save began is in it.

A shard move in progress is not saved half-way: the save waits (freezing and
thawing again) until every group has settled the latest configuration.  The
pages and chunks are read after the thaw, while the cluster writes on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import raftkv
from raftkv import diskkeys
from raftkv.backupfile import BackupCell, BackupWriter, GroupHeader
from raftkv.blobs import parse_manifest, read_index
from raftkv.cluster import CONFIG_GROUP_ID
from raftkv.errors import (
    Busy,
    ConfigurationPending,
    OverLimit,
    RaftKVError,
    UnavailableError,
)

from .client import Client
from .config import ConfigStore

FREEZE_SECONDS = 5.0   # a freeze ends by itself this long after it began, if nobody thaws it
ATTEMPTS = 20          # cuts tried before giving up (a move in progress, another backup)
RETRY_PAUSE = 0.5      # seconds between attempts


class BackupFailed(RaftKVError):
    """No cut could be taken (moves kept going, another backup), or a chunk was lost."""


@dataclass
class Saved:
    groups: int
    cells: int
    chunks: int
    bytes: int
    paused_ms: float   # from the first freeze sent to the last thaw answered
    attempts: int


@dataclass
class _Open:
    client: raftkv.Client
    offer: bytes
    addr: str
    meta: dict[str, Any]


class _TryAgain(Exception):
    pass


def save_backup(client: Client, path: Path, *,
                progress: Callable[[str], None] = lambda line: None) -> Saved:
    """Write a backup of every group of ``client``'s cluster to ``path``."""
    groups = _groups(client)
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for attempt in range(1, ATTEMPTS + 1):
            token = secrets.randbelow(1 << 62) + 1
            started = time.monotonic()
            try:
                opened = _cut(client, groups, token, pool)
            except (_TryAgain, Busy, ConfigurationPending, UnavailableError, OverLimit) as exc:
                # OverLimit: a group refused the freeze because it cannot yet tell that
                # every replica speaks the Raft format freezes need -- a replica down or
                # just reconnected has not said its hello again; that passes.
                progress(f"attempt {attempt}: {exc}; trying again")
                time.sleep(RETRY_PAUSE)
                continue
            paused_ms = (time.monotonic() - started) * 1000
            progress(f"cut taken: writes paused {paused_ms:.0f} ms")
            try:
                saved = _write(client, path, opened, progress)
            finally:
                _close_all(opened)
            saved.paused_ms, saved.attempts = paused_ms, attempt
            return saved
    raise BackupFailed(f"no cut in {ATTEMPTS} attempts (a shard move kept going, or another "
                       "backup held the groups); try again later")


def _groups(client: Client) -> dict[int, raftkv.Client]:
    """Every group: the cluster file's, and any the latest configuration adds."""
    client.refresh()
    gids = {g.id for g in client.cluster.all_groups()}
    config_group = client.config_group()
    if config_group is not None:
        for gid, addrs in ConfigStore(config_group, client.cluster.shards).query().groups.items():
            client.group_client(gid, addrs)
            gids.add(gid)
    return {gid: client.group_client(gid) for gid in sorted(gids)}


def _cut(client: Client, groups: dict[int, raftkv.Client], token: int,
         pool: ThreadPoolExecutor) -> dict[int, _Open]:
    """Freeze every group, open each one's state, thaw; the opened states."""
    opened: dict[int, _Open] = {}
    try:
        list(pool.map(lambda c: c.freeze(token, FREEZE_SECONDS), groups.values()))
        _check_settled(client, groups)

        def open_one(gid: int) -> None:
            answer = groups[gid].backup_open(token)
            opened[gid] = _Open(groups[gid], answer["offer"], answer["addr"], answer["meta"])
        list(pool.map(open_one, groups))
    except BaseException:
        _close_all(opened)
        _quietly(lambda: list(pool.map(lambda c: c.thaw(token), groups.values())))
        raise
    held = list(pool.map(lambda c: c.thaw(token), groups.values()))
    if not all(held):
        _close_all(opened)
        raise _TryAgain("a group's freeze ran out before every group was read")
    return opened


def _check_settled(client: Client, groups: dict[int, raftkv.Client]) -> None:
    config_group = client.config_group()
    if config_group is None:
        return
    latest = ConfigStore(config_group, client.cluster.shards).query()
    for gid, group in groups.items():
        if gid == CONFIG_GROUP_ID:
            continue
        state = group.shard_state()
        moving = state.get("incoming") or state.get("frozen")
        behind = gid in latest.groups and state.get("config_num") != latest.num
        if moving or behind:
            raise _TryAgain(f"group {gid} is moving shards (configuration "
                            f"{state.get('config_num')} of {latest.num})")


def _write(client: Client, path: Path, opened: dict[int, _Open],
           progress: Callable[[str], None]) -> Saved:
    shards = client.cluster.shards
    writer = BackupWriter(path, shards, sorted(opened), time.time(), client.cluster.secret)
    try:
        for gid, o in sorted(opened.items()):
            meta = o.meta
            ownership = meta.get("ownership") or {}
            owned = ownership.get("owned")
            writer.group(GroupHeader(
                gid=gid, applied_index=int(meta["applied_index"]), clock=float(meta["clock"]),
                counters={int(k): int(v) for k, v in meta["counters"]},
                config_num=int(ownership.get("config_num", 0)),
                owned=None if owned is None else tuple(owned)))
            before = writer.cells
            written: set[str] = set()
            for page in _pages(o):
                writer.cells_page(page)
                for cell in page:
                    if cell.is_blob:
                        _save_chunks(o.client, writer, cell.value, written)
            progress(f"group {gid}: {writer.cells - before} cells, {len(written)} chunks")
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return Saved(writer.groups, writer.cells, writer.chunks, path.stat().st_size, 0.0, 0)


def _pages(o: _Open) -> Iterator[list[BackupCell]]:
    after: bytes | None = b""
    while after is not None:
        raw, after = o.client.backup_read(o.addr, o.offer, after)
        page = []
        for key, packed in raw:
            name = diskkeys.decode_cell_key(key)
            cell = diskkeys.unpack_cell(packed)
            page.append(BackupCell(name.shard, name.row, name.col, cell.version, cell.is_blob,
                                   cell.expires, cell.value))
        yield page


def _save_chunks(group: raftkv.Client, writer: BackupWriter, manifest: bytes,
                 written: set[str]) -> None:
    """Every chunk a blob cell needs, once per group: its data chunks and, for a large
    value, its index chunks.  The garbage collector keeps a chunk ``gc_grace`` after
    its last cell is gone, so a save shorter than that finds every one."""
    parsed = parse_manifest(manifest)

    def save(name: str) -> bytes | None:
        if name in written:
            return None
        try:
            data = group.fetch_chunk(name)
        except UnavailableError as exc:
            raise BackupFailed(f"chunk {name[:12]} could not be read from its group ({exc}); "
                               "a save must end within [blobs] gc_grace") from None
        writer.chunk(name, data)
        written.add(name)
        return data

    for name in parsed.chunks:
        save(name)
    for name in parsed.index:
        data = save(name)
        if data is None:
            continue  # its data chunks were saved with it
        for data_name in read_index(data):
            save(data_name)


def _close_all(opened: dict[int, _Open]) -> None:
    for o in opened.values():
        _quietly(partial(o.client.backup_done, o.addr, o.offer))


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except RaftKVError:
        pass  # best effort: an offer closes itself when idle, a freeze runs out by itself

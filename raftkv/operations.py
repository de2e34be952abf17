"""Every operation of the store, declared once.

A request names its operation by a string (``{"op": "get", ...}``).  This
module is the only place that says what each name is: whether it goes through
the log as a read or a write or is answered by the replica's server itself,
how the ``WrongShard`` check finds the shard of the data it touches, whether
it carries an upload id, and whether it waits for one of the node's chunk
slots.  The store (:mod:`raftkv.store`, :mod:`raftkv.ownership`) and the
server (:mod:`raftkv.server`) consult only this table; each binds its handlers
with :func:`bind_handlers`, which fails at import when a registered operation
has no handler or a handler has no registry line.

Adding an operation is: its handler (``Store._op_<name>``, or
``NodeServer._op_<name>`` for one answered outside the log), its line
below, the :class:`raftkv.Client` method that sends it, and tests.
The story: (docs/architecture.md, "Operations").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    """Where an operation is answered."""

    READ = "read"    # linearizable (through the log, or ReadIndex), or from one replica's state (stale)
    WRITE = "write"  # through the log, exactly once per (client id, sequence number)
    NODE = "node"    # by the replica's server, outside the log (status, blob chunks)


class ShardBy(enum.Enum):
    """How the ``WrongShard`` check finds the shard an operation's data lives in."""

    ROW = "row"        # the shard of the command's ``row``
    NUMBER = "number"  # the command's ``shard`` number
    CELLS = "cells"    # the shard of each row of the command's ``cells``
    NONE = "none"      # no shard data, or a configuration step that checks its own number


@dataclass(frozen=True, slots=True)
class Operation:
    """One line of the registry.  ``shard`` has no default: every line states it, so an
    operation on shard data cannot skip the ``WrongShard`` check by omission."""

    name: str
    kind: Kind
    shard: ShardBy
    upload: bool = False  # may carry ``upload``: the intent its blob cells retire
    chunk: bool = False   # moves a blob chunk: waits for one of the node's chunk slots
    # A read of the table alone: the leader answers it from a read transaction once it
    # has confirmed it leads (ReadIndex, raftkv/node/read_index.py).  The other reads
    # answer from state the tick thread keeps in memory, which may run ahead of the
    # store's last commit; they go through the log.
    read_index: bool = False
    write: bool = field(init=False)  # kind is WRITE: a plain attribute for the hot path

    def __post_init__(self) -> None:
        object.__setattr__(self, "write", self.kind is Kind.WRITE)


READ, WRITE, NODE = Kind.READ, Kind.WRITE, Kind.NODE
ROW, NUMBER, CELLS, NONE = ShardBy.ROW, ShardBy.NUMBER, ShardBy.CELLS, ShardBy.NONE

OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    # -- the table ------------------------------------------------------------
    Operation("get", READ, ROW, read_index=True),
    Operation("get_row", READ, ROW, read_index=True),
    Operation("get_cells", READ, CELLS, read_index=True),  # any rows of the group's shards
    Operation("scan", READ, NUMBER, read_index=True),
    Operation("put", WRITE, ROW, upload=True),
    Operation("cput", WRITE, ROW, upload=True),
    Operation("mutate_row", WRITE, ROW, upload=True),
    Operation("delete", WRITE, ROW),
    # -- barriers and upkeep ----------------------------------------------------
    Operation("noop", READ, NONE),
    Operation("intent", WRITE, NONE),
    Operation("intent_end", WRITE, NONE),
    Operation("expire_intents", WRITE, NONE),
    Operation("expire_cells", WRITE, NONE),  # each cell's shard is checked as it goes
    # -- shard moves (raftkv/ownership.py): each checks its configuration number --
    Operation("begin_config", WRITE, NONE),
    Operation("import_shard", WRITE, NONE),
    Operation("adopt_shard", WRITE, NONE),
    Operation("drop_shard", WRITE, NONE),
    Operation("export_shard", READ, NONE),
    Operation("shard_state", READ, NONE),
    # -- backups: every group frozen for a moment, then read (raftkv/freezing.py) --
    Operation("freeze", WRITE, NONE),
    Operation("thaw", WRITE, NONE),
    # -- answered by the replica's server ----------------------------------------
    Operation("status", NODE, NONE),
    Operation("blob_put", NODE, NONE, chunk=True),
    Operation("blob_get", NODE, NONE, chunk=True),
    # a lagging follower pulls the leader's snapshot (raftkv/snapshot_pull.py)
    Operation("snapshot_read", NODE, NONE, chunk=True),
    Operation("snapshot_done", NODE, NONE),
    # a backup reads a frozen state from one read transaction (raftkv/backup_offers.py)
    Operation("backup_open", NODE, NONE),
    Operation("backup_read", NODE, NONE, chunk=True),
    Operation("backup_done", NODE, NONE),
)}

HANDLER_PREFIX = "_op_"  # the handler of operation x is the method _op_x


def unknown_operation(op: object) -> str:
    """What a replica answers (ProtocolError) for an operation it does not know.  Every
    release has said exactly this, so a newer client can tell an older replica by it
    and fall back to operations that replica knows (docs/store-promises.md, "Formats
    and upgrades")."""
    return f"unknown operation {op!r}"

Handler = Callable[..., Any]


def bind_handlers(cls: type, prefix: str, kinds: Iterable[Kind]) -> dict[str, tuple[Operation, Handler]]:
    """``name -> (operation, cls.<prefix><name>)`` for the operations of ``kinds``.

    :raises ImportError: a registered operation of ``kinds`` has no handler on
        ``cls``, or ``cls`` has a handler that no registry line names.
    """
    wanted = {op.name: op for op in OPERATIONS.values() if op.kind in set(kinds)}
    handlers = {name[len(prefix):] for name in dir(cls) if name.startswith(prefix)}
    missing, unregistered = sorted(wanted.keys() - handlers), sorted(handlers - wanted.keys())
    if missing or unregistered:
        raise ImportError(f"{cls.__name__}: operations without a handler {missing}, "
                          f"handlers without a registry line {unregistered} (raftkv/operations.py)")
    return {name: (op, getattr(cls, prefix + name)) for name, op in wanted.items()}

"""Which shards a group serves, and the steps by which a group changes configuration.

A group of a cluster without a config group is *unmanaged*: it serves every
shard (the static map decides which ones clients send it).  With a config
group, a group serves exactly the shards its configuration gives it and
answers ``WrongShard`` for the rest -- before its first configuration, none:
a group that comes up late must not accept writes for shards that others
serve meanwhile.  The group's own reconfigurer (:mod:`shards.reconfig`) learns
configurations from the config group and drives these commands, each an entry
in the group's log; configurations are applied one at a time, in order:

1. ``begin_config(n, shards, incoming, outgoing)``, only when the group has
   settled configuration ``n - 1``: ``outgoing`` shards are frozen (no longer
   served, kept for their new owners to pull), ``incoming`` shards are
   awaited, the rest of ``shards`` is served from now on.  Each incoming and
   outgoing shard names the other group and its replicas' addresses, so a
   move in progress never needs the config group again.
2. For each incoming shard, ``import_shard(n, s, rows, counter)`` page by page
   (each under the entry cap) with what the old owner's
   ``export_shard(n, s, after)`` returns -- only once the old owner has frozen
   ``s`` for configuration ``n``; a frozen shard never changes, so any of its
   replicas that has frozen it can answer, outside the log -- then
   ``adopt_shard(n, s)``: served.
3. For each outgoing shard, once its new owner has adopted it,
   ``drop_shard(n, s)``: the copy is deleted (its chunks then fall to GC).

The group has settled ``n`` when nothing is incoming and nothing is frozen;
only then may ``n + 1`` begin.  So an old owner never moves past the
configuration its frozen copy belongs to, and every export finds the shard as
it was when it stopped being served.  Every command is idempotent, so a
reconfigurer that dies half-way (or a new leader's) simply carries on.

The ownership check runs *after* a write's exactly-once check (see
:meth:`raftkv.store.Store.apply`): a retried write that the old owner applied
before the freeze gets its stored answer, so ``WrongShard`` proves the write
never applied there and the client may send it to the new owner.  That is why
the dedup table does not travel with a shard; it relies on ``shards.Client``
never using one client id with two groups (it keeps one raftkv.Client each).  Commands carrying a
configuration other than the one the group is in are refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import diskkeys
from .diskkeys import CellValue
from .keys import shard_of
from .operations import Operation, ShardBy

if TYPE_CHECKING:
    from .tables import Tables

Result = dict[str, Any]
Peer = tuple[int, tuple[str, ...]]  # the other group of a move: id, replicas' client addresses

EXPORT_CELLS = 2000          # cells per export page at most
EXPORT_BYTES = 1024 * 1024   # and about this many bytes (an answer is one frame of 4 MiB)
MAX_NUMBER = 1 << 63         # group ids, versions and counters fit the store's fields


def _error(name: str, message: str, **fields: Any) -> Result:
    return {"error": name, "message": message, **fields}


class ShardOwnership:
    """Mixin of :class:`raftkv.store.Store`: shard ownership and the configuration steps."""

    shard_count: int
    counters: dict[int, int]
    _meta_dirty: bool      # the store writes the ownership back at the end of the entry
    _counters_dirty: bool  # and the counters

    # Provided by the store: the tables of the current transaction, and whether a
    # cell has not expired.
    @property
    def _t(self) -> Tables:
        raise NotImplementedError

    def live(self, cell: CellValue) -> bool:
        raise NotImplementedError

    def _init_ownership(self, managed: bool) -> None:
        self.managed = managed              # a config group decides what we serve
        self.config_num = 0
        self.owned: set[int] | None = set() if managed else None  # None: every shard
        self.incoming: dict[int, Peer] = {}  # awaited, not served: shard -> old owner
        self.frozen: dict[int, Peer] = {}    # held, not served (moving out): shard -> new owner

    # -- the check --------------------------------------------------------------

    def refusal(self, operation: Operation, command: dict[str, Any]) -> Result | None:
        """``WrongShard`` for an operation on data of a shard this group does not serve
        (the registry, raftkv/operations.py, says how each finds its shard)."""
        if self.owned is None or operation.shard is ShardBy.NONE:
            return None
        if operation.shard is ShardBy.NUMBER:
            shard = command.get("shard")
            if not isinstance(shard, int):
                return None  # the operation itself answers ProtocolError
        elif operation.shard is ShardBy.CELLS:
            # One cell elsewhere refuses the whole read: the client routes it again.
            shard = next((s for s in self._shards_of_cells(command.get("cells"))
                          if s not in self.owned), None)
        else:
            row = command.get("row")
            shard = shard_of(row, self.shard_count) if isinstance(row, str) else None
        if shard is None or shard in self.owned:
            return None
        return _error("WrongShard", f"this group does not serve shard {shard} "
                      f"in configuration {self.config_num}", shard=shard,
                      config_num=self.config_num)

    def _shards_of_cells(self, cells: object) -> list[int]:
        """The shards of ``get_cells``' rows (of a malformed list, those it names well:
        the read itself answers ProtocolError)."""
        if not isinstance(cells, list):
            return []
        return [shard_of(c[0], self.shard_count) for c in cells
                if isinstance(c, list) and c and isinstance(c[0], str)]

    def _current(self, command: dict[str, Any]) -> int | Result:
        """The command's configuration number, or the refusal if it is not the group's."""
        num = command["config"]
        if not isinstance(num, int) or num != self.config_num:
            return _error("ConfigurationPending", f"configuration {num!r} is not this group's "
                          f"({self.config_num})", config_num=self.config_num)
        return num

    def _shard(self, value: object) -> int:
        if not isinstance(value, int) or not 0 <= value < self.shard_count:
            raise ValueError(f"no shard {value!r}")
        return value

    def _peers(self, entries: object) -> dict[int, Peer]:
        """``[[shard, group, [addr, ...]], ...]`` checked, as shard -> (group, addrs)."""
        if not isinstance(entries, list):
            raise TypeError("a list of [shard, group, addresses]")
        peers: dict[int, Peer] = {}
        for shard, gid, addrs in entries:
            if not isinstance(gid, int) or not 0 <= gid < MAX_NUMBER or not isinstance(
                    addrs, list) or not addrs or not all(
                    isinstance(a, str) for a in addrs):
                raise TypeError("a peer is a group id and its replicas' addresses")
            peers[self._shard(shard)] = (gid, tuple(addrs))
        return peers

    # -- the steps ----------------------------------------------------------------

    def _op_begin_config(self, c: dict[str, Any]) -> Result:
        num = c["config"]
        if not isinstance(num, int):
            raise TypeError("config is a number")
        if num == self.config_num:
            return self._op_shard_state(c)  # begun already: a retry
        if num != self.config_num + 1:
            return _error("ConfigurationPending", f"configuration {num} does not follow this group's "
                          f"{self.config_num}", config_num=self.config_num)
        if self.incoming or self.frozen:
            return _error("ConfigurationPending", f"configuration {self.config_num} is still settling",
                          config_num=self.config_num)
        shards = {self._shard(s) for s in c["shards"]}
        incoming, outgoing = self._peers(c["incoming"]), self._peers(c["outgoing"])
        if not incoming.keys() <= shards or outgoing.keys() & shards:
            raise ValueError("incoming shards are ours, outgoing ones are not")
        self.owned = shards - incoming.keys()
        self.incoming, self.frozen, self.config_num = incoming, outgoing, num
        self._meta_dirty = True
        return self._op_shard_state(c)

    def _op_shard_state(self, c: dict[str, Any]) -> Result:
        def listed(peers: dict[int, Peer]) -> list[list[Any]]:
            return [[s, gid, list(addrs)] for s, (gid, addrs) in sorted(peers.items())]
        return {"config_num": self.config_num,
                "owned": None if self.owned is None else sorted(self.owned),
                "incoming": listed(self.incoming), "frozen": listed(self.frozen)}

    def _op_export_shard(self, c: dict[str, Any]) -> Result:
        """A page of a frozen shard's cells, from the cursor ``after`` = [row, column].

        Pages end within a row if need be (a row may hold thousands of cells);
        the answer's ``after`` is where the next page starts, None at the end.
        A cell is ``[column, version, value, is_blob]``, with its expiry time
        after them if it expires; expired cells stay behind.
        """
        num, shard = c["config"], self._shard(c["shard"])
        if not isinstance(num, int):
            raise TypeError("config is a number")
        if num > self.config_num:
            return _error("ConfigurationPending", f"not yet in configuration {num} "
                          f"(still in {self.config_num})", config_num=self.config_num)
        if num < self.config_num or shard not in self.frozen:
            return _error("ConfigurationPending", f"shard {shard} is not moving out of here in "
                          f"configuration {num}", config_num=self.config_num)
        # The shard is frozen: its cells stay as they are until dropped, and the
        # store's order is the export's.
        start, end = diskkeys.shard_prefix(shard), diskkeys.prefix_end(diskkeys.shard_prefix(shard))
        if c.get("after") is not None:
            after_row, after_col = c["after"]
            if not isinstance(after_row, str) or not isinstance(after_col, str):
                raise TypeError("after is [row, column]")
            start = diskkeys.successor(diskkeys.cell_key(shard, after_row, after_col))
        page: list[list[Any]] = []
        cells = size = 0
        for key, cell in self._t.cells(start, end):
            if not self.live(cell):
                continue
            name = diskkeys.decode_cell_key(key)
            cost = len(key) + len(cell.value) + 16
            if page and (cells >= EXPORT_CELLS or size + cost > EXPORT_BYTES):
                last_row, last_col = page[-1][0], page[-1][1][-1][0]
                return {"rows": page, "after": [last_row, last_col],
                        "counter": self.counters.get(shard, 0)}
            fields = [name.col, cell.version, cell.value, cell.is_blob,
                      *(() if cell.expires is None else (cell.expires,))]
            if page and page[-1][0] == name.row:
                page[-1][1].append(fields)
            else:
                page.append([name.row, [fields]])
            cells, size = cells + 1, size + cost
        return {"rows": page, "after": None, "counter": self.counters.get(shard, 0)}

    def _op_import_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if shard not in self.incoming:
            return _error("ConfigurationPending", f"shard {shard} is not awaited here")
        upload = c.get("upload")
        if upload is not None and (not isinstance(upload, int) or self._t.intent(upload) is None):
            # The chunks these cells name were protected by that intent; with it
            # gone a collector may have taken them: copy them again.
            return _error("UploadExpired", "the pull's intent expired: pull the chunks again")
        rows = []  # every row checked before any is written: all or nothing
        for row, cells in c["rows"]:
            if not isinstance(row, str) or shard_of(row, self.shard_count) != shard:
                raise ValueError(f"row {row!r} is not in shard {shard}")
            checked = []
            for col, version, value, is_blob, *expiry in cells:
                if not isinstance(value, bytes) or not isinstance(col, str):
                    raise TypeError("cells hold bytes under string columns")
                if expiry and (not isinstance(expiry[0], (int, float)) or isinstance(
                        expiry[0], bool) or not math.isfinite(expiry[0]) or expiry[0] < 0 or len(expiry) > 1):
                    raise TypeError("a cell's expiry is a finite time")
                if not isinstance(version, int) or not 0 < version < MAX_NUMBER:
                    raise ValueError("a cell's version is a positive 63-bit number")
                expires = float(expiry[0]) if expiry else None
                checked.append((col, CellValue(int(version), value, bool(is_blob), expires)))
            rows.append((row, checked))
        for row, checked in rows:  # and every key fits (the source held them: it does)
            for col, _cell in checked:
                if len(diskkeys.cell_key(shard, row, col)) > 511 - diskkeys.EXPIRY.size:
                    raise ValueError("a key too long for the store")
        counter = c["counter"]
        if not isinstance(counter, int) or not 0 <= counter < MAX_NUMBER:
            raise ValueError("a shard's counter is a 63-bit number")
        for row, checked in rows:
            for col, cell in checked:
                self._t.put_cell(diskkeys.cell_key(shard, row, col), cell)
        self.counters[shard] = max(self.counters.get(shard, 0), counter)
        self._counters_dirty = True
        if upload is not None:
            self._t.delete_intent(upload)  # the cells protect their chunks from now on
        return {"imported": len(rows)}

    def _op_adopt_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if self.owned is not None and shard in self.owned:
            return {"adopted": shard}  # a retry
        if shard not in self.incoming:
            return _error("ConfigurationPending", f"shard {shard} is not awaited here")
        del self.incoming[shard]
        assert self.owned is not None  # begin_config made the group managed
        self.owned.add(shard)
        self._meta_dirty = True
        return {"adopted": shard}

    def _op_drop_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if shard in self.frozen:
            prefix = diskkeys.shard_prefix(shard)
            self._t.delete_cells(prefix, diskkeys.prefix_end(prefix))
            del self.frozen[shard]
            self._meta_dirty = True
        return {"dropped": shard}

    # -- snapshots ----------------------------------------------------------------

    def ownership_snapshot(self) -> dict[str, Any]:
        return self._op_shard_state({})

    def restore_ownership(self, state: dict[str, Any] | None) -> None:
        self._init_ownership(self.managed)
        if state:
            self.config_num = int(state["config_num"])
            if state["owned"] is not None:
                self.owned = set(state["owned"])
            elif self.config_num > 0 or not self.managed:
                self.owned = None
            self.incoming = self._peers(state.get("incoming", []))
            self.frozen = self._peers(state.get("frozen", []))

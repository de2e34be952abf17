"""Which shards a group serves, and the steps by which a group changes configuration.

A group starts *unmanaged*: it serves every shard (the static map decides
which ones clients send it).  Once it applies a configuration (DESIGN.md
section 4) it serves exactly its owned shards and answers ``WrongShard`` for
the rest.  The group's own reconfigurer (:mod:`shards.reconfig`) learns
configurations from the config group and drives these commands, each an entry
in the group's log; configurations are applied one at a time, in order:

1. ``begin_config(n, shards, incoming, outgoing)``, only when the group has
   settled configuration ``n - 1``: ``outgoing`` shards are frozen (no longer
   served, kept for their new owners to pull), ``incoming`` shards (shard ->
   the group that held it in ``n - 1``) are awaited, the rest of ``shards``
   is served from now on.
2. For each incoming shard, ``import_shard(n, s, rows, counter)`` page by page
   (each under the entry cap) with what the old owner's
   ``export_shard(n, s, after, limit)`` returns -- only once the old owner has
   frozen ``s`` for configuration ``n`` -- then ``adopt_shard(n, s)``: served.
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
the dedup table does not travel with a shard.  Commands carrying a
configuration other than the one the group is in are refused.
"""

from __future__ import annotations

from typing import Any

from .keys import shard_of

Result = dict[str, Any]

SHARD_OPS = frozenset({"begin_config", "import_shard", "adopt_shard", "drop_shard"})
SHARD_READS = frozenset({"export_shard", "shard_state"})
EXPORT_PAGE = 200          # rows per export page at most
EXPORT_BYTES = 1024 * 1024  # and about this many bytes of values (an answer is one frame)
DATA_OPS = frozenset({"get", "put", "delete", "cput", "mutate_row", "get_row"})


def _error(name: str, message: str, **fields: Any) -> Result:
    return {"error": name, "message": message, **fields}


class ShardOwnership:
    """Mixin of :class:`raftkv.store.Store`: shard ownership and the configuration steps."""

    shard_count: int
    shards: dict[int, dict[str, dict[str, tuple[int, bytes, bool]]]]
    counters: dict[int, int]
    blob_cells: dict[tuple[str, str], bytes]

    def _init_ownership(self) -> None:
        self.config_num = 0                  # 0: unmanaged, every shard is served
        self.owned: set[int] | None = None  # None: every shard
        self.incoming: dict[int, int] = {}  # shard -> group that held it: awaited, not served
        self.frozen: set[int] = set()       # held here, no longer served (moving out)

    # -- the check --------------------------------------------------------------

    def refusal(self, op: str, command: dict[str, Any]) -> Result | None:
        """``WrongShard`` for a data operation on a shard this group does not serve."""
        if self.owned is None:
            return None
        if op == "scan":
            shard = command.get("shard")
            if not isinstance(shard, int):
                return None  # the operation itself answers ProtocolError
        elif op in DATA_OPS:
            row = command.get("row")
            shard = shard_of(row, self.shard_count) if isinstance(row, str) else None
        else:
            return None
        if shard is None or shard in self.owned:
            return None
        return _error("WrongShard", f"this group does not serve shard {shard} "
                      f"in configuration {self.config_num}", shard=shard,
                      config_num=self.config_num)

    def _current(self, command: dict[str, Any]) -> int | Result:
        """The command's configuration number, or the refusal if it is not the group's."""
        num = command["config"]
        if not isinstance(num, int) or num != self.config_num:
            return _error("ConfigError", f"configuration {num!r} is not this group's "
                          f"({self.config_num})", config_num=self.config_num)
        return num

    def _shard(self, value: object) -> int:
        if not isinstance(value, int) or not 0 <= value < self.shard_count:
            raise ValueError(f"no shard {value!r}")
        return value

    # -- the steps ----------------------------------------------------------------

    def _op_begin_config(self, c: dict[str, Any]) -> Result:
        num = c["config"]
        if not isinstance(num, int):
            raise TypeError("config is a number")
        if num == self.config_num:
            return self._op_shard_state(c)  # begun already: a retry
        if num != self.config_num + 1:
            return _error("ConfigError", f"configuration {num} does not follow this group's "
                          f"{self.config_num}", config_num=self.config_num)
        if self.incoming or self.frozen:
            return _error("ConfigError", f"configuration {self.config_num} is still settling",
                          config_num=self.config_num)
        shards = {self._shard(s) for s in c["shards"]}
        incoming = {self._shard(s): int(gid) for s, gid in c["incoming"]}
        outgoing = {self._shard(s) for s in c["outgoing"]}
        if not incoming.keys() <= shards or outgoing & shards:
            raise ValueError("incoming shards are ours, outgoing ones are not")
        self.owned = shards - incoming.keys()
        self.incoming, self.frozen, self.config_num = incoming, outgoing, num
        return self._op_shard_state(c)

    def _op_shard_state(self, c: dict[str, Any]) -> Result:
        return {"config_num": self.config_num,
                "owned": None if self.owned is None else sorted(self.owned),
                "incoming": sorted([s, g] for s, g in self.incoming.items()),
                "frozen": sorted(self.frozen)}

    def _op_export_shard(self, c: dict[str, Any]) -> Result:
        num, shard = c["config"], self._shard(c["shard"])
        if not isinstance(num, int):
            raise TypeError("config is a number")
        if num > self.config_num:
            return _error("ConfigError", f"not yet in configuration {num} "
                          f"(still in {self.config_num})", config_num=self.config_num)
        if num < self.config_num or shard not in self.frozen:
            return _error("ConfigError", f"shard {shard} is not moving out of here in "
                          f"configuration {num}", config_num=self.config_num)
        after, limit = c.get("after", ""), max(1, min(int(c.get("limit") or 1), EXPORT_PAGE))
        table = self.shards.get(shard, {})
        rows = sorted(r for r in table if r > after)
        page, size = [], 0
        for row in rows[:limit]:
            if page and size > EXPORT_BYTES:
                break
            cells = [[col, *cell] for col, cell in sorted(table[row].items())]
            size += sum(len(cell[2]) + len(cell[0]) for cell in cells) + len(row)
            page.append([row, cells])
        return {"rows": page, "more": len(rows) > len(page), "counter": self.counters.get(shard, 0)}

    def _op_import_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if shard not in self.incoming:
            return _error("ConfigError", f"shard {shard} is not awaited here")
        table = self.shards.setdefault(shard, {})
        for row, cells in c["rows"]:
            if not isinstance(row, str) or shard_of(row, self.shard_count) != shard:
                raise ValueError(f"row {row!r} is not in shard {shard}")
            target = table.setdefault(row, {})
            for col, version, value, is_blob in cells:
                if not isinstance(value, bytes) or not isinstance(col, str):
                    raise TypeError("cells hold bytes under string columns")
                target[col] = (int(version), value, bool(is_blob))
                if is_blob:
                    self.blob_cells[(row, col)] = value
        self.counters[shard] = max(self.counters.get(shard, 0), int(c["counter"]))
        return {"imported": len(c["rows"])}

    def _op_adopt_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if self.owned is not None and shard in self.owned:
            return {"adopted": shard}  # a retry
        if shard not in self.incoming:
            return _error("ConfigError", f"shard {shard} is not awaited here")
        del self.incoming[shard]
        assert self.owned is not None  # begin_config made the group managed
        self.owned.add(shard)
        return {"adopted": shard}

    def _op_drop_shard(self, c: dict[str, Any]) -> Result:
        if isinstance(num := self._current(c), dict):
            return num
        shard = self._shard(c["shard"])
        if shard in self.frozen:
            for row, cells in self.shards.pop(shard, {}).items():
                for col in cells:
                    self.blob_cells.pop((row, col), None)
            self.frozen.discard(shard)
        return {"dropped": shard}

    # -- snapshots ----------------------------------------------------------------

    def ownership_snapshot(self) -> dict[str, Any]:
        return {"config_num": self.config_num,
                "owned": None if self.owned is None else sorted(self.owned),
                "incoming": sorted([s, g] for s, g in self.incoming.items()),
                "frozen": sorted(self.frozen)}

    def restore_ownership(self, state: dict[str, Any] | None) -> None:
        self._init_ownership()
        if state:
            self.config_num = int(state["config_num"])
            self.owned = None if state["owned"] is None else set(state["owned"])
            self.incoming = {int(s): int(g) for s, g in state.get("incoming", [])}
            self.frozen = set(state["frozen"])

"""Which shards a group serves, and the steps that move a shard between groups.

A group starts *unmanaged*: it serves every shard (the static map decides
which ones clients send it).  Once a coordinator applies a configuration
(DESIGN.md section 4), the group serves exactly its owned shards and answers
``WrongShard`` for the rest.  Moving shard ``s`` from group A to group B, at
configuration ``n``, is five idempotent steps, each a command in one group's
log:

1. A ``freeze_shard(n, s)``: A stops serving ``s``; nothing changes it any more.
2. A ``export_shard(s, after, limit)``: pages of ``s``'s rows, with versions and
   the shard's version counter (only a frozen shard can be exported).
3. B ``import_shard(n, s, rows, counter)``, page by page (each under the entry
   cap); the counter keeps versions growing across the move.
4. B ``adopt_shard(n, s)``: B serves ``s``.
5. A ``drop_shard(n, s)``: A deletes its copy (its chunks then fall to GC).

The ownership check runs *after* a write's exactly-once check (see
:meth:`raftkv.store.Store.apply`): a retried write that A applied before the
freeze gets its stored answer, so ``WrongShard`` proves the write never
applied at A and the client may send it to B.  Commands carrying a
configuration older than the group's are refused.
"""

from __future__ import annotations

from typing import Any

from .keys import shard_of

Result = dict[str, Any]

SHARD_OPS = frozenset({"set_owned", "freeze_shard", "import_shard", "adopt_shard", "drop_shard"})
EXPORT_PAGE = 200          # rows per export page at most
EXPORT_BYTES = 1024 * 1024  # and about this many bytes of values (an answer is one frame)


def _error(name: str, message: str, **fields: Any) -> Result:
    return {"error": name, "message": message, **fields}


class ShardOwnership:
    """Mixin of :class:`raftkv.store.Store`: shard ownership and the moving steps."""

    shard_count: int
    shards: dict[int, dict[str, dict[str, tuple[int, bytes, bool]]]]
    counters: dict[int, int]
    blob_cells: dict[tuple[str, str], bytes]

    def _init_ownership(self) -> None:
        self.config_num = 0                  # 0: unmanaged, every shard is served
        self.owned: set[int] | None = None  # None: every shard
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
        elif op in ("get", "put", "delete", "cput", "mutate_row", "get_row"):
            row = command.get("row")
            shard = shard_of(row, self.shard_count) if isinstance(row, str) else None
        else:
            return None
        if shard is None or shard in self.owned:
            return None
        return _error("WrongShard", f"this group does not serve shard {shard} "
                      f"in configuration {self.config_num}", shard=shard,
                      config_num=self.config_num)

    def _stale(self, command: dict[str, Any]) -> Result | None:
        num = command["config"]
        if not isinstance(num, int) or num < self.config_num:
            return _error("ConfigError", f"configuration {num!r} is older than this group's "
                          f"{self.config_num}")
        return None

    def _shard(self, command: dict[str, Any]) -> int:
        shard = command["shard"]
        if not isinstance(shard, int) or not 0 <= shard < self.shard_count:
            raise ValueError(f"no shard {shard!r}")
        return shard

    # -- the steps ----------------------------------------------------------------

    def _op_set_owned(self, c: dict[str, Any]) -> Result:
        """Start serving exactly ``shards`` (a group's first managed configuration)."""
        if (refused := self._stale(c)) is not None:
            return refused
        shards = {int(s) for s in c["shards"]}
        if not all(0 <= s < self.shard_count for s in shards):
            raise ValueError("shard out of range")
        self.owned, self.config_num = shards, c["config"]
        return {"config_num": self.config_num}

    def _op_freeze_shard(self, c: dict[str, Any]) -> Result:
        if (refused := self._stale(c)) is not None:
            return refused
        shard = self._shard(c)
        if self.owned is None:
            self.owned = set(range(self.shard_count))
        self.owned.discard(shard)
        self.frozen.add(shard)
        self.config_num = c["config"]
        return {"config_num": self.config_num}

    def _op_export_shard(self, c: dict[str, Any]) -> Result:
        shard = self._shard(c)
        if shard not in self.frozen:
            return _error("ConfigError", f"shard {shard} is not frozen here: freeze it first")
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
        if (refused := self._stale(c)) is not None:
            return refused
        shard = self._shard(c)
        if self.owned is None or shard in self.owned:
            return _error("ConfigError", f"shard {shard} is served here: nothing to import")
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
        if (refused := self._stale(c)) is not None:
            return refused
        shard = self._shard(c)
        if self.owned is None:
            return _error("ConfigError", "an unmanaged group serves every shard already")
        self.owned.add(shard)
        self.frozen.discard(shard)
        self.config_num = c["config"]
        return {"config_num": self.config_num}

    def _op_drop_shard(self, c: dict[str, Any]) -> Result:
        if (refused := self._stale(c)) is not None:
            return refused
        shard = self._shard(c)
        if shard not in self.frozen:
            return _error("ConfigError", f"shard {shard} is not frozen here: it is not moving")
        for row, cells in self.shards.pop(shard, {}).items():
            for col in cells:
                self.blob_cells.pop((row, col), None)
        self.frozen.discard(shard)
        return {"dropped": shard}

    # -- snapshots ----------------------------------------------------------------

    def ownership_snapshot(self) -> dict[str, Any]:
        return {"config_num": self.config_num,
                "owned": None if self.owned is None else sorted(self.owned),
                "frozen": sorted(self.frozen)}

    def restore_ownership(self, state: dict[str, Any] | None) -> None:
        self._init_ownership()
        if state:
            self.config_num = int(state["config_num"])
            self.owned = None if state["owned"] is None else set(state["owned"])
            self.frozen = set(state["frozen"])

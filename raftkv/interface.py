"""The store interface: what the data model and the apps may call on a store.

Three stores implement it: :class:`raftkv.Client` (one group),
:class:`shards.Client` (every group, routed by shard) and the in-memory store of
the unit tests (``tests/_memstore.py``).  Code that only reads and writes cells
takes a :class:`KeyValueStore`; code that must find a row's shard (to scan the
rows beside it) takes a :class:`ShardedStore`.  mypy checks that each store
conforms (``tests/unit/test_store_interface.py``), so a method added to one
and not the others fails the lint, not a page in production.

The promises behind each method (versions, conditions, exactly-once writes,
blobs) are in ``docs/store-promises.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal, NamedTuple, Protocol

Consistency = Literal["linearizable", "stale"]

# Cells one ``get_cells`` call may name: its answer (256 values of up to 16 KiB, the
# largest a cell holds inline) stays inside one frame of the wire protocol.
MAX_CELLS = 256


class Readable(Protocol):
    """What a store reads a streamed value from: ``read(n)`` until it returns ``b""``."""

    def read(self, size: int = -1, /) -> bytes: ...


# A condition of mutate_row: the cell has version n (0: absent), is absent, or holds bytes.
Condition = (tuple[Literal["version"], str, int] | tuple[Literal["absent"], str]
             | tuple[Literal["value"], str, bytes])
# A mutation of mutate_row: store a value, or delete the cell.
Mutation = tuple[Literal["put"], str, bytes] | tuple[Literal["delete"], str]


class Cell(NamedTuple):
    """A cell's value and version, as the group's majority agreed on it."""

    value: bytes
    version: int

    @property
    def stale(self) -> bool:
        """True for a :class:`StaleCell`: read from one replica, possibly out of date."""
        return False


class StaleCell(Cell):
    """A cell read from one replica without asking the majority: possibly out of date."""

    __slots__ = ()

    @property
    def stale(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Unchanged:
    """``get_cells``' answer for a cell whose version is the one the caller said it
    knows: no value comes back.  Not a :class:`Cell`, so a missing value can never
    be taken for ``b""``.  ``stale``: the version was read from one replica."""

    version: int
    stale: bool = False


class KeyValueStore(Protocol):
    """Rows of cells: each cell holds bytes of any size and a version that grows with each write.

    Writes apply exactly once; a write whose outcome is unknown raises
    :class:`~raftkv.errors.OutcomeUnknown`.  A failed condition raises
    :class:`~raftkv.errors.ConditionFailed`.

    A write's ``ttl`` (seconds, > 0) makes the cells it puts expire then, on the
    group's clock: every read hides them and conditions see them absent; a write
    without ``ttl`` makes the cell permanent (docs/store-promises.md, "The interface").
    """

    def get(self, row: str, col: str, *,
            consistency: Consistency = "linearizable") -> Cell | None:
        """The cell at (row, col), or None; ``"stale"`` may answer from one replica."""
        ...

    def put(self, row: str, col: str, value: bytes, *, ttl: float | None = None) -> int:
        """Store a value of any size; returns the cell's new version."""
        ...

    def put_stream(self, row: str, col: str, stream: Readable | bytes, *,
                   ttl: float | None = None) -> int:
        """Store what ``stream.read(n)`` yields until EOF; returns the cell's new version.

        A seekable stream is rewound if the write must be sent again (a shard moved).
        """
        ...

    def get_stream(self, row: str, col: str, *, consistency: Consistency = "linearizable",
                   offset: int = 0) -> tuple[int, Iterator[bytes]] | None:
        """``(size, chunks)`` of the value at (row, col), fetched lazily; or None.
        ``size`` is the whole value's; the chunks start at byte ``offset`` (a range:
        nothing before it is fetched).  ``"stale"`` may read the cell from one replica
        (the chunks come from any)."""
        ...

    def get_into(self, row: str, col: str, out: BinaryIO, *,
                 consistency: Consistency = "linearizable") -> int | None:
        """Write the value at (row, col) into ``out``; its version, or None if absent."""
        ...

    def delete(self, row: str, col: str) -> bool:
        """Delete a cell; True if it existed."""
        ...

    def cput(self, row: str, col: str, new: bytes, *, old: bytes | None = None,
             if_version: int | None = None, ttl: float | None = None) -> int:
        """Store ``new`` only if the cell holds ``old`` (None: absent) or ``if_version``."""
        ...

    def mutate_row(self, row: str, conditions: Sequence[Condition],
                   mutations: Sequence[Mutation], *,
                   ttl: float | None = None) -> dict[str, int]:
        """Apply ``mutations`` to one row atomically if every condition holds
        (``ttl`` applies to every cell it puts)."""
        ...

    def get_cells(self, cells: Sequence[tuple[str, str]], *, known: Sequence[int] | None = None,
                  consistency: Consistency = "linearizable") -> list[Cell | Unchanged | None]:
        """Each ``(row, column)`` of ``cells`` (any rows, at most :data:`MAX_CELLS`), in
        order: None if absent, :class:`Unchanged` if ``known[i]`` is its version (0: none
        known), else the cell (a :class:`StaleCell` for ``"stale"``).  One round trip
        per group the rows live in, all groups at once; each group answers from one
        state of its store (docs/store-promises.md, "The interface").

        :raises TooLarge: more than :data:`MAX_CELLS` cells.
        """
        ...

    def get_row(self, row: str, prefix: str = "", *, after: str = "", limit: int | None = None,
                reverse: bool = False,
                consistency: Consistency = "linearizable") -> dict[str, Cell]:
        """The cells of ``row`` whose column starts with ``prefix``, in column order
        (descending if ``reverse``), as a dict in that order: the columns after
        ``after`` (before it if ``reverse``; ``""`` then means from the last), at most
        ``limit`` of them (None: all)."""
        ...

    def scan(self, shard: int, after_row: str = "", limit: int = 10, *,
             consistency: Consistency = "linearizable") -> list[tuple[str, dict[str, Cell]]]:
        """Up to ``limit`` rows of ``shard`` after ``after_row`` (a blob's cell holds its manifest)."""
        ...

    def close(self) -> None:
        """Release connections and threads; later calls fail."""
        ...


class ShardedStore(KeyValueStore, Protocol):
    """A store that also knows which shard holds a row (one group does not)."""

    def shard_of(self, row: str) -> int:
        """The shard of ``row`` (rows sharing a ``{hash tag}`` share a shard)."""
        ...

"""The store's transactions: one per entry, one shared by a pass of entries, a child
per command that must leave nothing behind when it fails, and reads.

A mixin of :class:`raftkv.store.Store`, kept apart so the store reads as its
operations.  Each thread has its own current transaction (``_local.tables``):
the tick thread's write transaction while it applies, or a reader's own.
The durability and failure rules are in docs/state-on-disk.md, "The store".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from .statedb import StateDB, StateFailure
from .tables import Tables

Result = dict[str, Any]


class EntryTransactions:
    """Mixin: the transaction plumbing of :class:`raftkv.store.Store`."""

    db: StateDB
    _local: threading.local
    applied_index: int  # the last Raft entry in the store
    applied: int        # commands applied, as committed (published after each commit)
    _applied: int       # the same, inside the transaction

    # Provided by the store: write its small state into the transaction, and save
    # and restore it around a command that may be undone.
    def _save_meta(self) -> None:
        raise NotImplementedError

    def _small_state(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _restore_small_state(self, saved: tuple[Any, ...]) -> None:
        raise NotImplementedError

    @property
    def _t(self) -> Tables:
        tables: Tables = self._local.tables
        return tables

    @contextmanager
    def applying_entries(self) -> Iterator[None]:
        """Entries applied inside share one write transaction, committed at the end.

        The engine applies, in one pass of its tick, every entry that became
        committed; one commit for them all costs one write of the pages they
        share instead of one per entry (docs/state-on-disk.md, "The store").
        The applied index goes in the same commit as the entries' effects, as
        before, and ``applied`` is published only after it.  The transaction
        begins with the first entry, so a pass with none costs nothing.
        """
        if getattr(self._local, "tables", None) is not None or getattr(
                self._local, "batching", False):
            raise RuntimeError("applying_entries inside a transaction")
        self._local.batching = True
        try:
            yield
            if getattr(self._local, "tables", None) is not None:
                self._commit(None)
        finally:
            self._local.batching = False

    @contextmanager
    def _writing(self, index: int | None) -> Iterator[None]:
        """One write transaction around an entry (or a command applied on its own), or
        the pass's shared one (:meth:`applying_entries`).

        Anything that goes wrong underneath (a full disk or map, an I/O error,
        a bug) aborts the transaction and raises :class:`StateFailure`: the
        in-memory state may be ahead of the disk, so the replica must stop, not
        carry on with a state its peers may not have.
        """
        batching = getattr(self._local, "batching", False)
        if getattr(self._local, "tables", None) is not None and not (
                batching and index is not None):
            yield  # inside an entry already
            return
        if getattr(self._local, "tables", None) is None:
            try:
                txn = self.db.begin_write()
            except lmdb.Error as exc:
                raise StateFailure(f"cannot begin a transaction: {exc}") from exc
            self._local.tables = Tables(txn, self.db.tables)
        try:
            yield
            if index is not None:
                self.applied_index = index
        except BaseException as exc:
            self._abort()
            raise StateFailure(f"applying entry {index} failed: {exc!r}") from exc
        if not batching:
            self._commit(index)

    def _commit(self, index: int | None) -> None:
        txn = self._t.txn
        try:
            self._save_meta()
            txn.commit()
        except BaseException as exc:
            self._abort()
            raise StateFailure(f"committing up to entry {index or self.applied_index} "
                               f"failed: {exc!r}") from exc
        self._local.tables = None
        self.applied = self._applied

    def _abort(self) -> None:
        tables, self._local.tables = self._local.tables, None
        if tables is not None:
            tables.txn.abort()

    def _all_or_nothing(self, run: Callable[[], Result]) -> Result:
        """Run one command's handler in a child transaction: an error answer (or bad
        input found half-way) leaves neither the tables nor the small state changed."""
        parent = self._t
        saved = self._small_state()
        child = self.db.env.begin(write=True, parent=parent.txn)
        self._local.tables = Tables(child, self.db.tables)
        try:
            result = run()
        except BaseException:
            child.abort()
            self._local.tables = parent
            self._restore_small_state(saved)
            raise
        self._local.tables = parent
        if "error" in result:
            child.abort()
            self._restore_small_state(saved)
        else:
            child.commit()
        return result

    @contextmanager
    def _reading(self) -> Iterator[None]:
        if getattr(self._local, "tables", None) is not None:
            yield
            return
        with self.db.reading() as txn:
            self._local.tables = Tables(txn, self.db.tables)
            try:
                yield
            finally:
                self._local.tables = None

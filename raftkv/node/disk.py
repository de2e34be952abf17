"""The journal and the term/vote metadata, durable: written, fsynced, private (docs/engine-
fixes.md, "The journal", "Term and vote"), and the conversion of pysyncobj's journal file.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport

from .. import snapshots
from ..errors import ConfigError
from ..files import create_private, fsync_dir
from .journal import SegmentJournal

# -- durable journal and metadata ---------------------------------------------

class _DurableMetaStorer(pysyncobj.journal.MetaStorer):
    """Term and vote: written to a temp file, fsynced, renamed, directory fsynced."""

    def getMeta(self) -> Any:  # noqa: N802 - pysyncobj's name
        """As the engine's, which left the file open: none yet (or unreadable) is {}."""
        try:
            with open(self.getPath(), "rb") as f:
                return pysyncobj.pickle.loads(f.read())
        except Exception:  # noqa: BLE001 - the engine's rule: a meta it cannot read is none
            return {}

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - pysyncobj's name
        path = self.getPath()
        tmp = path + ".tmp"
        with _create_private(tmp) as f:
            f.write(pysyncobj.pickle.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))


class _DurableJournal(SegmentJournal):
    """The engine's journal: entries in segment files (:mod:`.journal`), term and vote in
    ``<journal>.meta`` through the engine's ``MetaStorer`` (ours, durable: looked up
    here, when the journal is built, as the engine's own journal does)."""

    def __init__(self, journal_file: str) -> None:
        super().__init__(segments_dir(journal_file), floor=_snapshot_floor(journal_file))
        self._meta_storer = pysyncobj.journal.MetaStorer(journal_file + ".meta")
        self._meta: dict[str, Any] = self._meta_storer.getMeta()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        self._meta["raftCommitIndex"] = raftCommitIndex

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803
        """Stored at once: Raft needs term and vote on disk before a message says them."""
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._meta_storer.storeMeta(self._meta)

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:  # noqa: N802 - pysyncobj's name
        """Nothing: the engine stored the commit index here each second, through our
        durable storer (two fsyncs) on the tick thread, whenever a leader's message had
        set it, changed or not.  With the disk busy (a follower writing a snapshot) that
        held the tick thread for a second and more.  The commit index need not be
        durable (a restarted replica learns it from the leader, and its store knows
        what it applied); term and vote are still stored at once, when they change."""


def segments_dir(journal_file: str | Path) -> Path:
    """Where the segments of the journal named ``journal_file`` live."""
    return Path(str(journal_file) + ".d")


def _snapshot_floor(journal_file: str) -> int:
    """The entry the snapshot beside the journal ends with (0 if none): the engine
    keeps its journal only if it starts there, so entries before it are dropped on
    opening even if the journal's own record of its compaction did not reach the
    disk (the snapshot is renamed in before the journal is compacted)."""
    path = Path(journal_file).with_name(snapshots.SNAPSHOT_FILE)
    try:
        header = snapshots.read_header(path)
    except FileNotFoundError:
        return 0
    except ValueError:
        return 0  # not a snapshot: the engine's loading of it says so and stops the replica
    # (last applied, the one before, node set): the engine compacts to the one before.
    return int(pickle.loads(header.bookkeeping)[1][1])


def convert_file_journal(journal_file: Path) -> None:
    """Data format 2 -> 3: pysyncobj's journal file (read by pysyncobj) becomes segments.

    The segments are written beside, fsynced, renamed into place; only then is the old
    file removed.  Safe to run again: while the old file is there, it is the truth."""
    if not journal_file.exists():
        return
    target = segments_dir(journal_file)
    building = target.with_name(target.name + ".tmp")
    for leftover in (building, target):  # an earlier run that did not finish
        if leftover.exists():
            shutil.rmtree(leftover)
    old = pysyncobj.journal.FileJournal(str(journal_file))
    new = SegmentJournal(building)
    try:
        for position in range(len(old)):
            new.add(*old[position])
        new.sync()
    finally:
        new.close()
        old._destroy()
    os.replace(building, target)
    fsync_dir(journal_file.parent)
    journal_file.unlink()
    fsync_dir(journal_file.parent)


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is None:
        raise ConfigError("a replica always keeps a journal on disk")
    return _DurableJournal(journal_file)


def _create_private(path: str) -> Any:
    """Open ``path`` for writing, truncated, readable by this user only."""
    return os.fdopen(create_private(path), "wb")


# pysyncobj looks both names up at construction time (docs/engine-fixes.md,
# "The journal" and "Term and vote").
pysyncobj.syncobj.createJournal = _create_journal
pysyncobj.journal.MetaStorer = _DurableMetaStorer

"""The journal and the term/vote metadata, durable: written, fsynced, private (docs/engine-
fixes.md, "The journal", "Term and vote").
"""

from __future__ import annotations

import os
from typing import Any

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport

from ..errors import ConfigError
from ..files import PRIVATE_FILE, create_private, fsync_dir

# -- durable journal and metadata ---------------------------------------------

class _DurableMetaStorer(pysyncobj.journal.MetaStorer):
    """Term and vote: written to a temp file, fsynced, renamed, directory fsynced."""

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - pysyncobj's name
        path = self.getPath()
        tmp = path + ".tmp"
        with _create_private(tmp) as f:
            f.write(pysyncobj.pickle.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))


class _DurableJournal(pysyncobj.journal.FileJournal):
    """FileJournal that knows when it has unsynced appends, and can sync them."""

    def __init__(self, journal_file: str) -> None:
        self._dirty = False
        super().__init__(journal_file)
        os.chmod(journal_file, PRIVATE_FILE)  # the engine creates it with the process umask
        self.bytes = self._count_bytes()  # of the entries it holds: when to compact

    def _count_bytes(self) -> int:
        return sum(len(entry[0]) for entry in self)

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.bytes += len(command)
        self._dirty = True

    def deleteEntriesFrom(self, pos: int) -> None:  # noqa: N802
        super().deleteEntriesFrom(pos)
        self.bytes = self._count_bytes()
        self._dirty = True

    def deleteEntriesTo(self, pos: int) -> None:  # noqa: N802
        super().deleteEntriesTo(pos)
        self.bytes = self._count_bytes()

    def clear(self) -> None:
        super().clear()
        self.bytes = 0

    def onOneSecondTimer(self) -> None:  # noqa: N802 - pysyncobj's name
        """Nothing: the engine stored the commit index here each second, through our
        durable storer (two fsyncs) on the tick thread, whenever a leader's message had
        set it, changed or not.  With the disk busy (a follower writing a snapshot) that
        held the tick thread for a second and more.  The commit index need not be
        durable (a restarted replica learns it from the leader, and its store knows
        what it applied); term and vote are still stored at once, when they change."""

    def sync(self) -> None:
        if not self._dirty:
            return
        resizable = self._FileJournal__journalFile
        resizable.flush()  # msync of the mmap
        os.fsync(resizable._ResizableFile__f.fileno())
        self._dirty = False


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

"""The engine's part of the snapshot that starts a restored group.

A restored group begins with state the log never held: every replica gets the
same snapshot, whose bookkeeping names two no-op entries of term 0 ending at
:data:`SEED_INDEX`.  The engine loads it as any snapshot (its journal then holds
those two entries), the store skips entries up to that index, and a leader
sends a replica that has lost its data directory this snapshot again, never
the entries after it alone: the leader's log begins at ``SEED_INDEX - 1``,
past the one no-op (index 1) that an empty replica holds, so that replica's
next index falls at or below the log's first entry, which the engine answers
with the snapshot (docs/operations.md, "Backup and restore").
"""

from __future__ import annotations

import pysyncobj.pickle
import pysyncobj.syncobj

SEED_INDEX = 3


def seed_bookkeeping() -> bytes:
    """(last applied entry, the one before, node set), pickled as the engine's serializer does;
    the node set is unused (the engine changes no membership here)."""
    no_op = bytes([pysyncobj.syncobj._COMMAND_TYPE.NO_OP])
    entries = ((no_op, SEED_INDEX, 0), (no_op, SEED_INDEX - 1, 0))
    return bytes(pysyncobj.pickle.dumps((*entries, set())))

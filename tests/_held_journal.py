"""A replica whose journal's disk takes its time, for the process tests of docs/engine-
fixes.md, "The journal"::

    python -m tests._held_journal HOLD_FILE shards.node ARGS...

runs the module as ``python -m`` would, except that while ``HOLD_FILE`` exists (30 s at
most) every fsync on the journal's syncer thread waits: the store, snapshots, term and
vote, and whatever else a replica syncs are left alone.  The tests create and remove the
file to hold and release one replica's journal."""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from pathlib import Path

HOLD_AT_MOST = 30.0


def main() -> None:
    hold, module, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("journal-syncer"):
            deadline = time.monotonic() + HOLD_AT_MOST
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        real_fsync(fd)

    os.fsync = fsync
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""The formats a replica writes and reads, numbered, and what this code knows of each.

Two lines of formats (docs/store-promises.md, "Formats and upgrades"):

* the **data** format: what a replica's data directory holds.  Each directory
  records its format in :data:`DATA_FORMAT_FILE`; a replica refuses one newer
  than it knows, and converts an older one step by step (:data:`CONVERSIONS`);
* the **Raft** format: the log entries and the messages on the Raft port.  A
  replica announces the range it speaks in its ``hello``; it refuses a peer
  whose range does not overlap its own.  A group whose log holds entries of
  the old format (old code wrote them) keeps writing it until its last replica
  runs new code; a group this code created writes the newest from its first
  entry (:func:`entry_format`).

The client protocol is listed too; it has one version so far and is not yet
negotiated.  Every change of a format adds a line to its history, raises
the newest version here, and moves the rolling-upgrade test's old revision
(tests/integration/test_rolling_upgrade.py) to the last commit of the old
format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .files import write_private_atomically

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class FormatLine:
    """One line of formats: each version's one-line history, and the versions this code handles."""

    name: str
    history: Mapping[int, str]  # version -> what it changed
    oldest: int                 # the oldest version this code reads (or converts, for data)

    @property
    def newest(self) -> int:
        return max(self.history)

    @property
    def speaks(self) -> range:
        return range(self.oldest, self.newest + 1)


DATA = FormatLine("data", {
    1: "pysyncobj's journal and term/vote metadata (pickled), our snapshot (pickled Raft "
       "bookkeeping, then the store in msgpack); directories made before formats were "
       "recorded hold no version file and are this format",
    2: "the store in LMDB (state/: raftkv/statedb.py, raftkv/tables.py), each entry's "
       "Raft index in it; the snapshot is a header and a copy of that file "
       "(raftkv/snapshots.py)",
    3: "the Raft journal in segment files, raft.journal.d/ (raftkv/node/journal.py), "
       "instead of pysyncobj's raft.journal; the term/vote file is unchanged",
}, oldest=1)

RAFT = FormatLine("raft", {
    1: "an entry is a msgpack list of commands; intent and expire_intents carry the "
       "leader's now (the code up to 89319e8)",
    2: "an entry starts with the leader's time, then its commands (1995ed3); operations "
       "that need the time (ttl, expire_cells) exist from here; pre_vote, pre_vote_reply "
       "and hello messages (ea7c3be)",
    3: "a lagging follower pulls the snapshot over the client port: the leader's "
       "snapshot message may be an offer (raftkv/snapshot_pull.py)",
    4: "read_probe and read_ack messages: the leader confirms it leads before it "
       "answers a read outside the log (raftkv/readindex.py); entries stay format 2",
    5: "freeze and thaw commands (raftkv/freezing.py): a frozen group refuses writes, "
       "which a replica of an older format would apply; entries stay format 2",
}, oldest=1)

# From this Raft format on, a follower is offered its snapshot to pull, not sent pieces.
PULLED_SNAPSHOTS = 3
# From this Raft format on, a follower answers read_probe (raftkv/readindex.py).
READ_INDEX = 4

# The client port's operations grow without a new client format: a replica answers one
# it does not know with ProtocolError (raftkv.operations.unknown_operation) and ignores
# fields it does not know, and a newer client falls back (docs/store-promises.md,
# "Formats and upgrades": get_cells, get_row's reverse).
CLIENT = FormatLine("client", {
    1: "length-prefixed msgpack frames after the secret handshake (raftkv/protocol.py)",
}, oldest=1)

# What a peer that says no hello, or a hello without a range, is taken to speak.
# A replica older than PreVote says no hello and applies untimed entries only;
# one from PreVote until formats were announced applies both.
SILENT_PEER_RAFT = range(1, 2)
UNRANGED_HELLO_RAFT = range(1, 3)

DATA_FORMAT_FILE = "data_format"
JOURNAL_FILE = "raft.journal"  # pysyncobj's journal (data formats 1 and 2); its term and vote beside

# Raft format 2 entries carry their time; format 1 entries carry it in the commands
# that need it, which the leader's server fills in.
UNTIMED_ENTRIES = 1
TIMED_ENTRIES = 2
# The group's format (Store.raft_format) while its log holds no command yet: only
# code that numbers formats starts a group so, and old code cannot have written it.
NO_COMMANDS = 0
COMMAND_TIME_OPS = frozenset({"intent", "expire_intents"})
# What appeared in which Raft format: a leader writing an older format refuses
# a command that uses it, since a replica of that format would apply it otherwise.
OPERATION_SINCE = {"expire_cells": 2, "freeze": 5, "thaw": 5}
FIELD_SINCE = {"ttl": 2}


class FormatError(ConfigError):
    """A data directory or a peer in a format this code does not know: upgrade the code."""


# -- the data directory ---------------------------------------------------------

def _state_onto_disk(data_dir: Path) -> None:
    """1 -> 2: the store moves out of the snapshot into LMDB."""
    from .snapshots import convert_legacy_dir  # imported here: the store imports this module
    convert_legacy_dir(data_dir)


def _journal_into_segments(data_dir: Path) -> None:
    """2 -> 3: pysyncobj's journal file becomes segment files."""
    from .node.disk import convert_file_journal  # the one package that reads pysyncobj's files
    convert_file_journal(data_dir / JOURNAL_FILE)


# version v -> the function that turns a directory of format v into format v + 1.
CONVERSIONS: dict[int, Callable[[Path], None]] = {1: _state_onto_disk, 2: _journal_into_segments}


def recorded_data_format(data_dir: Path) -> int | None:
    """The format recorded in ``data_dir``, None if none is; FormatError if the file is garbage."""
    path = data_dir / DATA_FORMAT_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the data format: {exc}") from exc
    if not text.isdigit():
        raise FormatError(f"{path}: {text[:40]!r} is not a data format number")
    return int(text)


def prepare_data_dir(data_dir: Path, line: FormatLine = DATA,
                     conversions: Mapping[int, Callable[[Path], None]] = CONVERSIONS) -> int:
    """Bring ``data_dir`` to ``line``'s newest format before anything opens it; that format.

    A directory without a version file is new (nothing in it: the newest format
    is recorded) or was made before formats were recorded (format 1).  A newer
    format than this code knows, or an older one it cannot convert, is refused
    with :class:`FormatError`; nothing in the directory is changed then.  Each
    conversion step is recorded as it completes, so one interrupted by a crash
    resumes from the last completed step (a step must be safe to run again).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    found = recorded_data_format(data_dir)
    if found is None:
        found = 1 if any(data_dir.iterdir()) else line.newest
    if found > line.newest:
        raise FormatError(
            f"{data_dir} holds {line.name} format {found}; this code knows formats "
            f"{line.oldest} to {line.newest}: run the newer code it was written by")
    missing = [v for v in range(found, line.newest) if v not in conversions]
    if found < line.oldest or missing:
        raise FormatError(
            f"{data_dir} holds {line.name} format {found}; this code converts none older "
            f"than {line.oldest}: upgrade through an earlier release first")
    for version in range(found, line.newest):
        log.info("converting %s from %s format %d to %d", data_dir, line.name, version, version + 1)
        conversions[version](data_dir)
        write_private_atomically(data_dir / DATA_FORMAT_FILE, f"{version + 1}\n".encode())
    if recorded_data_format(data_dir) != line.newest:
        write_private_atomically(data_dir / DATA_FORMAT_FILE, f"{line.newest}\n".encode())
    return line.newest


# -- the Raft port ----------------------------------------------------------------

def peer_raft_formats(hello: Mapping[str, object] | None) -> range:
    """The Raft formats a peer speaks, from its hello (None: it said none)."""
    if hello is None:
        return SILENT_PEER_RAFT
    announced = hello.get("raft_formats")
    if (isinstance(announced, (list, tuple)) and len(announced) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in announced)):
        return range(int(announced[0]), int(announced[1]) + 1)
    return UNRANGED_HELLO_RAFT


def announce(line: FormatLine = RAFT) -> list[int]:
    """The range this code speaks, as a hello carries it."""
    return [line.oldest, line.newest]


def overlaps(theirs: range, ours: range = RAFT.speaks) -> bool:
    return max(theirs.start, ours.start) < min(theirs.stop, ours.stop)


def raft_format_needed(command: Mapping[str, object]) -> int:
    """The oldest Raft format whose replicas apply ``command`` as this code does."""
    op = command.get("op")
    needed = OPERATION_SINCE.get(op, 1) if isinstance(op, str) else 1
    for name, since in FIELD_SINCE.items():
        if command.get(name) is not None:
            needed = max(needed, since)
    return needed


def entry_format(voters: Collection[range | None], group_format: int,
                 ours: range = RAFT.speaks) -> int:
    """The format a leader writes entries in (docs/store-promises.md, "Formats and upgrades").

    ``voters`` holds what each other voter speaks, as its hello said, or None for
    one that has said no hello (too old to say one -- or down, or not connected
    yet); ``group_format`` is the highest format the group's log holds
    (``Store.raft_format``), :data:`NO_COMMANDS` while it holds no command.

    * A log that holds no command was started by this code or a later one: no
      replica on old code ever applied it, so the group writes the highest
      format the voters that said hello speak, whoever is silent -- a new group
      with a replica down takes a ttl at once.
    * A log with entries of an older format was written (at least in part) by
      old code, so a silent voter may be one still running it: the group writes
      the highest format every voter speaks, a silent one counting as format 1.
    * Once the log holds an entry of a format, every replica must apply it
      anyway, so the group never goes back below it.
    """
    newest = ours.stop - 1
    best = min([r.stop - 1 for r in voters if r is not None] + [newest])
    if group_format != NO_COMMANDS and any(r is None for r in voters):
        best = min(best, SILENT_PEER_RAFT.stop - 1)
    return max(best, min(group_format, newest), ours.start)

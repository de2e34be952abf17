"""What the bench reads from outside the replicas: memory from /proc, sizes on disk,
and the ``--sizes`` it is asked for."""

from __future__ import annotations

import os
from pathlib import Path

import click

KiB = 1024
MiB = 1024 * 1024
# Fields of /proc/PID/status the bench reports (proc(5)): RssAnon is the heap and other
# anonymous pages, the memory the issue bounds; RssFile counts mapped file pages, which
# are the kernel's cache (an LMDB map shows there, and the kernel evicts it when short).
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def parse_sizes(text: str) -> list[float]:
    """``"0.5,1,2"`` -> ``[0.5, 1.0, 2.0]`` (GB of stored values, 10^9 bytes), strictly
    increasing: the group is filled up to each size in turn."""
    try:
        sizes = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of numbers like 0.5,1,2") from None
    if not sizes or any(not 0 < s < 1e4 for s in sizes):
        raise click.BadParameter(f"{text!r}: give one or more sizes in GB, each above 0")
    if sizes != sorted(set(sizes)):
        raise click.BadParameter(f"{text!r}: sizes must increase (the group is filled up to each)")
    return sizes


def parse_proc_status(text: str, names: tuple[str, ...] = MEMORY_FIELDS) -> dict[str, float]:
    """The ``names`` fields of a /proc/PID/status text, in MiB (the kernel writes kB)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name in names:
            number, _, unit = rest.strip().partition(" ")
            if unit.strip() != "kB":
                raise ValueError(f"unexpected unit in {line!r}")
            values[name] = int(number) * KiB / MiB
    return values


def process_memory(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and friends of process ``pid``, in MiB."""
    return parse_proc_status(Path(f"/proc/{pid}/status").read_text())


def dir_bytes(path: Path) -> int:
    """Bytes a directory tree takes on disk: allocated blocks, not apparent sizes (a
    sparse or preallocated file counts what it really uses).  Symlinks are not followed."""
    total = 0
    for parent, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
            except FileNotFoundError:  # a replica renamed or removed it meanwhile
                continue
    return total

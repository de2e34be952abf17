"""Running :mod:`portal.thumbnailer` as a child process: bounded in time, memory and number.

A thumbnail is made from a user's bytes, which may be a decompression bomb, a file built
to crash a decoder, or just a huge image.  The frontend's own process never decodes them:
the bytes stream from the store into a child's stdin (never whole in this process's
memory), the child limits its own CPU time and address space before it imports Pillow,
and it is killed after :data:`~portal.thumbnailer.WALL_SECONDS`.  Each worker runs at most
:data:`SLOTS` children at once; a request that waits too long for a slot gets the generic
icon, unstored, and the next view of the listing asks again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import msgpack

from shards.model import drive

from . import thumbnailer

log = logging.getLogger("portal.thumbs")

SLOTS = 2                 # children per worker process; the machine's cores, not its threads
SLOT_WAIT = 15.0          # seconds a request waits for a slot before showing the icon
MAX_ANSWER = 64 * 1024    # bytes of the child's answer read at most (a thumbnail is < 16 KiB)
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "thumbnailer.py")
_slots = threading.BoundedSemaphore(SLOTS)


class Busy(Exception):
    """Every slot stayed taken for :data:`SLOT_WAIT` seconds."""


def made_from(chunks: Iterator[bytes], *, timeout: float = thumbnailer.WALL_SECONDS
              ) -> dict[str, object]:
    """What the child answers for the bytes ``chunks`` yields: ``{"ok": True, "w", "h",
    "t", "b", "ow", "oh"}`` or ``{"ok": False, "why"}``.  A child that dies, overruns its limits or
    its time answers ``ok: False`` too; one that fails by itself (an exit status of its
    own) also says ``"retry": True``: that is no reason to give up on the file.  A
    failure to read the store is raised, not answered: it says nothing about the file.

    :raises Busy: no slot came free in time.
    """
    try:
        if not _slots.acquire(timeout=SLOT_WAIT):
            raise Busy()
        try:
            return _run(chunks, timeout)
        finally:
            _slots.release()
    finally:
        close = getattr(chunks, "close", None)  # the store's reads ahead stop here
        if close is not None:
            close()


def _run(chunks: Iterator[bytes], timeout: float) -> dict[str, object]:
    # -I: no environment, no user site, no current directory: the script and the
    # interpreter's own packages only.  Not a preexec_fn: unsafe in a threaded worker.
    child = subprocess.Popen([sys.executable, "-I", SCRIPT], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    answer = b""
    try:
        if child.stdin is None or child.stdout is None:
            raise OSError("no pipes to the thumbnailer")
        sent = 0
        try:
            for chunk in chunks:
                sent += len(chunk)
                if sent > thumbnailer.MAX_INPUT:
                    return {"ok": False, "why": "the file is too large to make a thumbnail of"}
                child.stdin.write(chunk)
            child.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child died or was killed: its exit status says so below
        answer = child.stdout.read(MAX_ANSWER)
        child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # a broken pipe's buffer could not be flushed: nothing to keep
    return _parsed(answer, child.returncode)


def _parsed(answer: bytes, status: int) -> dict[str, object]:
    if status < 0:
        # Killed by a signal: the timer (SIGKILL), its CPU limit (SIGXCPU) or a crash in
        # a decoder -- the file's doing, so the failure is kept.
        log.info("thumbnailer killed by signal %s", -status)
        return {"ok": False, "why": "the image took too long or too much memory to read"}
    if status > 0:
        # It failed by itself (Pillow missing, a bug of ours): not the file's fault, so
        # nothing is kept, and the next view tries again.
        log.error("thumbnailer failed with exit status %s", status)
        return {"ok": False, "why": "the thumbnailer failed", "retry": True}
    try:
        parsed = msgpack.unpackb(answer, raw=False)
    except (ValueError, msgpack.UnpackException):
        parsed = None
    if not isinstance(parsed, dict):
        return {"ok": False, "why": "the thumbnailer gave no answer"}
    return parsed


def thumb_of(item: drive.Item, answer: dict[str, object]) -> drive.Thumb:
    """The record to store for ``item`` from the child's ``answer``."""
    data = answer.get("b")
    if answer.get("ok") and isinstance(data, bytes) and data:
        return drive.Thumb(size=item.size, modified=item.modified, content=item.content_id,
                           data=data,
                           ctype=str(answer.get("t", "image/webp")),
                           width=_int(answer.get("w")), height=_int(answer.get("h")),
                           source_width=_int(answer.get("ow")),
                           source_height=_int(answer.get("oh")))
    return drive.Thumb(size=item.size, modified=item.modified, content=item.content_id,
                       why=str(answer.get("why", "no thumbnail")))


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0

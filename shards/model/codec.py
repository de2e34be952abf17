"""How the data model writes a structured cell value: msgpack, and read back leniently.

One place for the drive, the mailbox and WebDAV's locks and properties: a value that
is not msgpack (a cell written by something else, a torn test fixture) reads as None
and each caller treats it as absent, never as an exception on a request's path.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["pack", "unpack"]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(value: bytes) -> Any:
    """A cell's msgpack value, or None if it is not msgpack."""
    try:
        return msgpack.unpackb(value, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None

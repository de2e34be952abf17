"""Which shard a row lives in.

``shard = crc32(tag) mod N``, where the tag is the part inside the first ``{...}``
of the row when it has one (Redis Cluster's hash-tag convention), so that one
user's rows -- ``{alice}/mail``, ``{alice}/drive`` -- share a shard.
"""

from __future__ import annotations

import zlib

DEFAULT_SHARDS = 64


def hash_tag(row: str) -> str:
    """The part of ``row`` that decides its shard."""
    start = row.find("{")
    if start != -1:
        end = row.find("}", start + 1)
        if end > start + 1:  # "{}" is not a tag, as in Redis Cluster
            return row[start + 1:end]
    return row


def shard_of(row: str, shards: int = DEFAULT_SHARDS) -> int:
    """The shard number (0 .. shards-1) that holds ``row``."""
    return zlib.crc32(hash_tag(row).encode("utf-8")) % shards

"""The store's upload intents: the chunks of a blob being uploaded, protected until its cell.

A mixin of :class:`raftkv.store.Store` (docs/store-promises.md, "Blobs").  Before a
client sends a blob's chunks it registers their names under an upload id
(``intent``); the intent lives until a lease runs out (``expire_intents``, issued by
the leader) or until the cell that references the chunks is written with
``upload=<id>``, which removes the intent in the same step (the store's
``_dispatch_write``).  The garbage collector treats the chunks of cells and of live
intents as live (the store's ``live_chunks``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .cells import Result, error
from .tables import U64

if TYPE_CHECKING:
    from .tables import Tables

MAX_INTENTS = 10_000        # uploads in progress at once, per group
MAX_INTENT_CHUNKS = 70_000  # chunks one upload may name: 64 GiB of value plus its index
MAX_LEASE = 86_400.0        # seconds an intent may live without renewal
DIGEST_SIZE = 32


class UploadIntents:
    """Mixin of :class:`raftkv.store.Store`: ``intent``, ``intent_end``, ``expire_intents``."""

    @property
    def _t(self) -> Tables:
        raise NotImplementedError

    def _tick(self, c: dict[str, Any]) -> float:
        raise NotImplementedError

    def _op_intent(self, c: dict[str, Any]) -> Result:
        upload, digests = c["upload"], c.get("digests", [])
        if not isinstance(upload, int) or not isinstance(digests, list) or not all(
                isinstance(d, bytes) and len(d) == DIGEST_SIZE for d in digests):
            raise TypeError("an intent needs an integer upload id and 32-byte digests")
        lease = float(c["lease"])
        if not math.isfinite(lease):
            raise ValueError("a lease is a finite number of seconds")
        lease = min(max(lease, 0.1), MAX_LEASE)
        now = self._tick(c)
        current = self._t.intent(upload)
        if current is None and not c.get("new"):
            return error("UploadExpired", "the upload's intent expired: upload again")
        if current is None and self._t.count("intents") >= MAX_INTENTS:
            return error("UnavailableError", "too many uploads in progress")
        chunks = current[1] if current else []
        if len(chunks) + len(digests) > MAX_INTENT_CHUNKS:
            return error("TooLarge", f"an upload may name at most {MAX_INTENT_CHUNKS} chunks")
        chunks.extend(digests)
        self._t.put_intent(upload, now + lease, chunks)
        return {"expires": now + lease}

    def _op_intent_end(self, c: dict[str, Any]) -> Result:
        upload = c["upload"]
        if not isinstance(upload, int):
            raise TypeError("an upload id is an integer")
        return {"ended": self._t.delete_intent(upload)}

    def _op_expire_intents(self, c: dict[str, Any]) -> Result:
        now = self._tick(c)
        expired = [upload for upload, expires, _ in self._t.intents() if expires < now]
        for upload in expired:
            self._t.delete_intent(upload)
        return {"expired": len(expired)}

    def _end_intent(self, upload: object) -> None:
        if isinstance(upload, int) and 0 <= upload < U64:
            self._t.delete_intent(upload)


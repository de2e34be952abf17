"""The failover service worker: a click or form whose frontend died goes through the balancer.

The worker's code is ``static/failover-sw.js``; the page script registers it
for the whole site.  It is served here, at ``/failover-sw.js`` (a worker's
scope is at most its own folder, and this one must cover every page), with the
balancer's public address (:attr:`shards.site.Site.public_url`) written in.
docs/architecture.md, "Failover", says what it does and why a form may be sent
twice safely.
"""

from __future__ import annotations

import json
import os

from .pages import STATIC_DIR

WORKER_PATH = "/failover-sw.js"
# The worker's own policy: it runs no other script and fetches only this frontend's pages.
WORKER_CSP = "default-src 'none'; connect-src 'self'"
_ENTRY_LINE = 'var ENTRY = "";'

with open(os.path.join(STATIC_DIR, "failover-sw.js"), encoding="utf-8") as _source:
    _WORKER_SOURCE = _source.read()
assert _WORKER_SOURCE.count(_ENTRY_LINE) == 1, "failover-sw.js must set ENTRY on one line"


def worker_script(entry: str | None) -> bytes:
    """The worker's code with ``ENTRY`` set: ``scheme://host[:port]``, or none (a no-op)."""
    line = f"var ENTRY = {json.dumps(entry or '')};"
    return _WORKER_SOURCE.replace(_ENTRY_LINE, line).encode()

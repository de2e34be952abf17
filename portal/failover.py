"""The failover service worker: a click or form whose frontend died goes through the balancer.

The worker's code is ``static/failover-sw.js``; the page script registers it
for the whole site.  It is served here, at ``/failover-sw.js`` (a worker's
scope is at most its own folder, and this one must cover every page), with the
balancer's public address (:attr:`shards.site.Site.public_url`) written in.
docs/architecture.md, "Failover", says what it does and what sending a form on
means when the dead frontend may have applied it first.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from .pages import STATIC_DIR

if TYPE_CHECKING:
    from .config import PortalConfig

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


def form_origins(config: PortalConfig) -> tuple[str, ...]:
    """Where a form of ours may be sent on to: the balancer and every frontend.

    A page's CSP ``form-action`` is checked on each redirect of a form too, so a
    form the worker sends on through the balancer (and from there to another
    frontend) needs their origins beside ``'self'``.  Frontends that listen on a
    wildcard are no address a browser is sent to, and are left out, as is this
    one (``'self'``).
    """
    origins = [config.site.public_url] if config.site.public_url else []
    for entry in config.cluster.entries("frontend"):
        listen = entry.get("listen")
        if entry.get("name") == config.frontend:
            continue  # ourselves: 'self'
        if isinstance(listen, str) and listen.rpartition(":")[0] not in ("", "0.0.0.0", "[::]"):
            origins.append(f"{config.site.scheme}://{listen.lower()}")
    return tuple(dict.fromkeys(origins))


def page_policy(policy: str, config: PortalConfig) -> str:
    """``policy`` (a page CSP with ``form-action 'self'``) allowing :func:`form_origins`."""
    origins = form_origins(config)
    if not origins:
        return policy
    assert policy.count("form-action 'self'") == 1, policy
    return policy.replace("form-action 'self'", " ".join(("form-action 'self'", *origins)))

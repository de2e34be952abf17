"""Which frontend gets the next client: pure functions, no sockets, no clocks.

Kept apart from the HTTP and health-check code so the policy can be tested
(and changed) on its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

# Characters left as they are in a redirected path or query: RFC 3986 pchar and
# the query's "/" and "?"; anything else is percent-encoded (and "%" is kept, so
# an already-encoded target is not encoded twice).
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


@dataclass(frozen=True)
class FrontendState:
    """What the balancer knows about one frontend after its latest health check."""

    addr: str            # host:port, as the frontend registered it (browser-reachable)
    live: bool           # its last /healthz answered "ok" in time
    load: float = 0.0    # the load it reported (requests in flight, across its workers)
    redirects: int = 0   # clients we sent it since that check, not yet in its load


def choose(frontends: Iterable[FrontendState], rng: random.Random | None = None
           ) -> FrontendState | None:
    """The live frontend with the least load, or None if none is live.

    Load is the reported load plus the clients we redirected there since the
    last check: loads are at most a second old, and without counting our own
    redirects every new client in that second would pile onto one frontend.
    Ties are broken at random for the same reason.
    """
    live = [f for f in frontends if f.live]
    if not live:
        return None
    least = min(_effective_load(f) for f in live)
    best = [f for f in live if _effective_load(f) == least]
    return (rng or random).choice(best)


def _effective_load(frontend: FrontendState) -> float:
    return frontend.load + frontend.redirects


def redirect_location(addr: str, target: str, scheme: str = "http") -> str:
    """The Location for a request target sent to ``addr``, keeping path and query.

    ``scheme`` is how browsers reach the frontends (the cluster file's ``[web] scheme``).

    Only the path and query of ``target`` survive: an absolute-form target
    (``GET http://evil.example/ HTTP/1.1``) cannot steer the redirect elsewhere.
    """
    if target.startswith("/"):
        # Origin form, the usual case; not urlsplit, which reads "//x/y" as host x.
        path, _, query = target.partition("?")
    else:
        parts = urlsplit(target)
        path, query = parts.path, parts.query
    path = quote(path, safe=_SAFE_PATH)
    location = f"{scheme}://{addr}{path if path.startswith('/') else '/' + path}"
    if query:
        location += "?" + quote(query, safe=_SAFE_QUERY)
    return location


def parse_health(status: int, body: bytes) -> float | None:
    """The load reported by a ``/healthz`` answer, or None if it means "not live"."""
    if status != 200:
        return None
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict) or payload.get("status") != "ok":
            return None
        load = float(payload.get("load", 0.0))
    except (ValueError, TypeError):
        return None
    return load if load >= 0 else None  # NaN fails the comparison too

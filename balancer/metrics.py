"""The balancer's metrics: its answers, and the frontends it may send clients to."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ANSWERS = Counter("balancer_answers", "Requests answered, by answer: redirect (307 to a live "
                  "frontend) or unavailable (503, no live frontend).", ["answer"])
LIVE_FRONTENDS = Gauge("balancer_live_frontends", "Frontends the last health checks found live.")

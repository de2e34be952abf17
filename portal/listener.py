"""How long and how many: the limits of a frontend's HTTP listener, from the ``[web]`` table.

Read by the gunicorn worker (:mod:`portal.worker`); kept apart from it so the
portal's own configuration (:mod:`portal.config`) can name these keys without
importing gunicorn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftkv.errors import ConfigError


@dataclass(frozen=True)
class ListenerLimits:
    head_timeout: float = 10.0   # seconds from a connection's first wait to its whole request head
    io_timeout: float = 30.0     # seconds one read of a body (or one write of an answer) may wait
    max_connections: int = 1000  # connections one worker holds; beyond, the oldest idle one goes
    # bytes/s a request's body and answer must average once head_timeout has
    # passed (time spent waiting on the peer only), so a drip cannot hold a thread
    min_rate: float = 4096.0

    def validate(self) -> None:
        """:raises ConfigError: a limit that cannot work."""
        if not 0 < self.head_timeout <= 3600 or not 0 < self.io_timeout <= 3600:
            raise ConfigError("web.head_timeout and web.io_timeout must be in (0, 3600] seconds")
        if not 0 < self.min_rate <= 1e9:
            raise ConfigError("web.min_rate must be in (0, 1e9] bytes per second")
        if self.max_connections < 2:
            raise ConfigError("web.max_connections must be at least 2")


LISTENER_KEYS = frozenset({"head_timeout", "io_timeout", "max_connections", "min_rate"})


def listener_limits(table: Mapping[str, Any]) -> ListenerLimits:
    """The listener limits set in a ``[web]`` table (other keys are the portal's).

    :raises ConfigError: a value of the wrong type or out of range.
    """
    values: dict[str, Any] = {}
    for key in LISTENER_KEYS & table.keys():
        value = table[key]
        wanted = int if key == "max_connections" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"web.{key} must be a number, got {value!r}")
        values[key] = value
    limits = ListenerLimits(**values)
    limits.validate()
    return limits

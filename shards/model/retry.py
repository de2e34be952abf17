"""Trying a conditioned change again when another writer got there first.

A change conditioned on a cell many writers touch (a drive's quota cell, above
all) fails for every writer but one when they arrive together.  Re-reading and
trying again at once makes the losers collide again, round after round, so a
burst of a dozen uploads into one drive could run out of tries and answer 409.
Waiting a random time first ("full jitter": anywhere from nothing up to a bound
that doubles each round) spreads them out, so each round most of them succeed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

__all__ = ["attempts", "pause"]

FIRST_PAUSE = 0.004  # seconds: the bound of the first pause; it doubles each round
LONGEST_PAUSE = 0.1  # no single pause is longer than this


def attempts(count: int) -> Iterator[int]:
    """Yield ``0 .. count - 1``; before every try but the first, sleep a random time
    below ``min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (try - 1))``.

    Used as ``for _ in attempts(ATTEMPTS):`` around a read-then-``mutate_row``
    that ``continue``s on ``ConditionFailed``.  ``count`` tries take at most about
    ``count * LONGEST_PAUSE`` seconds of pauses.
    """
    for n in range(count):
        if n:
            pause(n)
        yield n


def pause(failed: int) -> None:
    """Sleep before the try that follows ``failed`` failed ones (``failed`` >= 1): a random
    time below ``min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (failed - 1))``.

    For a loop that cannot be written with :func:`attempts` because not every round is a
    retry (one that goes on to its next batch after a success, say).
    """
    time.sleep(random.uniform(0, min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (failed - 1))))

"""The tests' polling helper keeps no failed probe's exception alive after it returns.

A probe's exception (an HTTP 503 from a server still starting) holds the answer's
socket; kept in a reference cycle, it lives until a later garbage collection, whose
ResourceWarning then fails an unrelated test (as one cluster test's setup did in CI).
"""

from __future__ import annotations

import gc
import weakref

from .._procs import wait_for

seen: list[weakref.ref[ProbeFailed]] = []


class ProbeFailed(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        seen.append(weakref.ref(self))  # no frame of the probe names it


def test_a_failed_probe_is_freed_when_wait_for_returns() -> None:
    def probe() -> bool:
        if not seen:
            raise ProbeFailed("not yet")
        return True

    gc.disable()  # only reference counting may free it
    try:
        assert wait_for(probe, 5, "the second probe", interval=0.001)
        assert seen[0]() is None
    finally:
        gc.enable()

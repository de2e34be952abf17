"""raftkv.answers: the tick thread's results reach the loop with one wake-up a burst."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from raftkv.answers import Handover


def test_a_burst_of_calls_from_another_thread_wakes_the_loop_once() -> None:
    loop = asyncio.new_event_loop()
    wakeups = []
    real = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        wakeups.append(callback)
        return real(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        handover = Handover(loop)
        ran: list[int] = []
        # A tick settles many entries and reads before the loop gets to run.
        burst = threading.Thread(target=lambda: [handover.call(ran.append, i) for i in range(100)])
        burst.start()
        burst.join()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert ran == list(range(100)) and len(wakeups) == 1
        # Once the loop has taken them, the next call wakes it again: none is stranded.
        later = threading.Thread(target=handover.call, args=(ran.append, 100))
        later.start()
        later.join()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert ran[-1] == 100 and len(wakeups) == 2
    finally:
        loop.close()


def test_a_call_that_raises_does_not_strand_the_rest_of_its_burst() -> None:
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        handover = Handover(loop)
        ran: list[int] = []

        def fails(_: int) -> None:
            raise BlockingIOError("the engine's wake-up pipe is full")

        burst = threading.Thread(target=lambda: [handover.call(ran.append, 1),
                                                 handover.call(fails, 2),
                                                 handover.call(ran.append, 3)])
        burst.start()
        burst.join()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert ran == [1, 3]
        assert [type(c["exception"]) for c in reported] == [BlockingIOError]
    finally:
        loop.close()


def test_a_call_after_the_loop_closed_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    handover = Handover(loop)
    loop.close()
    handover.call(print, "nobody waits")  # the tick thread outlived the server: no raise
    handover.call(print, "nor here")

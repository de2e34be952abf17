"""A burst of uploads into one drive: every upload links, none runs out of tries.

Every link is conditioned on the drive's quota cell, so writers that arrive
together all fail but one; without a random pause before each new try they
collide again round after round (a WebDAV client sending a dozen PUTs at once
got 409s).  shards.model.retry spreads them out."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace

from shards.model import drive, retry
from shards.model.drive import ROOT
from shards.model.drive.reads import usage_cell

from .._memstore import MemClient

USER = "erin"
WRITERS = 16


class Replicated(MemClient):
    """Reads take 2 ms and changes 5 ms before they apply, as on a replicated group:
    writers that start together read the same quota version and collide."""

    def get(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        threading.Event().wait(0.002)
        return super().get(*args, **kwargs)

    def mutate_row(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        threading.Event().wait(0.005)
        return super().mutate_row(*args, **kwargs)


def test_a_burst_of_uploads_into_one_folder_all_link() -> None:
    client = Replicated()
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def upload(n: int) -> None:
        start.wait(timeout=10)
        try:
            drive.store_file(client, USER, ROOT, f"photo {n}.jpg", io.BytesIO(b"x" * (n + 1)),
                             size=n + 1, quota=1 << 20)
        except Exception as exc:  # collected: the assertion below names them
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    listed = drive.list_folder(client, USER, ROOT).items
    assert sorted(i.name for i in listed) == sorted(f"photo {n}.jpg" for n in range(WRITERS))
    assert usage_cell(client, USER)[0] == sum(range(1, WRITERS + 1))


def test_the_pauses_double_up_to_the_longest_and_come_only_between_tries(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(retry, "time", SimpleNamespace(sleep=slept.append))
    monkeypatch.setattr(retry, "random", SimpleNamespace(uniform=lambda low, high: high))
    assert list(retry.attempts(8)) == list(range(8))
    assert slept == [0.004, 0.008, 0.016, 0.032, 0.064, 0.1, 0.1]
    slept.clear()
    retry.pause(3)  # what a loop that also goes on after a success calls after its 3rd loss
    assert slept == [0.016]

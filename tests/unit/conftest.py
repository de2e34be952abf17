"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pysyncobj.transport
import pytest

from .._portal import unit_portal


@pytest.fixture
def app(store: Any) -> Iterator[Any]:
    """The portal over the requesting module's ``store`` fixture, closed after the test."""
    app = unit_portal(store)
    yield app
    app.close()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """fsyncs (by file name; "fsync" on the engine's thread, "syncer fsync" on the journal's
    syncer) and messages leaving the engine, in order."""
    seen: list[tuple[str, Any]] = []
    real_fsync, real_send = os.fsync, pysyncobj.transport.TCPTransport.send

    def fsync(fd: int) -> None:
        syncer = threading.current_thread().name.startswith("journal-syncer")
        seen.append(("syncer fsync" if syncer else "fsync",
                     os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def send(self: Any, target: Any, message: dict[str, Any]) -> bool:
        seen.append(("send", message.get("type")))
        return real_send(self, target, message)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(pysyncobj.transport.TCPTransport, "send", send)
    return seen

"""The process's loops on raftkv.background: each keeps its schedule, and none is hand-made."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from portal.heartbeat import AdminBootstrap, DrivePurger
from raftkv.blobs import BlobStore
from raftkv.cluster import BlobSettings
from raftkv.errors import UnavailableError
from raftkv.repair import BlobKeeper
from raftkv.store import Store
from shards.model import accounts, drive
from shards.model.drive import ROOT
from shards.site import Site

from .._memstore import MemClient

ROOT_DIR = Path(__file__).resolve().parents[2]

# The threads that are not loops: each blocks on something other than a clock.
NOT_LOOPS = {
    "raftkv/background.py": 1,  # the loops' own thread
    "raftkv/connection.py": 1,  # a connection's reader, blocked on its socket
    "raftkv/snapshots.py": 2,   # one snapshot being written, and LMDB copying into it: run once
    "raftkv/snapshot_pull.py": 1,  # one snapshot being pulled: runs once, to its end
    "raftkv/node/journal_syncer.py": 1,  # the journal's syncer, blocked until a sync is asked for
    "balancer/server.py": 1,    # serve_forever
    "deploy/launcher.py": 1,    # serve_forever (the control API)
    "raftkv/metrics.py": 1,     # serve_forever (GET /metrics)
    "deploy/logfiles.py": 1,    # a child's log copier, blocked on its pipe until it closes
    "imapd/server.py": 1,       # the IMAP listeners' event loop: run_forever
}


def test_every_background_thread_is_a_background_loop() -> None:
    found: dict[str, int] = {}
    for package in ("raftkv", "shards", "portal", "smtpd", "imapd", "balancer", "deploy"):
        for path in (ROOT_DIR / package).rglob("*.py"):
            count = len(re.findall(r"threading\.Thread\(", path.read_text()))
            if count:
                found[str(path.relative_to(ROOT_DIR))] = count
    assert found == NOT_LOOPS, "a new background loop should derive from BackgroundLoop"


class Flaky:
    """A portal whose store client cannot be had the first ``failures`` times."""

    def __init__(self, client: MemClient, failures: int, **config: Any) -> None:
        self._client = client
        self.failures = failures
        self.config = SimpleNamespace(**config)

    def client(self) -> MemClient:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("no leader yet")
        return self._client


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- the frontend's loops --------------------------------------------------------------------

def deleted_tree(client: MemClient, user: str) -> None:
    top = drive.create_folder(client, user, ROOT, "top")
    sub = drive.create_folder(client, user, top.id, "sub")
    for n in range(5):
        drive.store_file(client, user, sub.id, f"f{n}", io.BytesIO(b"x"), size=1,
                         quota=1 << 20, ctype="text/plain")
    drive.delete_folder(client, user, top.id)
    assert drive.pending(client, user)


def test_the_drive_purger_finishes_clean_ups_and_retries_through_an_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    client = MemClient()
    deleted_tree(client, "alice")
    deleted_tree(client, "bob")
    portal = Flaky(client, failures=2)
    purger = DrivePurger(portal, interval=0.05)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING):
            purger.add("alice")
            purger.add("bob")
            assert wait_until(lambda: not drive.pending(client, "alice")
                              and not drive.pending(client, "bob"))
        assert portal.failures == 0
        assert sum("retrying" in r.getMessage() for r in caplog.records) == 2
        assert drive.usage(client, "alice") == drive.usage(client, "bob") == 0
        deleted_tree(client, "alice")  # idle meanwhile, it takes the next one at once
        purger.add("alice")
        assert wait_until(lambda: not drive.pending(client, "alice"), timeout=2.0)
    finally:
        assert purger.stop()


def test_the_admin_bootstrap_retries_until_the_store_answers_then_ends() -> None:
    client = MemClient()
    portal = Flaky(client, failures=2, admin_password="a long enough password",
                   site=Site(admin_user="admin"))
    loop = AdminBootstrap(portal, interval=0.05).start()  # type: ignore[arg-type]
    try:
        assert wait_until(lambda: not loop.running)
        assert portal.failures == 0
        assert accounts.is_admin(client, "admin")
    finally:
        loop.stop()


# -- the blob keeper's schedule ------------------------------------------------------------

def test_the_keeper_repairs_when_woken_but_at_most_once_a_second(tmp_path: Path) -> None:
    keeper = BlobKeeper(Store(shards=4), BlobStore(tmp_path / "blobs"), ["127.0.0.1:1"],
                        "127.0.0.1:1", b"s" * 16,
                        BlobSettings(repair_interval=60.0, gc_interval=60.0), lambda: False)
    passes: list[float] = []
    keeper.repair_pass = lambda: passes.append(time.monotonic())  # type: ignore[method-assign]
    keeper.wake()  # a read found a chunk missing (even before the keeper ran): a pass now
    keeper.start()
    try:
        assert wait_until(lambda: len(passes) == 1, timeout=0.9)
        keeper.wake()  # another, at once: held until a second after the first
        keeper.corrupt()
        time.sleep(0.3)
        assert len(passes) == 1
        assert wait_until(lambda: len(passes) == 2, timeout=5.0)
        assert passes[1] - passes[0] >= 0.95
        time.sleep(1.2)
        assert len(passes) == 2  # the next one is due in a minute
    finally:
        assert keeper.stop()

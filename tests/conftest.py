"""Fixtures shared by every test: real processes, real sockets, the real store."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._logwatch import SecretWatch, scan_files
from .cluster import KVCluster, running


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session: no log of it holds a password or secret (tests/_logwatch.py).
    Set up first, so torn down last, after every process the session started has stopped."""
    watch = SecretWatch()
    logging.getLogger().addHandler(watch)
    yield
    logging.getLogger().removeHandler(watch)
    found = watch.found + scan_files(tmp_path_factory.getbasetemp())
    assert not found, f"a password or secret in the logs: {found}"


@pytest.fixture(autouse=True)
def leaks_blamed_on_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A socket or file that a test drops unclosed is collected at that test's teardown, so
    its ResourceWarning (an error here) names the test that leaked it, not whichever later
    test the collector happened to run in.  Only for the process-starting tests: a collection
    costs milliseconds, and the unit tests are many."""
    yield
    if any(request.node.get_closest_marker(m) for m in ("cluster", "slow", "browser")):
        gc.collect()


@pytest.fixture(scope="session")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVCluster]:
    """One 3-replica storage group, shared by the session's tests.

    Tests that crash replicas must use ``fresh_cluster`` instead.
    """
    with running(KVCluster(Path(tmp_path_factory.mktemp("kv")), extra=SHARED_AUTH)) as cluster:
        yield cluster


# Every test's client comes from 127.0.0.1, so per-address limits would count the whole
# session as one stranger; the tests of those limits set their own [auth] table.
SHARED_AUTH = """
[auth]
address = { free = 1000000 }
signup = { free = 1000000 }
"""


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A 3-replica group of the test's own, to crash and restart at will."""
    with running(KVCluster(tmp_path / "kv")) as cluster:
        yield cluster

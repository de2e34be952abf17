"""Fixtures shared by every test: real processes, real sockets, the real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import KVCluster, running


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

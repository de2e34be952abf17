"""Fixtures shared by every test: real processes, real sockets, the real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import KVCluster


@pytest.fixture(scope="session")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVCluster]:
    """One 3-replica storage group, shared by the session's tests.

    Tests that crash replicas must use ``fresh_cluster`` instead.
    """
    cluster = KVCluster(Path(tmp_path_factory.mktemp("kv")))
    cluster.start()
    try:
        cluster.leader()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A 3-replica group of the test's own, to crash and restart at will."""
    cluster = KVCluster(tmp_path / "kv")
    cluster.start()
    try:
        cluster.leader()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()

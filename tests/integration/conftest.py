"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cluster import KVCluster, running
from ..netns import NetnsLab


@pytest.fixture(scope="module")
def client(kv_cluster):
    """A store client on the session's shared cluster, one per test module."""
    with kv_cluster.client() as client:
        yield client


@pytest.fixture
def lab_cluster(tmp_path: Path) -> Iterator[KVCluster]:
    """A three-replica group, each replica in its own network namespace (so a test can cut one off)."""
    if not NetnsLab.available():
        pytest.skip("network namespaces are refused here")
    lab = NetnsLab(3)
    lab.up()
    try:
        with running(KVCluster(tmp_path / "kv", lab=lab)) as cluster:
            yield cluster
    finally:
        lab.down()

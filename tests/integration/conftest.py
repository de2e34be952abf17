"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client(kv_cluster):
    """A store client on the session's shared cluster, one per test module."""
    with kv_cluster.client() as client:
        yield client

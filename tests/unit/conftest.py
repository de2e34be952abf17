"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .._portal import unit_portal


@pytest.fixture
def app(store: Any) -> Iterator[Any]:
    """The portal over the requesting module's ``store`` fixture, closed after the test."""
    app = unit_portal(store)
    yield app
    app.close()

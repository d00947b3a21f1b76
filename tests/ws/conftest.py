"""Fixtures of the WebSocket tests: which client, and a config to extend."""

from __future__ import annotations

import pytest

from .clients import CLIENTS


@pytest.fixture(params=CLIENTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def config(local_config: dict[str, object]) -> dict[str, object]:
    """``local_config``, to extend per test (every other setting at its default)."""
    return dict(local_config)

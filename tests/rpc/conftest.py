"""Fixtures of the service RPC tests.

Every test gets a broker of its own (``memory://test-<uuid>``), so that no service a test
registers is seen by another. Services with only ``@rpc`` methods open no socket: the
tests of timing run under ``autojump_clock``; those that use threads (blocking workers,
the blocking client) run on the real clock, with timeouts they never reach.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from triosvc.rpc import RpcClient, open_rpc_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
def broker_url() -> str:
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture
def rpc_config(broker_url: str) -> dict[str, object]:
    """A config naming the test's own broker; tests may add keys to it."""
    return {"BROKER_URL": broker_url}


@pytest.fixture
async def client(rpc_config: dict[str, object]) -> AsyncIterator[RpcClient]:
    """A standalone client on the test's broker (RPC_TIMEOUT as in ``rpc_config`` now)."""
    async with open_rpc_client(rpc_config) as rpc_client:
        yield rpc_client

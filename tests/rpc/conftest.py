"""Fixtures of the service RPC tests.

Every test gets a broker of its own, so that no service a test registers is seen by
another. The behaviour tests run on both transports: ``broker_url`` is
``memory://test-<uuid>`` (``[memory]``) or the tests' own Redis server, flushed
(``[redis]``). Services with only ``@rpc`` methods open no socket on the memory
transport: the tests of timing run under ``autojump_clock`` there, and only there (a
virtual clock would jump while Redis answers); ``@pytest.mark.memory_only`` keeps a test
off Redis for another reason, given with it. The tests that use threads (blocking
workers, the blocking client), and every Redis test, run on the real clock with
timeouts they never reach.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import trio

from triosvc.rpc import RpcClient, open_rpc_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Real seconds a test on Redis may take before it fails.
REDIS_TEST_TIMEOUT = 20


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_only(reason): runs on the memory transport only, for that reason"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker_kind" not in metafunc.fixturenames:
        return
    kinds = ["memory"]
    if (
        "autojump_clock" not in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("memory_only") is None
    ):
        kinds.append("redis")
    metafunc.parametrize("broker_kind", kinds)


async def _watchdog(seconds: float) -> None:
    await trio.sleep(seconds)
    raise trio.TooSlowError(f"this test on Redis took more than {seconds} s")


@pytest.fixture
def redis_url_if_needed(broker_kind: str, request: pytest.FixtureRequest) -> str | None:
    """The Redis URL for ``[redis]`` tests (starting the server only for them)."""
    if broker_kind != "redis":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def broker_url(redis_url_if_needed: str | None, nursery: trio.Nursery) -> str:
    if redis_url_if_needed is None:
        return f"memory://test-{uuid.uuid4().hex}"
    # On Redis, the test runs on the real clock: a hang fails it (the nursery's tasks
    # crash the test) instead of stalling the suite.
    nursery.start_soon(_watchdog, REDIS_TEST_TIMEOUT)
    return redis_url_if_needed


@pytest.fixture
def rpc_config(broker_url: str) -> dict[str, object]:
    """A config naming the test's own broker; tests may add keys to it. Services with
    HTTP routes listen on a free loopback port."""
    return {"BROKER_URL": broker_url, "WEB_SERVER_ADDRESS": "127.0.0.1:0"}


@pytest.fixture
async def client(rpc_config: dict[str, object]) -> AsyncIterator[RpcClient]:
    """A standalone client on the test's broker (RPC_TIMEOUT as in ``rpc_config`` now)."""
    async with open_rpc_client(rpc_config) as rpc_client:
        yield rpc_client

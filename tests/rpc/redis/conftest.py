"""Fixtures of the Redis transport's own tests.

``broker_url`` is the session's Redis server, flushed for each test (no memory
parametrisation here); every test runs with short leases and backoffs (``fast_options``)
so that deaths and recoveries are seen within a second or two of real time.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

import pytest

from triosvc.runners import run_services

from .server import RedisServer, require_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

    import trio

    from triosvc.rpc._redis import RedisOptions
    from triosvc.runners import ServiceRunner

    StartServices = Callable[..., Awaitable[ServiceRunner]]

if importlib.util.find_spec("coredis") is None and not os.environ.get("CI"):
    # Without the redis extra these modules cannot even be imported: leave them out (the
    # [redis] cases of tests/rpc say why they skip). With CI set, they fail to import.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def fast_options(monkeypatch: pytest.MonkeyPatch) -> RedisOptions:
    """Short leases and backoffs (the child process of the SIGKILL test uses the same)."""
    from triosvc.rpc import _redis

    options = _redis.RedisOptions(
        lease_ttl=2.0,
        lease_interval=0.25,
        block=1.0,
        connect_timeout=1.0,
        op_timeout=2.0,
        close_timeout=2.0,
        backoff=(0.02, 0.2),
    )
    monkeypatch.setattr(_redis, "DEFAULTS", options)
    return options


@pytest.fixture
def broker_url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server for this test alone, which it may stop and start again."""
    server = RedisServer(require_redis(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def start_services(nursery: trio.Nursery) -> AsyncIterator[StartServices]:
    """``runner = await start_services(config, *services)``, stopped after the test.

    ``runner_factory`` without its run on each HTTP engine: these services have only
    ``@rpc`` methods and open no HTTP port.
    """
    runners: list[ServiceRunner] = []

    async def start(config: Mapping[str, object], *services: type) -> ServiceRunner:
        runner: ServiceRunner = await nursery.start(run_services, config, *services)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        await runner.stop()

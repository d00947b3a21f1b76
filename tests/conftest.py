"""Shared fixtures.

Rules for tests that touch the network (from trio-websocket's suite): servers bind
127.0.0.1 on port 0 (or the ``web_config`` fixture's free port); every test that talks
over a socket runs under ``trio.fail_after``; synchronise on events and
``trio.testing.wait_all_tasks_blocked``, never on sleeps; timing is tested under
``autojump_clock`` through the in-memory ASGI transport (``asgi_client``), where no real
socket can make the clock jump early.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import pytest

from triosvc.web.server import WebServer

from .rpc.redis.server import RedisServer, require_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from triosvc.runners import ServiceRunner


def on_both_engines(hypercorn_bug: str) -> pytest.MarkDecorator:
    """Run a test with ``engine`` = "hypercorn" (a strict xfail: ``hypercorn_bug`` says why)
    and "triosvc": for what SPEC asks that only triosvc's own engine can give."""
    hypercorn = pytest.param(
        "hypercorn", marks=pytest.mark.xfail(strict=True, reason=f"BUG: {hypercorn_bug}")
    )
    return pytest.mark.parametrize("engine", [hypercorn, "triosvc"])


#: Upper bound, in seconds, for any test that talks over a real socket.
SOCKET_TEST_TIMEOUT = 20


@pytest.fixture
def local_config() -> dict[str, object]:
    """A config that listens on a port the OS picks: no clash between tests."""
    return {"WEB_SERVER_ADDRESS": "127.0.0.1:0"}


@asynccontextmanager
async def _http_client(runner: ServiceRunner) -> AsyncIterator[httpx.AsyncClient]:
    assert runner.url is not None
    # verify=False: plain HTTP on loopback; building a TLS context per client is slow.
    async with httpx.AsyncClient(base_url=runner.url, verify=False) as client:
        yield client


@asynccontextmanager
async def _asgi_client(runner: ServiceRunner) -> AsyncIterator[httpx.AsyncClient]:
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    transport = httpx.ASGITransport(app=server.app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def http_client() -> Callable[[ServiceRunner], object]:
    """``async with http_client(runner) as client``: httpx over a real socket."""
    return _http_client


@pytest.fixture
def asgi_client() -> Callable[[ServiceRunner], object]:
    """``async with asgi_client(runner) as client``: httpx straight into the ASGI app
    (no socket), for tests under ``autojump_clock``."""
    return _asgi_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The tests' Redis server (RPC on Redis, the cluster-wide hub), for the whole session;
    skips without ``redis-server`` and coredis (fails if ``CI`` is set)."""
    server = RedisServer(require_redis(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis server, emptied for this test."""
    redis_server.command("FLUSHALL")
    return redis_server.url

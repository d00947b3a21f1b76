"""Redis going away and coming back (SPEC §6): calls fail within their deadline with a
clear ServiceUnavailable, the services keep running, and they recover by themselves."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import pytest
import trio

from triosvc.exceptions import ServiceUnavailable, UnknownService
from triosvc.rpc import RpcClient, open_rpc_client, rpc

if TYPE_CHECKING:
    from .server import RedisServer

#: Real seconds any test here may take.
TEST_TIMEOUT = 20


class Echo:
    name = "echo"

    started: trio.Event
    release: trio.Event

    @rpc
    async def echo(self, value):
        return value

    @rpc
    async def hold(self):
        cls = type(self)
        cls.started.set()
        await cls.release.wait()
        return "held"


@pytest.fixture(autouse=True)
def fresh_events() -> None:
    Echo.started = trio.Event()
    Echo.release = trio.Event()


async def until_answered(client: RpcClient) -> float:
    """Call until the service answers again; how long that took."""
    began = trio.current_time()
    while True:
        try:
            assert await client.echo.echo("back") == "back"
            return trio.current_time() - began
        except (ServiceUnavailable, UnknownService):
            await trio.sleep(0.05)  # the transports' own backoff runs on the real clock


async def test_while_redis_is_down_calls_fail_at_once_and_everything_recovers_after(
    own_server: RedisServer, start_services, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "triosvc.rpc.redis")
    config = {"BROKER_URL": own_server.url}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await start_services(config, Echo)
        async with open_rpc_client(config, timeout=10) as client:
            assert await client.echo.echo(1) == 1
            outcome: list[object] = []
            async with trio.open_nursery() as nursery:

                async def hold() -> None:
                    try:
                        outcome.append(await client.echo.hold())
                    except Exception as exc:
                        outcome.append(exc)

                nursery.start_soon(hold)
                await Echo.started.wait()
                await own_server.stop_async()
                stopped = trio.current_time()
            # The call in flight hears at once that its answer cannot come.
            [error] = outcome
            assert isinstance(error, ServiceUnavailable)
            assert "lost Redis at redis://127.0.0.1:" in str(error)
            assert trio.current_time() - stopped < 2  # not the 10 s timeout
            # New calls fail at once, naming Redis.
            began = trio.current_time()
            with pytest.raises(ServiceUnavailable, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
                await client.echo.echo(2)
            assert trio.current_time() - began < 1
            assert not runner.stopped
            # Redis comes back (empty: it persists nothing): the runner registers again.
            await own_server.start_async()
            assert await until_answered(client) < 3
            Echo.release.set()  # its answer goes nowhere: the caller has gone
            assert [await client.echo.echo(n) for n in range(3)] == [0, 1, 2]
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"lost Redis at {own_server.url}") for m in messages), messages
    assert any(m == f"Redis at {own_server.url} answers again" for m in messages), messages


async def test_a_runner_started_while_redis_is_down_serves_once_it_is_up(
    own_server: RedisServer, start_services
):
    own_server.stop()
    config = {"BROKER_URL": own_server.url}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await start_services(config, Echo)
        async with open_rpc_client(config, timeout=10) as client:
            with pytest.raises(ServiceUnavailable, match="cannot reach Redis"):
                await client.echo.echo(1)
            await own_server.start_async()
            assert await until_answered(client) < 3
        assert not runner.stopped


async def test_a_redis_that_stops_answering_fails_calls_within_their_deadline(
    own_server: RedisServer, start_services
):
    """SIGSTOP: the sockets stay open and nothing answers (as in a network partition)."""
    config = {"BROKER_URL": own_server.url}
    assert own_server.process is not None
    with trio.fail_after(TEST_TIMEOUT):
        runner = await start_services(config, Echo)
        async with open_rpc_client(config, timeout=0.5) as client:
            assert await client.echo.echo(1) == 1
            os.kill(own_server.process.pid, signal.SIGSTOP)
            try:
                began = trio.current_time()
                with pytest.raises(ServiceUnavailable, match="did not answer in time"):
                    await client.echo.echo(2)
                assert trio.current_time() - began < 1
            finally:
                os.kill(own_server.process.pid, signal.SIGCONT)
            assert await until_answered(client) < 3
        assert not runner.stopped

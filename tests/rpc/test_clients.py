"""Standalone clients (SPEC §6): ``open_rpc_client`` for trio code, ``rpc_client`` for
scripts and threads, and services in another trio run of the same process."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio
import trio.testing

from triosvc.config import Config
from triosvc.exceptions import (
    ConfigurationError,
    NotFound,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownService,
)
from triosvc.rpc import (
    BlockingRpcClient,
    RpcClient,
    open_rpc_client,
    rpc,
    rpc_client,
)
from triosvc.runners import ServiceRunner, run_services

#: Upper bound, in real seconds, for the tests that wait for other threads.
THREAD_TEST_TIMEOUT = 10


class Echo:
    name = "echo"

    @rpc
    async def echo(self, *args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    @rpc
    def blocking_echo(self, value):
        return value

    @rpc
    async def missing(self, what):
        raise NotFound(f"no {what}")

    @rpc
    async def broken(self):
        raise ValueError("broken")

    @rpc
    async def forever(self):
        await trio.sleep_forever()


@pytest.fixture
async def echo(runner_factory, rpc_config) -> ServiceRunner:
    return await runner_factory(rpc_config, Echo)


# -- the async client --------------------------------------------------------------------------


async def test_the_async_client_calls_by_attribute_and_by_name(echo, client: RpcClient):
    expected = {"args": [1], "kwargs": {"b": 2}}
    assert await client.echo.echo(1, b=2) == expected
    assert await client.call("echo", "echo", 1, b=2) == expected
    # call() takes the service and method positionally: they may be keyword names too.
    assert await client.call("echo", "echo", service="s", method="m") == {
        "args": [],
        "kwargs": {"service": "s", "method": "m"},
    }


async def test_an_exception_leaves_the_client_s_block_as_itself(echo, rpc_config):
    with pytest.raises(NotFound, match="no thing"):
        async with open_rpc_client(rpc_config) as client:
            await client.echo.missing("thing")


@pytest.mark.parametrize("form", ["url", "mapping", "config"])
async def test_the_async_client_takes_a_url_a_mapping_or_a_config(echo, broker_url: str, form: str):
    given: object = {
        "url": broker_url,
        "mapping": {"BROKER_URL": broker_url},
        "config": Config({"BROKER_URL": broker_url}),
    }[form]
    async with open_rpc_client(given) as client:  # type: ignore[arg-type]
        assert await client.echo.blocking_echo("x") == "x"


async def test_the_default_client_uses_the_default_memory_broker(runner_factory):
    class DefaultBroker:
        name = "default_broker_test_service"

        @rpc
        async def ping(self):
            return "pong"

    await runner_factory({}, DefaultBroker)
    async with open_rpc_client() as client:
        assert await client.default_broker_test_service.ping() == "pong"
    async with open_rpc_client("memory://another") as client:
        with pytest.raises(UnknownService):
            await client.default_broker_test_service.ping()


async def test_the_client_s_timeout_replaces_rpc_timeout(autojump_clock, echo, rpc_config):
    async with open_rpc_client({**rpc_config, "RPC_TIMEOUT": 100}, timeout=3) as client:
        start = trio.current_time()
        with pytest.raises(RpcTimeout, match=r"echo\.forever did not answer within 3s"):
            await client.echo.forever()
    assert trio.current_time() - start == pytest.approx(3)


async def test_a_closed_client_refuses_calls(echo, rpc_config):
    async with open_rpc_client(rpc_config) as client:
        pass
    with pytest.raises(ServiceUnavailable, match="closed"):
        await client.echo.echo()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("memory://bad name", "BROKER_URL='memory://bad name': expected"),
        ("amqp://guest@host", "BROKER_URL='amqp://guest@host': expected"),
        ({"RPC_TIMEOUT": 0}, "RPC_TIMEOUT=0"),
    ],
)
async def test_a_bad_config_is_a_configuration_error(config, message):
    with pytest.raises(ConfigurationError, match=message):
        async with open_rpc_client(config):
            pass


async def test_a_bad_client_timeout_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds > 0"):
        async with open_rpc_client(timeout=-1):
            pass


# -- the blocking client -----------------------------------------------------------------------


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "triosvc-rpc-client"]


async def test_the_blocking_client_calls_from_a_thread_and_joins_its_own(echo, broker_url):
    def script() -> list[object]:
        outcomes: list[object] = []
        with rpc_client(broker_url) as client:
            assert isinstance(client, BlockingRpcClient)
            assert len(client_threads()) == 1
            outcomes.append(client.echo.echo(1, "two", three=3))
            outcomes.append(client.call("echo", "blocking_echo", [1, 2]))
            for call in (
                lambda: client.echo.missing("user"),
                lambda: client.echo.broken(),
                lambda: client.nobody.anything(),
                lambda: client.echo.echo({1, 2}),
            ):
                try:
                    call()
                except Exception as exc:
                    outcomes.append((type(exc), str(exc)))
        outcomes.append(len(client_threads()))
        return outcomes

    with trio.fail_after(THREAD_TEST_TIMEOUT):
        outcomes = await trio.to_thread.run_sync(script)
    assert outcomes[:2] == [{"args": [1, "two"], "kwargs": {"three": 3}}, [1, 2]]
    kinds = [kind for kind, _ in outcomes[2:6]]
    assert kinds[:3] == [NotFound, RemoteError, UnknownService]
    assert issubclass(kinds[3], TypeError)
    assert outcomes[2][1] == "no user"
    assert "argument 0" in outcomes[5][1]
    assert outcomes[6] == 0  # the client's thread has been joined


async def test_one_blocking_client_serves_several_threads(echo, broker_url):
    def script() -> list[object]:
        with rpc_client(broker_url) as client, ThreadPoolExecutor(4) as pool:
            return list(pool.map(client.echo.blocking_echo, range(20)))

    with trio.fail_after(THREAD_TEST_TIMEOUT):
        assert await trio.to_thread.run_sync(script) == list(range(20))


async def test_a_closed_blocking_client_refuses_calls(echo, broker_url):
    def script() -> str:
        with rpc_client(broker_url) as client:
            proxy = client.echo
        try:
            proxy.echo()
        except ServiceUnavailable as exc:
            return str(exc)
        return "called"

    with trio.fail_after(THREAD_TEST_TIMEOUT):
        assert "has ended" in await trio.to_thread.run_sync(script)


async def test_the_blocking_client_refuses_to_run_inside_trio(broker_url):
    with pytest.raises(RuntimeError, match="open_rpc_client"), rpc_client(broker_url):
        pass


async def test_the_blocking_client_s_bad_config_fails_before_any_thread_starts():
    def script() -> tuple[type[Exception], int]:
        try:
            with rpc_client("memory://no spaces"):
                pass
        except ConfigurationError as exc:
            return type(exc), len(client_threads())
        raise AssertionError("no error")

    with trio.fail_after(THREAD_TEST_TIMEOUT):
        assert await trio.to_thread.run_sync(script) == (ConfigurationError, 0)


# -- services in another trio run --------------------------------------------------------------


class Remote:
    name = "remote"

    cancelled = threading.Event()

    @rpc
    async def where(self):
        return threading.current_thread().name

    @rpc
    async def forever(self):
        try:
            await trio.sleep_forever()
        finally:
            type(self).cancelled.set()


async def test_services_in_another_thread_s_trio_run_answer_and_time_out(broker_url):
    """The memory broker is shared by the process: a runner in a thread of its own (its own
    trio run and clock) serves a client in this run; deadlines cross between the clocks."""
    Remote.cancelled.clear()
    started: queue.SimpleQueue[tuple[ServiceRunner, trio.lowlevel.TrioToken]] = queue.SimpleQueue()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, {"BROKER_URL": broker_url}, Remote)
            started.put((runner, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(serve,), name="other-run")
    thread.start()
    with trio.fail_after(THREAD_TEST_TIMEOUT):
        runner, token = await trio.to_thread.run_sync(started.get, abandon_on_cancel=True)
    try:
        with trio.fail_after(THREAD_TEST_TIMEOUT):
            async with open_rpc_client(broker_url, timeout=0.2) as client:
                assert await client.remote.where() == "other-run"
                with pytest.raises(RpcTimeout):
                    await client.remote.forever()
            # The callee, in the other run, was cancelled at the same deadline.
            assert await trio.to_thread.run_sync(Remote.cancelled.wait, THREAD_TEST_TIMEOUT)
    finally:
        token.run_sync_soon(runner.request_stop)
        await trio.to_thread.run_sync(thread.join)

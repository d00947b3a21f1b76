"""Several instances of a service, and stopping (SPEC §6, §8): each call handled once,
round-robin; a stopping runner takes no new calls and finishes those in flight."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import trio
import trio.testing

from triosvc.exceptions import ServiceUnavailable, UnknownService
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.rpc import RpcClient, RpcProxy, open_rpc_client, rpc
from triosvc.web.handlers import http


class InstanceName(DependencyProvider):
    """Injects the ``INSTANCE`` key of the runner's config: which runner handles a call."""

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        return worker_ctx.container.config["INSTANCE"]


class CallIds(DependencyProvider):
    """Records which runner handled which call."""

    async def worker_setup(self, worker_ctx: WorkerContext) -> None:
        Counted.handled.append((str(worker_ctx.container.config["INSTANCE"]), worker_ctx.call_id))


class Counted:
    name = "counted"
    instance = InstanceName()
    ids = CallIds()

    #: (instance, call id) of every call handled; events to hold and release calls.
    handled: list[tuple[str, str]]
    started: dict[str, trio.Event]
    release: dict[str, trio.Event]

    @rpc
    async def which(self):
        return self.instance

    @rpc
    async def hold(self, key):
        cls = type(self)
        cls.started[key].set()
        await cls.release[key].wait()
        return self.instance

    @rpc
    async def forever(self):
        await trio.sleep_forever()


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    Counted.handled = []
    Counted.started = {key: trio.Event() for key in "abc"}
    Counted.release = {key: trio.Event() for key in "abc"}


@pytest.fixture
def start(runner_factory, rpc_config):
    async def start(instance: str, **config: object):
        return await runner_factory({**rpc_config, "INSTANCE": instance, **config}, Counted)

    return start


async def test_two_runners_share_a_service_s_calls_round_robin(start, client: RpcClient):
    await start("a")
    await start("b")
    answers = [await client.counted.which() for _ in range(10)]
    assert Counter(answers) == {"a": 5, "b": 5}
    assert all(first != second for first, second in itertools.pairwise(answers))


async def test_each_of_many_concurrent_calls_is_handled_exactly_once(start, client: RpcClient):
    await start("a")
    await start("b")
    answers: list[str] = []

    async def call() -> None:
        answers.append(await client.counted.which())

    async with trio.open_nursery() as nursery:
        for _ in range(60):
            nursery.start_soon(call)
    assert len(answers) == 60
    assert len(Counted.handled) == 60
    assert len({call_id for _, call_id in Counted.handled}) == 60
    assert Counter(answers) == Counter(instance for instance, _ in Counted.handled)
    assert set(answers) == {"a", "b"}


async def test_a_stopped_runner_takes_no_more_calls(start, client: RpcClient):
    first = await start("a")
    await start("b")
    await first.stop()
    answers = [await client.counted.which() for _ in range(6)]
    assert answers == ["b"] * 6


async def test_a_stopping_runner_finishes_its_call_while_new_ones_go_elsewhere(
    start, client: RpcClient
):
    first = await start("a")
    async with trio.open_nursery() as nursery:
        held: list[str] = []

        async def hold() -> None:
            held.append(await client.counted.hold("a"))

        nursery.start_soon(hold)
        await Counted.started["a"].wait()
        await start("b")
        first.request_stop()
        await trio.testing.wait_all_tasks_blocked()
        assert not first.stopped
        # Stopping: no new calls for "a", at once.
        assert [await client.counted.which() for _ in range(4)] == ["b"] * 4
        Counted.release["a"].set()
    assert held == ["a"]
    await first.stop()


@pytest.mark.memory_only(
    "waits for the stop with wait_all_tasks_blocked, which cannot see Redis's progress; "
    "tests/rpc/redis has this test with a wait that can"
)
async def test_graceful_stop_with_a_call_in_flight_completes_it(start, client: RpcClient):
    runner = await start("a")
    async with trio.open_nursery() as nursery:
        held: list[str] = []

        async def hold() -> None:
            held.append(await client.counted.hold("a"))

        nursery.start_soon(hold)
        await Counted.started["a"].wait()
        nursery.start_soon(runner.stop)
        await trio.testing.wait_all_tasks_blocked()
        # The only instance is stopping: a new call finds no live instance, at once.
        with pytest.raises(UnknownService):
            await client.counted.which()
        assert not runner.stopped
        Counted.release["a"].set()
    assert held == ["a"]
    assert runner.stopped


async def test_a_call_still_running_at_the_end_of_the_grace_period_is_cancelled(
    autojump_clock, start, rpc_config
):
    runner = await start("a", SHUTDOWN_GRACE_PERIOD=2)
    async with open_rpc_client(rpc_config) as client, trio.open_nursery() as nursery:
        failures: list[tuple[Exception, float]] = []
        began = trio.current_time()

        async def call() -> None:
            try:
                await client.counted.forever()
            except Exception as exc:
                failures.append((exc, trio.current_time() - began))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        await runner.stop()
    [(error, elapsed)] = failures
    assert isinstance(error, ServiceUnavailable)
    assert "'counted' stopped before the call finished" in str(error)
    assert elapsed == pytest.approx(2)


async def test_a_killed_runner_s_callers_hear_of_it_at_once(autojump_clock, start, rpc_config):
    runner = await start("a")
    async with open_rpc_client(rpc_config) as client, trio.open_nursery() as nursery:
        failures: list[tuple[Exception, float]] = []
        began = trio.current_time()

        async def call() -> None:
            try:
                await client.counted.forever()
            except Exception as exc:
                failures.append((exc, trio.current_time() - began))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        runner.kill()
    [(error, elapsed)] = failures
    assert isinstance(error, ServiceUnavailable)
    assert elapsed == 0


async def test_a_request_draining_at_stop_can_still_call_other_services(
    start, runner_factory, rpc_config, local_config, asgi_client
):
    """The runner's connection outlives its own RPC calls: an HTTP request still draining
    when its runner stops may call another service."""

    class Gateway:
        name = "gateway"
        counted = RpcProxy("counted")

        @http("GET", "/which")
        async def which(self, request):
            Counted.started["b"].set()
            await Counted.release["b"].wait()
            return {"instance": await self.counted.which()}

    await start("a")
    gateway = await runner_factory({**local_config, **rpc_config}, Gateway)
    responses: list[object] = []
    async with asgi_client(gateway) as http_client, trio.open_nursery() as nursery:

        async def get() -> None:
            responses.append((await http_client.get("/which")).json())

        nursery.start_soon(get)
        await Counted.started["b"].wait()
        nursery.start_soon(gateway.stop)
        await trio.testing.wait_all_tasks_blocked()
        assert not gateway.stopped
        Counted.release["b"].set()
    assert responses == [{"instance": "a"}]
    assert gateway.stopped

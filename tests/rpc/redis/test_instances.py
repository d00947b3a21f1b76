"""Several instances of a service on Redis (SPEC §6): each call handled by exactly one live
instance, idle instances take what busy ones leave, a clean stop is seen at once and a
death within the lease (a child process killed with SIGKILL mid-call)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import coredis
import pytest
import trio

from triosvc.exceptions import ServiceUnavailable, UnknownService
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.rpc import RpcClient, open_rpc_client, rpc
from triosvc.rpc._redis import RedisTransport
from triosvc.rpc.transport import Transport, open_transport

#: Real seconds any test here may take.
TEST_TIMEOUT = 15


class InstanceName(DependencyProvider):
    """The ``INSTANCE`` key of the runner's config: which runner handles a call."""

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        return worker_ctx.container.config["INSTANCE"]


class CallIds(DependencyProvider):
    """Records which runner handled which call."""

    async def worker_setup(self, worker_ctx: WorkerContext) -> None:
        Shared.handled.append((str(worker_ctx.container.config["INSTANCE"]), worker_ctx.call_id))


class Shared:
    name = "shared"
    instance = InstanceName()
    ids = CallIds()

    #: (instance, call id) of every call handled.
    handled: list[tuple[str, str]]
    started: trio.Event
    release: trio.Event

    @rpc
    async def which(self):
        return self.instance

    @rpc
    async def hold(self):
        cls = type(self)
        cls.started.set()
        await cls.release.wait()
        return self.instance


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    Shared.handled = []
    Shared.started = trio.Event()
    Shared.release = trio.Event()


@pytest.fixture
def start(start_services, rpc_config):
    async def start(instance: str, **config: object):
        return await start_services({**rpc_config, "INSTANCE": instance, **config}, Shared)

    return start


async def test_two_runners_share_the_calls_and_each_is_handled_exactly_once(
    start, client: RpcClient
):
    with trio.fail_after(TEST_TIMEOUT):
        await start("a")
        await start("b")
        answers: list[str] = []

        async def call() -> None:
            answers.append(await client.shared.which())

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(call)
    assert len(answers) == len(Shared.handled) == 100
    assert len({call_id for _, call_id in Shared.handled}) == 100
    assert Counter(answers) == Counter(instance for instance, _ in Shared.handled)
    assert set(answers) == {"a", "b"}


async def test_idle_runners_take_turns(start, client: RpcClient):
    with trio.fail_after(TEST_TIMEOUT):
        await start("a")
        await start("b")
        answers = [await client.shared.which() for _ in range(10)]
    assert Counter(answers) == {"a": 5, "b": 5}


async def test_a_busy_instance_leaves_the_calls_to_an_idle_one(start, client: RpcClient):
    with trio.fail_after(TEST_TIMEOUT):
        await start("busy", WEB_SERVER_MAX_WORKERS=1)
        async with trio.open_nursery() as nursery:
            held: list[str] = []

            async def hold() -> None:
                held.append(await client.shared.hold())

            nursery.start_soon(hold)
            await Shared.started.wait()  # the busy instance's only worker is taken
            await start("idle", WEB_SERVER_MAX_WORKERS=1)
            answers = [await client.shared.which() for _ in range(10)]
            Shared.release.set()
    assert answers == ["idle"] * 10
    assert held == ["busy"]


async def test_a_runner_stopped_cleanly_stops_being_live_at_once(start, client: RpcClient):
    with trio.fail_after(TEST_TIMEOUT):
        first = await start("a")
        second = await start("b")
        await first.stop()
        assert [await client.shared.which() for _ in range(6)] == ["b"] * 6
        await second.stop()
        began = trio.current_time()
        with pytest.raises(UnknownService, match="no live instance of service 'shared'"):
            await client.shared.which()
    assert trio.current_time() - began < 0.5  # at once: no waiting for a lease or timeout


async def test_a_stopping_runner_is_unknown_at_once_and_finishes_its_call(
    start, client: RpcClient, broker_url: str
):
    with trio.fail_after(TEST_TIMEOUT):
        runner = await start("a")
        async with trio.open_nursery() as nursery:
            held: list[str] = []

            async def hold() -> None:
                held.append(await client.shared.hold())

            nursery.start_soon(hold)
            await Shared.started.wait()
            nursery.start_soon(runner.stop)
            await live_instances(broker_url, "shared", 0)  # one round trip after the stop
            with pytest.raises(UnknownService):
                await client.shared.which()
            assert not runner.stopped
            Shared.release.set()
    assert held == ["a"]
    assert runner.stopped


async def live_instances(url: str, service: str, count: int) -> None:
    """Wait until ``service`` has ``count`` live instances: Redis's progress, polled."""
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        while True:
            if await redis.zcard(f"triosvc:live:{service}") == count:
                return
            await trio.sleep(0.005)


async def test_calls_queued_when_an_instance_closes_go_to_the_other(broker_url: str):
    """The Redis variant of the memory transport's hand-on test: the instances share one
    queue, so what was queued stays there for the instance that remains."""
    with trio.fail_after(TEST_TIMEOUT):
        async with open_transport(broker_url) as transport, trio.open_nursery() as nursery:
            outcomes: list[object] = []
            async with transport.register("svc", capacity=5) as second:
                async with transport.register("svc", capacity=5) as first:
                    for payload in "abcd":
                        nursery.start_soon(call, transport, payload, outcomes)
                    await queued(transport, "svc", 4)
                    first.close()
                    with pytest.raises(trio.EndOfChannel):
                        await first.receive()
                received = []
                for _ in range(4):
                    delivery = await second.receive()
                    received.append(delivery.payload)
                    await delivery.reply("reply to " + delivery.payload)
    assert sorted(received) == list("abcd")
    assert sorted(outcomes) == [f"reply to {p}" for p in "abcd"]  # type: ignore[type-var]


async def queued(transport: Transport, service: str, length: int) -> None:
    """Wait until ``length`` calls are queued: Redis's own progress, polled briefly."""
    assert isinstance(transport, RedisTransport)
    while True:
        if await transport.client.llen(f"triosvc:queue:{service}") >= length:
            return
        await trio.sleep(0.005)


async def call(transport: Transport, payload: str, outcomes: list[object]) -> None:
    try:
        outcomes.append(await transport.call("svc", payload, trio.current_time() + 10))
    except Exception as exc:
        outcomes.append(exc)


# -- death ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["killed", "out of grace period"])
async def test_a_runner_cancelled_mid_call_still_tells_its_caller(start, client, how):
    """Cancelled, the runner still sends the failure (its Redis connection outlives the
    cancellation, shielded and bounded): the caller does not wait for its timeout."""
    with trio.fail_after(TEST_TIMEOUT):
        runner = await start("a", SHUTDOWN_GRACE_PERIOD=0.2)
        failures: list[Exception] = []
        async with trio.open_nursery() as nursery:

            async def hold() -> None:
                try:
                    await client.shared.hold()
                except Exception as exc:
                    failures.append(exc)

            nursery.start_soon(hold)
            await Shared.started.wait()
            began = trio.current_time()
            if how == "killed":
                runner.kill()
            else:
                nursery.start_soon(runner.stop)
    [error] = failures
    assert isinstance(error, ServiceUnavailable)
    assert "'shared' stopped before the call finished" in str(error)
    assert trio.current_time() - began < 1.5


async def test_a_runner_killed_mid_call_fails_the_call_within_its_lease(
    broker_url: str, start_services, rpc_config
):
    """SIGKILL: no unregistering, no answer. The lease lapses (2 s here, 15 s by default)
    and the caller hears of it then, with ServiceUnavailable, not at its timeout; the
    dead instance stops counting as live, and a new instance takes the calls."""
    child = Path(__file__).with_name("doomed.py")
    with trio.fail_after(TEST_TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(child), broker_url], stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            lines = Lines(process.stdout)
            assert await lines.next() == "ready"
            async with open_rpc_client(broker_url, timeout=10) as client:
                assert await client.doomed.which() == "child"
                async with trio.open_nursery() as nursery:
                    outcome: list[tuple[object, float]] = []

                    async def hold() -> None:
                        try:
                            await client.doomed.hold()
                        except Exception as exc:
                            outcome.append((exc, trio.current_time() - killed))

                    nursery.start_soon(hold)
                    assert await lines.next() == "holding"
                    process.kill()
                    killed = trio.current_time()
                [(error, elapsed)] = outcome
                assert isinstance(error, ServiceUnavailable), repr(error)
                assert "stopped renewing its lease" in str(error)
                assert elapsed < 4  # the 2 s lease and a renewal: not the 10 s timeout
                with pytest.raises(UnknownService):
                    await client.doomed.which()

                class Doomed:
                    name = "doomed"

                    @rpc
                    async def which(self):
                        return "here"

                await start_services(rpc_config, Doomed)
                assert await client.doomed.which() == "here"
        finally:
            process.kill()
            await process.wait()


class Lines:
    """Reads a child process's output line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError("the child process closed its output")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode().strip()

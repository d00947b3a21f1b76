"""Deadlines and limits of RPC calls (SPEC §6, §7), on trio's virtual clock.

The memory transport has no socket, so ``autojump_clock`` makes every wait instant: the
tests assert the exact virtual times at which callers give up and callees are cancelled.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from triosvc.exceptions import RpcTimeout, ServiceUnavailable, UnknownService
from triosvc.rpc import RpcProxy, open_rpc_client, rpc


class Slow:
    name = "slow"

    #: (event, virtual time) of every call, shared by the instances of a test.
    log: list[tuple[str, float]]
    running = 0
    most_running = 0

    @rpc
    async def forever(self):
        type(self).log.append(("start", trio.current_time()))
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            type(self).log.append(("cancelled", trio.current_time()))
            raise

    @rpc(timeout=2)
    async def short_forever(self):
        return await self.forever()

    @rpc
    async def sleep(self, seconds):
        cls = type(self)
        cls.running += 1
        cls.most_running = max(cls.most_running, cls.running)
        try:
            await trio.sleep(seconds)
        finally:
            cls.running -= 1
        return seconds


class Front:
    name = "front"
    slow = RpcProxy("slow")
    impatient = RpcProxy("slow", timeout=1)

    @rpc(timeout=2)
    async def call_forever(self):
        return await self.slow.forever()

    @rpc
    async def call_impatiently(self):
        return await self.impatient.forever()


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    Slow.log = []
    Slow.running = Slow.most_running = 0


async def timed(call):
    start = trio.current_time()
    try:
        return await call(), trio.current_time() - start
    except Exception as exc:
        return exc, trio.current_time() - start


async def test_no_reply_within_rpc_timeout_is_rpc_timeout_and_the_callee_is_cancelled_then(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Slow)
    async with open_rpc_client({**rpc_config, "RPC_TIMEOUT": 5}) as client:
        start = trio.current_time()
        error, elapsed = await timed(client.slow.forever)
    assert isinstance(error, RpcTimeout)
    assert isinstance(error, TimeoutError)
    assert str(error) == "slow.forever did not answer within 5s (RPC_TIMEOUT)"
    assert elapsed == pytest.approx(5)
    await trio.testing.wait_all_tasks_blocked()
    assert Slow.log == [("start", start), ("cancelled", pytest.approx(start + 5))]


async def test_rpc_timeout_defaults_to_30_seconds(autojump_clock, runner_factory, rpc_config):
    await runner_factory(rpc_config, Slow)
    async with open_rpc_client(rpc_config) as client:
        error, elapsed = await timed(client.slow.forever)
    assert isinstance(error, RpcTimeout)
    assert elapsed == pytest.approx(30)


async def test_a_reply_just_within_the_timeout_is_the_result(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Slow)
    async with open_rpc_client(rpc_config, timeout=5) as client:
        result, elapsed = await timed(lambda: client.slow.sleep(4.9))
    assert result == 4.9
    assert elapsed == pytest.approx(4.9)


async def test_the_method_s_own_shorter_timeout_cancels_it_and_the_caller_gets_rpc_timeout(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Slow)
    async with open_rpc_client(rpc_config) as client:
        start = trio.current_time()
        error, elapsed = await timed(client.slow.short_forever)
    assert isinstance(error, RpcTimeout)
    assert "slow.short_forever was cancelled at its timeout of 2s" in str(error)
    assert elapsed == pytest.approx(2)
    assert Slow.log == [("start", start), ("cancelled", pytest.approx(start + 2))]


async def test_web_server_timeout_bounds_rpc_calls_too(autojump_clock, runner_factory, rpc_config):
    await runner_factory({**rpc_config, "WEB_SERVER_TIMEOUT": 3}, Slow)
    async with open_rpc_client(rpc_config) as client:
        error, elapsed = await timed(client.slow.forever)
    assert isinstance(error, RpcTimeout)
    assert elapsed == pytest.approx(3)
    assert [event for event, _ in Slow.log] == ["start", "cancelled"]


async def test_the_calling_worker_s_deadline_travels_with_its_calls(
    autojump_clock, runner_factory, rpc_config
):
    # front.call_forever may run 2 s; its call to slow would wait 30: slow stops at 2.
    await runner_factory(rpc_config, Slow, Front)
    async with open_rpc_client(rpc_config) as client:
        start = trio.current_time()
        error, elapsed = await timed(client.front.call_forever)
    assert isinstance(error, RpcTimeout)
    assert "front.call_forever was cancelled at its timeout of 2s" in str(error)
    assert elapsed == pytest.approx(2)
    await trio.testing.wait_all_tasks_blocked()
    assert Slow.log == [("start", start), ("cancelled", pytest.approx(start + 2))]


async def test_a_caller_s_own_cancel_scope_deadline_travels_with_the_call(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Slow)
    async with open_rpc_client(rpc_config) as client:
        start = trio.current_time()
        with trio.move_on_after(1.5) as scope:
            await client.slow.forever()
    assert scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert Slow.log == [("start", start), ("cancelled", pytest.approx(start + 1.5))]


async def test_an_rpc_proxy_s_own_timeout_replaces_rpc_timeout(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Slow, Front)
    async with open_rpc_client(rpc_config) as client:
        error, elapsed = await timed(client.front.call_impatiently)
    assert isinstance(error, RpcTimeout)
    assert "slow.forever did not answer within 1s (RPC_TIMEOUT)" in str(error)
    assert elapsed == pytest.approx(1)


# -- no live instance ------------------------------------------------------------------------


async def test_a_service_without_a_live_instance_is_unknown_at_once(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory(rpc_config, Front)
    async with open_rpc_client(rpc_config) as client:
        error, elapsed = await timed(client.nobody.anything)
        assert isinstance(error, UnknownService)
        assert "no live instance of service 'nobody'" in str(error)
        assert elapsed == 0
        # From inside a worker too: front's proxy to slow, which no runner serves.
        error, elapsed = await timed(client.front.call_forever)
    assert isinstance(error, UnknownService)
    assert elapsed == 0


async def test_a_service_whose_runner_stopped_is_unknown_at_once(
    autojump_clock, runner_factory, rpc_config
):
    runner = await runner_factory(rpc_config, Slow)
    async with open_rpc_client(rpc_config) as client:
        assert await client.slow.sleep(1) == 1
        await runner.stop()
        error, elapsed = await timed(lambda: client.slow.sleep(1))
    assert isinstance(error, UnknownService)
    assert elapsed == 0


# -- worker limits -----------------------------------------------------------------------------


async def test_at_most_max_workers_calls_run_at_once_and_the_rest_wait_their_turn(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory({**rpc_config, "WEB_SERVER_MAX_WORKERS": 2}, Slow)
    results: list[object] = []
    async with open_rpc_client(rpc_config, timeout=10) as client:
        start = trio.current_time()

        async def call() -> None:
            results.append(await client.slow.sleep(1))

        async with trio.open_nursery() as nursery:
            for _ in range(7):
                nursery.start_soon(call)
    assert results == [1] * 7
    assert Slow.most_running == 2
    assert trio.current_time() - start == pytest.approx(4)  # four rounds of two


async def test_calls_beyond_the_workers_and_the_inbox_get_service_unavailable_at_the_deadline(
    autojump_clock, runner_factory, rpc_config
):
    # One worker slot, one place in the inbox: the first call runs, the second waits in the
    # inbox, the third waits for room in the inbox. At the deadline the first two time out
    # (the second never started), the third was never delivered.
    await runner_factory({**rpc_config, "WEB_SERVER_MAX_WORKERS": 1}, Slow)
    outcomes: list[tuple[type[Exception], float]] = []
    async with open_rpc_client(rpc_config, timeout=5) as client:

        async def call() -> None:
            error, elapsed = await timed(client.slow.forever)
            assert isinstance(error, Exception)
            outcomes.append((type(error), elapsed))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
    assert Counter(cls for cls, _ in outcomes) == {RpcTimeout: 2, ServiceUnavailable: 1}
    assert [elapsed for _, elapsed in outcomes] == [pytest.approx(5)] * 3
    assert [event for event, _ in Slow.log] == ["start", "cancelled"]


async def test_a_caller_waiting_for_room_gets_it_as_soon_as_a_call_is_taken(
    autojump_clock, runner_factory, rpc_config
):
    await runner_factory({**rpc_config, "WEB_SERVER_MAX_WORKERS": 1}, Slow)
    async with open_rpc_client(rpc_config, timeout=30) as client:
        finished: list[tuple[float, float]] = []
        start = trio.current_time()

        async def call(seconds: float) -> None:
            await client.slow.sleep(seconds)
            finished.append((seconds, trio.current_time() - start))

        async with trio.open_nursery() as nursery:
            for seconds in (3, 2, 1):  # running, queued, waiting for room
                nursery.start_soon(call, seconds)
                await trio.testing.wait_all_tasks_blocked()
    assert finished == [(3, pytest.approx(3)), (2, pytest.approx(5)), (1, pytest.approx(6))]

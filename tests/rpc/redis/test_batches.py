"""Taking calls in batches on Redis: an instance with free workers takes the calls queued
behind the one it waited for in the same round trip (never more than it has free
workers), and the reply listener drains its answers in batches; every call is still
answered exactly once, and the calls taken ahead go back to the queue if it closes."""

from __future__ import annotations

from collections import Counter

import trio

from triosvc.rpc import open_rpc_client, rpc
from triosvc.rpc._redis import RedisTransport
from triosvc.rpc.transport import Transport, open_transport

from .test_keys import check_lifetimes, contents

#: Real seconds any test here may take.
TEST_TIMEOUT = 15


class Counted:
    name = "counted"

    #: How many times each value was handled.
    runs: Counter[int]
    #: Most calls running at once.
    peak: int
    running: int

    @rpc
    async def work(self, value: int, seconds: float) -> int:
        cls = type(self)
        cls.runs[value] += 1
        cls.running += 1
        cls.peak = max(cls.peak, cls.running)
        try:
            await trio.sleep(seconds)
        finally:
            cls.running -= 1
        return value


async def test_fifty_calls_to_ten_workers_are_answered_once_each_in_batches(
    broker_url: str, start_services, rpc_config
):
    Counted.runs, Counted.peak, Counted.running = Counter(), 0, 0
    capacity, calls, seconds = 10, 50, 0.05
    with trio.fail_after(TEST_TIMEOUT):
        await start_services({**rpc_config, "WEB_SERVER_MAX_WORKERS": capacity}, Counted)
        answers: list[int] = []
        async with open_rpc_client(rpc_config, timeout=10) as client:

            async def one(value: int) -> None:
                answers.append(await client.counted.work(value, seconds))

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for value in range(calls):
                    nursery.start_soon(one, value)
            elapsed = trio.current_time() - started
        found = await contents(broker_url)
    assert sorted(answers) == list(range(calls))
    assert Counted.runs == Counter(range(calls))  # each run exactly once
    assert Counted.peak <= capacity
    # Five waves of ten: well under one call after another (50 x 50 ms = 2.5 s).
    assert elapsed < 2.0, elapsed
    check_lifetimes(found)
    queues = {key: size for key, (_, size) in found.items() if ":queue:" in key}
    assert not any(queues.values()), queues
    taken = {key: size for key, (_, size) in found.items() if ":taken:" in key}
    assert all(size <= 1 for size in taken.values()), taken  # the sentinel at most


async def test_an_inbox_takes_no_more_than_its_free_workers_and_hands_back_the_rest(
    broker_url: str,
):
    with trio.fail_after(TEST_TIMEOUT):
        async with open_transport(broker_url) as transport, trio.open_nursery() as nursery:
            assert isinstance(transport, RedisTransport)
            outcomes: list[object] = []
            async with transport.register("svc", capacity=5) as second:
                async with transport.register("svc", capacity=5) as first:
                    for index in range(8):
                        nursery.start_soon(call, transport, str(index), outcomes)
                    await queued(transport, 8)
                    # Five free workers: this receive takes the call and four ahead.
                    busy = await first.receive()
                    assert await transport.client.llen("triosvc:queue:svc") == 3
                    held = await first.receive()  # one taken ahead: no round trip
                    assert await transport.client.llen("triosvc:queue:svc") == 3
                    # Closing hands the three calls taken ahead back to the queue, for
                    # the remaining instance; those received can still be answered.
                    first.close()
                    await queued(transport, 6)
                await busy.reply("done " + busy.payload)
                await held.reply("done " + held.payload)
                for _ in range(6):
                    delivery = await second.receive()
                    await delivery.reply("done " + delivery.payload)
    assert sorted(outcomes) == [f"done {index}" for index in range(8)]  # type: ignore[type-var]


async def queued(transport: RedisTransport, length: int) -> None:
    """Wait until ``length`` calls are queued: Redis's own progress, polled briefly."""
    while True:
        if await transport.client.llen("triosvc:queue:svc") >= length:
            return
        await trio.sleep(0.005)


async def call(transport: Transport, payload: str, outcomes: list[object]) -> None:
    try:
        outcomes.append(await transport.call("svc", payload, trio.current_time() + 10))
    except Exception as exc:
        outcomes.append(exc)

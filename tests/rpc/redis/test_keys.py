"""What the Redis transport leaves in Redis: every key has a lifetime, nothing grows with
the number of calls (answered, cancelled, timed out), and a call whose deadline passed
while it was queued is dropped rather than run."""

from __future__ import annotations

from contextlib import suppress

import coredis
import pytest
import trio

from triosvc.exceptions import RpcTimeout, ServiceUnavailable
from triosvc.rpc import open_rpc_client, rpc
from triosvc.rpc._redis import RedisTransport
from triosvc.rpc.transport import open_transport

#: Real seconds any test here may take.
TEST_TIMEOUT = 20


class Busy:
    name = "busy"

    @rpc
    async def work(self, seconds):
        await trio.sleep(seconds)
        return seconds


async def contents(url: str) -> dict[str, tuple[int, int]]:
    """Every key: (milliseconds left to live, how many elements it holds)."""
    found: dict[str, tuple[int, int]] = {}
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        async for key in redis.scan_iter():
            kind = await redis.type(key)
            size = await (redis.llen(key) if kind == "list" else redis.zcard(key))
            ttl = await redis.pttl(key)
            if ttl != -2:  # -2: gone meanwhile (a reply list read empty); -1: no lifetime
                found[key] = (ttl, size)
    return found


def check_lifetimes(found: dict[str, tuple[int, int]]) -> None:
    forever = [key for key, (ttl, _) in found.items() if ttl <= 0]
    assert not forever, f"keys without a lifetime: {forever}"


async def test_every_key_has_a_lifetime_and_nothing_grows_with_the_calls(
    broker_url: str, start_services, rpc_config
):
    capacity = 4
    with trio.fail_after(TEST_TIMEOUT):
        await start_services({**rpc_config, "WEB_SERVER_MAX_WORKERS": capacity}, Busy)
        answered = 0
        async with open_rpc_client(rpc_config, timeout=0.3) as client:

            async def one(kind: int) -> None:
                nonlocal answered
                with suppress(RpcTimeout, ServiceUnavailable):
                    if kind == 0:  # answered (unless the service is too busy)
                        await client.busy.work(0)
                        answered += 1
                    elif kind == 1:  # given up at once: withdrawn while queued, mostly
                        with trio.move_on_after(0.001):
                            await client.busy.work(0.05)
                    elif kind == 2:  # given up while running: the reply comes late
                        with trio.move_on_after(0.02):
                            await client.busy.work(0.1)
                    else:  # timed out: the callee is cancelled at the deadline
                        await client.busy.work(5)

            sizes = []
            for batch in range(10):  # 200 calls, 20 at a time
                async with trio.open_nursery() as nursery:
                    for index in range(20):
                        nursery.start_soon(one, (batch + index) % 4)
                found = await contents(broker_url)
                check_lifetimes(found)
                sizes.append((len(found), sum(size for _, size in found.values())))
        assert answered > 0
        # Keys: the leases, the live set, the queue, the instance's taken list and the
        # client's reply list; a queue of at most `capacity`, a few late replies.
        assert max(keys for keys, _ in sizes) <= 5, sizes
        assert max(elements for _, elements in sizes) <= 4 * capacity, sizes
    # Once everyone has gone, what is left only waits to expire.
    check_lifetimes(await contents(broker_url))


async def test_a_call_whose_deadline_passed_while_queued_is_dropped_not_run(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
):
    async def keep_it_queued(self: RedisTransport, queue: str, call_id: str) -> None:
        pass  # the caller does not withdraw it: the receiver must see it has expired

    monkeypatch.setattr(RedisTransport, "_withdraw", keep_it_queued)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_transport(broker_url) as transport,
            transport.register("svc", capacity=5) as inbox,
        ):
            with pytest.raises(RpcTimeout):
                await transport.call("svc", "late", trio.current_time() + 0.1)
            await redis_clock_passes(transport, "svc")
            async with trio.open_nursery() as nursery:
                outcomes: list[str] = []

                async def call() -> None:
                    outcomes.append(await transport.call("svc", "fresh", deadline))

                deadline = trio.current_time() + 10
                nursery.start_soon(call)
                delivery = await inbox.receive()
                assert delivery.payload == "fresh"
                # The deadline crossed as time left, on Redis's clock: the same instant, to
                # within a trip to Redis.
                assert abs(delivery.deadline - deadline) < 0.2
                await delivery.reply("done")
    assert outcomes == ["done"]


async def redis_clock_passes(transport: object, service: str) -> None:
    """Wait until Redis's clock passes the deadline of the call queued for ``service``.

    The deadline crossed as time left, so on Redis it ends up to one trip to Redis later
    than on the caller's clock: under load, a few milliseconds.
    """
    assert isinstance(transport, RedisTransport)
    redis = transport.client
    [envelope] = await redis.lrange(f"triosvc:queue:{service}", 0, -1)
    deadline = int(envelope.split(" ", 1)[0])
    while True:
        if (await redis.time()).timestamp() * 1000 > deadline:
            return
        await trio.sleep(0.005)  # Redis's clock: a short, bounded poll

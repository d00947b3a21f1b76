"""The transport contract (``triosvc.rpc.transport``), checked on both transports.

These tests drive a transport directly, as the RPC layer does; ``broker_url`` runs each
on the memory transport and on Redis, except where a test says why not. The Redis
transport's own guarantees (leases, outages, key lifetimes) are in ``tests/rpc/redis/``.
"""

from __future__ import annotations

import sys
import uuid

import pytest
import trio
import trio.testing

import triosvc.rpc
from triosvc.config import Config
from triosvc.exceptions import ConfigurationError, RpcTimeout, ServiceUnavailable, UnknownService
from triosvc.rpc import _memory
from triosvc.rpc.transport import TRANSPORTS, Delivery, Inbox, Transport, open_transport

ROUND_ROBIN = pytest.mark.memory_only(
    "the memory transport queues each call to one inbox, round-robin; on Redis the "
    "instances share one queue and the first to ask takes the next call"
)


@pytest.fixture
async def transport(broker_url: str):
    async with open_transport(broker_url) as opened:
        yield opened


async def call_into(
    transport: Transport, service: str, payload: str, outcomes: list[object], seconds: float = 30
) -> None:
    """Make a call and record its reply, or the exception it raised."""
    try:
        outcomes.append(await transport.call(service, payload, trio.current_time() + seconds))
    except Exception as exc:
        outcomes.append(exc)


async def receive_and_reply(inbox: Inbox, prefix: str = "reply to ") -> Delivery:
    delivery = await inbox.receive()
    await delivery.reply(prefix + delivery.payload)
    return delivery


async def test_a_call_to_a_service_nobody_serves_is_unknown_at_once(
    autojump_clock, transport: Transport
):
    start = trio.current_time()
    with pytest.raises(UnknownService, match="no live instance of service 'nobody'"):
        await transport.call("nobody", "{}", start + 30)
    assert trio.current_time() == start


async def test_a_call_reaches_a_registered_instance_and_its_reply_comes_back(
    transport: Transport,
):
    async with transport.register("svc", capacity=1) as inbox, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        deadline = trio.current_time() + 12
        nursery.start_soon(call_into, transport, "svc", '{"x": "\\u00e9"}', outcomes, 12)
        delivery = await inbox.receive()
        assert delivery.payload == '{"x": "\\u00e9"}'
        assert delivery.deadline == pytest.approx(deadline)
        await delivery.reply("the answer")
    assert outcomes == ["the answer"]


@ROUND_ROBIN
async def test_calls_go_round_robin_among_the_instances(transport: Transport):
    async with (
        transport.register("svc", capacity=10) as first,
        transport.register("svc", capacity=10) as second,
        transport.register("svc", capacity=10) as third,
        trio.open_nursery() as nursery,
    ):
        outcomes: list[object] = []
        for index in range(6):
            await call_into_soon(nursery, transport, str(index), outcomes)
        received = [
            [(await inbox.receive()).payload for _ in range(2)] for inbox in (first, second, third)
        ]
        nursery.cancel_scope.cancel()
    assert received == [["0", "3"], ["1", "4"], ["2", "5"]]


async def call_into_soon(
    nursery: trio.Nursery, transport: Transport, payload: str, outcomes: list[object]
) -> None:
    """Start a call and let it reach its inbox (or begin waiting) before going on."""
    nursery.start_soon(call_into, transport, "svc", payload, outcomes)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_full_inbox_makes_callers_wait_for_room_until_their_deadline(
    autojump_clock, transport: Transport
):
    async with transport.register("svc", capacity=2) as inbox:
        outcomes: list[object] = []
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for payload in "abc":
                await call_into_soon(nursery, transport, payload, outcomes)
        # Nobody received: two calls queued and timed out, one never found room.
        assert trio.current_time() - start == pytest.approx(30)
        kinds = sorted(type(outcome).__name__ for outcome in outcomes)
        assert kinds == ["RpcTimeout", "RpcTimeout", "ServiceUnavailable"]
        unavailable = next(o for o in outcomes if isinstance(o, ServiceUnavailable))
        assert "full inbox" in str(unavailable)
        # Calls that gave up left nothing queued behind them.
        async with trio.open_nursery() as nursery:
            await call_into_soon(nursery, transport, "d", outcomes)
            assert (await receive_and_reply(inbox)).payload == "d"
    assert outcomes[-1] == "reply to d"


async def test_a_caller_waiting_for_room_is_queued_as_soon_as_a_call_is_received(
    transport: Transport,
):
    async with transport.register("svc", capacity=1) as inbox, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        await call_into_soon(nursery, transport, "first", outcomes)
        await call_into_soon(nursery, transport, "second", outcomes)
        assert (await receive_and_reply(inbox)).payload == "first"
        assert (await receive_and_reply(inbox)).payload == "second"
    assert outcomes == ["reply to first", "reply to second"]


async def test_a_withdrawn_call_leaves_its_inbox_and_frees_its_room(transport: Transport):
    async with transport.register("svc", capacity=1) as inbox, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        withdrawn = trio.CancelScope()
        nursery.start_soon(call_in_scope, withdrawn, transport, "withdrawn")
        await trio.testing.wait_all_tasks_blocked()
        await call_into_soon(nursery, transport, "waiting", outcomes)
        withdrawn.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert (await receive_and_reply(inbox)).payload == "waiting"
    assert outcomes == ["reply to waiting"]


async def call_in_scope(scope: trio.CancelScope, transport: Transport, payload: str) -> None:
    with scope:
        await transport.call("svc", payload, trio.current_time() + 30)


async def test_a_reply_to_a_caller_that_has_gone_is_dropped(autojump_clock, transport: Transport):
    async with transport.register("svc", capacity=1) as inbox, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        nursery.start_soon(call_into, transport, "svc", "late", outcomes, 1)
        delivery = await inbox.receive()
        await trio.sleep(2)
        assert len(outcomes) == 1
        assert isinstance(outcomes[0], RpcTimeout)
        await delivery.reply("too late")  # no error, and nobody receives it
        await delivery.reply("twice")
    assert len(outcomes) == 1


@ROUND_ROBIN
async def test_closing_an_inbox_hands_its_queued_calls_to_another_instance(transport: Transport):
    async with (
        transport.register("svc", capacity=5) as first,
        transport.register("svc", capacity=5) as second,
        trio.open_nursery() as nursery,
    ):
        outcomes: list[object] = []
        for payload in "abcd":  # a and c to the first instance, b and d to the second
            await call_into_soon(nursery, transport, payload, outcomes)
        first.close()
        first.close()  # idempotent
        with pytest.raises(trio.EndOfChannel):
            await first.receive()
        received = [(await receive_and_reply(second)).payload for _ in range(4)]
        await call_into_soon(nursery, transport, "e", outcomes)  # only the second is live
        received.append((await receive_and_reply(second)).payload)
    assert received == ["b", "d", "a", "c", "e"]
    assert sorted(outcomes) == [f"reply to {p}" for p in "abcde"]  # type: ignore[type-var]


async def test_closing_the_only_inbox_fails_its_queued_calls_and_callers_waiting_for_room(
    transport: Transport,
):
    async with transport.register("svc", capacity=1) as inbox, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        await call_into_soon(nursery, transport, "queued", outcomes)
        await call_into_soon(nursery, transport, "waiting", outcomes)
        inbox.close()
        await trio.testing.wait_all_tasks_blocked()
    failures = {type(outcome): str(outcome) for outcome in outcomes}
    assert set(failures) == {ServiceUnavailable, UnknownService}
    assert "stopped before taking it" in failures[ServiceUnavailable]


async def test_a_received_call_can_be_answered_after_its_inbox_closed(transport: Transport):
    async with trio.open_nursery() as nursery:
        outcomes: list[object] = []
        async with transport.register("svc", capacity=1) as inbox:
            await call_into_soon(nursery, transport, "in flight", outcomes)
            delivery = await inbox.receive()
        with pytest.raises(UnknownService):  # unregistered at once
            await transport.call("svc", "new", trio.current_time() + 30)
        await delivery.reply("done")
    assert outcomes == ["done"]


async def test_closing_a_transport_fails_the_calls_it_received_and_never_answered(
    broker_url: str,
):
    async with open_transport(broker_url) as caller, trio.open_nursery() as nursery:
        outcomes: list[object] = []
        async with (
            open_transport(broker_url) as server,
            server.register("svc", capacity=1) as inbox,
        ):
            nursery.start_soon(call_into, caller, "svc", "abandoned", outcomes)
            await inbox.receive()
        await trio.testing.wait_all_tasks_blocked()
    [failure] = outcomes
    assert isinstance(failure, ServiceUnavailable)
    assert "stopped before answering" in str(failure)


@pytest.mark.memory_only("names of memory brokers")
async def test_brokers_of_different_names_are_separate(broker_url: str):
    other = f"memory://other-{uuid.uuid4().hex}"
    async with (
        open_transport(broker_url) as first,
        open_transport(other) as second,
        first.register("svc", capacity=1),
    ):
        with pytest.raises(UnknownService, match=other):
            await second.call("svc", "{}", trio.current_time() + 30)


@pytest.mark.memory_only("the memory broker registry")
async def test_a_broker_is_forgotten_once_its_last_transport_closes(broker_url: str):
    name = _memory.broker_name(broker_url)
    async with open_transport(broker_url), open_transport(broker_url):
        assert name in _memory._BROKERS
    assert name not in _memory._BROKERS


async def test_an_inbox_holds_at_least_one_call(transport: Transport):
    with pytest.raises(ValueError, match="at least one call"):
        async with transport.register("svc", capacity=0):
            pass


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [("memory://", ""), ("memory://tests", "tests"), ("memory://a.b-c_1", "a.b-c_1")],
)
def test_memory_urls_name_their_broker(url: str, name: str) -> None:
    assert _memory.broker_name(url) == name
    assert Config({"BROKER_URL": url}).settings.broker_url == url


@pytest.mark.parametrize(
    "url", ["memory://a b", "memory://a/b", "memory://" + "x" * 101, "memory:"]
)
def test_bad_memory_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="BROKER_URL="):
        _memory.broker_name(url)
    with pytest.raises(ConfigurationError, match="BROKER_URL="):
        Config({"BROKER_URL": url})


def test_schemes_without_a_transport_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="no RPC transport for 'amqp'"):
        open_transport("amqp://host")


def test_a_redis_url_without_coredis_says_which_extra_to_install(monkeypatch) -> None:
    # As if coredis were not installed: the Redis transport is imported on first use.
    monkeypatch.delitem(TRANSPORTS, "redis", raising=False)
    monkeypatch.delitem(sys.modules, "triosvc.rpc._redis", raising=False)
    monkeypatch.delattr(triosvc.rpc, "_redis", raising=False)
    monkeypatch.setitem(sys.modules, "coredis", None)
    with pytest.raises(ConfigurationError, match=r"needs coredis.*pip install 'triosvc\[redis\]'"):
        open_transport("redis://localhost:6379/0")

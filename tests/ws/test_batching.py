"""A socket's sender coalesces what is queued in its outbox into one write, where the engine
offers it (triosvc's own engine: ``SEND_MANY``), without giving up backpressure: batches
are bounded, arrive complete and in order, and a peer that reads nothing is still dropped
as a slow consumer."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from triosvc.web.engines.native.websocket import WebSocketSession
from triosvc.web.websocket import WebSocketHub
from triosvc.ws.connection import BATCH_SIZE, SEND_MANY, _Connection

from ..conftest import on_both_engines
from .clients import (
    TEST_TIMEOUT,
    Closed,
    Disconnects,
    call,
    connect,
    connected,
    hub_of,
    recv_json,
    still_open,
    ws_url,
)
from .test_limits import (
    Progress,
    assert_aborted_within_a_second,
    good_and_slow,
    hub_config,
    limited_service,
)

# -- the sender alone, with a recording ASGI send ---------------------------------------------


class _Endpoint:
    """What a connection's sender needs of its endpoint."""

    def __init__(self, hub: WebSocketHub) -> None:
        self.hub = hub


class _Recorder:
    """An ASGI send that records messages and blocks on the first one until released."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.release = trio.Event()
        self.blocked = trio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if not self.release.is_set():
            self.blocked.set()
            await self.release.wait()
        await trio.lowlevel.checkpoint()

    def texts(self) -> list[str]:
        texts: list[str] = []
        for message in self.messages:
            if message["type"] == SEND_MANY:
                texts += message["messages"]
            elif message["type"] == "websocket.send":
                texts.append(message["text"])
        return texts


async def _run_sender(hub: WebSocketHub, recorder: _Recorder, batches: bool, test: Any) -> None:
    state = hub.register("s")
    connection = _Connection(_Endpoint(hub), state, recorder, {}, batches)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection._sender, nursery.cancel_scope)
        await test(state)


async def test_batches_are_bounded_in_order_and_taken_only_once_the_last_went() -> None:
    hub = WebSocketHub(send_buffer=300)
    recorder = _Recorder()
    sent = [f"{i:04d}" + "x" * 996 for i in range(300)]  # 1000 characters each

    async def test(state: Any) -> None:
        for message in sent:
            hub.send("s", message)
        await recorder.blocked.wait()
        await trio.testing.wait_all_tasks_blocked()
        # One batch is out (the send blocks): the sender took nothing more meanwhile.
        (first,) = recorder.messages
        assert first["type"] == SEND_MANY
        taken = len(first["messages"])
        assert BATCH_SIZE <= taken * 1000 < BATCH_SIZE + 1000
        assert hub.statistics().queued_messages == len(sent) - taken
        recorder.release.set()
        while hub.statistics().queued_messages:
            await trio.testing.wait_all_tasks_blocked()
        hub.unregister("s")

    with trio.fail_after(TEST_TIMEOUT):
        await _run_sender(hub, recorder, True, test)
    assert recorder.texts() == sent
    for message in recorder.messages:
        assert sum(map(len, message["messages"])) < BATCH_SIZE + 1000


async def test_a_lone_message_goes_as_websocket_send() -> None:
    hub = WebSocketHub()
    recorder = _Recorder()
    recorder.release.set()

    async def test(state: Any) -> None:
        hub.send("s", "one")
        await trio.testing.wait_all_tasks_blocked()
        hub.send("s", "two")
        await trio.testing.wait_all_tasks_blocked()
        hub.unregister("s")

    with trio.fail_after(TEST_TIMEOUT):
        await _run_sender(hub, recorder, True, test)
    assert recorder.messages == [
        {"type": "websocket.send", "text": "one"},
        {"type": "websocket.send", "text": "two"},
    ]


async def test_without_the_extension_one_send_per_message() -> None:
    hub = WebSocketHub()
    recorder = _Recorder()
    recorder.release.set()

    async def test(state: Any) -> None:
        for i in range(20):
            hub.send("s", str(i))
        await trio.testing.wait_all_tasks_blocked()
        hub.unregister("s")

    with trio.fail_after(TEST_TIMEOUT):
        await _run_sender(hub, recorder, False, test)
    assert recorder.messages == [{"type": "websocket.send", "text": str(i)} for i in range(20)]


async def test_a_close_request_cancels_the_batch_in_flight_then_closes() -> None:
    hub = WebSocketHub()
    recorder = _Recorder()

    async def test(state: Any) -> None:
        for i in range(10):
            hub.send("s", str(i))
        await recorder.blocked.wait()
        state.request_close(1008)  # a slow consumer: the blocked send is cancelled

    with trio.fail_after(TEST_TIMEOUT):
        await _run_sender(hub, recorder, True, test)
    assert recorder.messages[0] == {"type": SEND_MANY, "messages": [str(i) for i in range(10)]}
    assert recorder.messages[-1] == {"type": "websocket.close", "code": 1008}


# -- over real sockets, on both engines -------------------------------------------------------


@pytest.fixture
def send_many_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the SEND_MANY messages the native engine is given."""
    sizes: list[int] = []
    send = WebSocketSession.send

    async def spy(self: WebSocketSession, message: Any) -> None:
        if message["type"] == SEND_MANY:
            sizes.append(len(message["messages"]))
        await send(self, message)

    monkeypatch.setattr(WebSocketSession, "send", spy)
    return sizes


async def test_a_burst_arrives_complete_and_in_order(
    runner_factory, config, default_engine, send_many_calls
):
    count = 2000
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, send_buffer=count + 10), limited_service(disconnects)
        )
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connect("trio-websocket", url) as a, connect("websockets", url) as b:
            for client in (a, b):
                await connected(client)
                await call(client, "join", {"channel": "feed"})
            for i in range(count):  # without yielding: all queued before any is sent
                hub.broadcast("feed", "m", {"i": i, "text": "é" * (i % 300)})
            hub.broadcast("feed", "end", None)
            for client in (a, b):
                got = []
                while (message := await recv_json(client))["event"] != "end":  # type: ignore[index]
                    got.append(message["data"])  # type: ignore[index]
                assert got == [{"i": i, "text": "é" * (i % 300)} for i in range(count)]
                await still_open(client)
    if default_engine == "triosvc":
        assert send_many_calls, "the burst was not coalesced"
        assert sum(send_many_calls) > count
    else:
        assert send_many_calls == []


@on_both_engines(
    "on hypercorn a write to a peer that reads nothing is shielded from cancellation "
    "(see test_limits.py): the connection is not aborted after a second"
)
async def test_a_peer_that_never_reads_is_still_dropped_with_small_messages(
    runner_factory, config, engine, send_many_calls
):
    config = {**config, "WEB_SERVER_ENGINE": engine}
    disconnects = Disconnects()
    pad = "p" * 1000  # many to a batch
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, send_buffer=64), limited_service(disconnects)
        )
        hub = hub_of(runner)
        async with good_and_slow(ws_url(runner)) as (good, slow, slow_id):
            received: list[int] = []
            progress = Progress(["good"])
            sent = 0

            async def read() -> None:
                while (message := await recv_json(good))["event"] != "end":  # type: ignore[index]
                    received.append(message["data"]["i"])  # type: ignore[index]
                    progress.bump("good")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                # Far more than its outbox, one batch and the kernel's buffers hold.
                while sent < 20_000 and not hub.statistics().slow_consumers:
                    hub.broadcast("feed", "m", {"i": sent, "pad": pad})
                    sent += 1
                    if sent % 32 == 0:  # let the good reader keep up
                        await progress.at_least(sent - 32)
                hub.broadcast("feed", "end", None)
            assert hub.statistics().slow_consumers == 1
            assert received == list(range(sent))
            await assert_aborted_within_a_second(runner, disconnects, slow_id)
            if engine == "triosvc":
                assert max(send_many_calls) > 32  # batches of many messages
            # What it got before the end: a prefix, in order.
            got: list[int] = []
            try:
                while True:
                    got.append(json.loads(await slow.recv())["data"]["i"])
            except (Closed, trio.BrokenResourceError):
                pass
            assert got == list(range(len(got)))
            assert len(got) < sent

"""The hub's limits over real sockets (SPEC §5.3): connections, heartbeats, message size,
slow consumers, and shutdown.

Peers that misbehave at the TCP level (one that stops answering pings, one that stops
reading) are the ``websockets`` library's sans-IO protocol over a socket the test controls.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from triosvc.exceptions import ConnectionNotFound
from triosvc.web.websocket import WebSocketHub, WebSocketHubProvider, on_disconnect, rpc

from ..conftest import on_both_engines
from .clients import (
    CLIENTS,
    TEST_TIMEOUT,
    Closed,
    Disconnects,
    Rejected,
    SansIOClient,
    call,
    connect,
    connected,
    connected_clients,
    endpoint_of,
    failure,
    hub_of,
    recv_json,
    still_open,
    success,
    ws_url,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .clients import SyncClient, TrioWebsocketClient

    Client = TrioWebsocketClient | SansIOClient | SyncClient

# -- services ------------------------------------------------------------------------------


def hub_config(config: dict[str, object], **hub: object) -> dict[str, object]:
    return {**config, "WEBSOCKET_HUB_CONFIG": hub}


def limited_service(
    disconnects: Disconnects, gate: trio.Event | None = None, entered: trio.Event | None = None
) -> type:
    class Limited:
        name = "limited"
        hub = WebSocketHubProvider()

        @rpc
        async def echo(self, socket_id, value=None):
            return value

        @rpc
        async def join(self, socket_id, channel):
            self.hub.subscribe(socket_id, channel)

        @rpc(timeout=15)
        async def work(self, socket_id, n):
            assert gate is not None
            assert entered is not None
            entered.set()
            await gate.wait()
            return n

        @on_disconnect
        async def left(self, socket_id):
            disconnects.add(socket_id)

    return Limited


# -- max_connections ------------------------------------------------------------------------


async def test_max_connections_refuses_with_503_then_accepts_again(runner_factory, config):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, max_connections=3), limited_service(disconnects)
        )
        url = ws_url(runner)
        async with (
            connect("trio-websocket", url) as first,
            connect("websockets", url) as second,
        ):
            await connected(first)
            await connected(second)
            async with connect("websockets-sync", url) as third:
                third_id = await connected(third)
                for kind in CLIENTS:
                    with pytest.raises(Rejected) as refused:
                        async with connect(kind, url):
                            raise AssertionError(f"a 4th socket was accepted ({kind})")
                    assert refused.value.status == 503
                    assert refused.value.content_type == "application/json"
                    body = json.loads(refused.value.body)
                    assert set(body) == {"error", "message"}
                    assert body["error"] == "ServiceUnavailable"
                    assert isinstance(body["message"], str)
                # the three keep working
                for client in (first, second, third):
                    await still_open(client)
            await disconnects.wait_for(third_id)
            assert endpoint_of(runner).statistics().connections == 2
            for kind in CLIENTS:  # one place free again: each kind takes it in turn
                async with connect(kind, url) as again:
                    again_id = await connected(again)
                    await still_open(again)
                await disconnects.wait_for(again_id)
            assert disconnects.gone[0] == third_id
        assert hub_of(runner).statistics().sockets == 0


# -- heartbeat ------------------------------------------------------------------------------

#: Grace period of the heartbeat tests.
HEARTBEAT_GRACE = 0.2


async def test_heartbeat_peers_that_answer_stay_connected(runner_factory, config):
    interval = 0.25
    disconnects = Disconnects()
    config = {
        **hub_config(config, heartbeat_interval=interval),
        "SHUTDOWN_GRACE_PERIOD": HEARTBEAT_GRACE,
    }
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, limited_service(disconnects))
        url = ws_url(runner)
        async with connected_clients(url) as (a, b, c):
            assert isinstance(b, SansIOClient)
            # six intervals, idle but for pongs: three times what drops a silent peer
            with trio.move_on_after(6 * interval):
                await b.recv()  # answers pings as it reads; no text frame comes
            assert b.pings >= 4
            for client in (a, b, c):
                await still_open(client)
            assert disconnects.gone == []
            assert hub_of(runner).statistics().sockets == 3


async def test_heartbeat_zero_sends_no_pings(runner_factory, config):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, heartbeat_interval=0), limited_service(disconnects)
        )
        async with (
            connect("websockets", ws_url(runner)) as client,
            connect("trio-websocket", ws_url(runner)) as other,
        ):
            await connected(client)
            await connected(other)
            assert isinstance(client, SansIOClient)
            await client.nothing_for(1.0)
            assert client.pings == 0
            await still_open(client)
            await still_open(other)


@on_both_engines(
    "the hypercorn engine drops a silent peer only after its read "
    "timeout, max(30 s, 2 x heartbeat_interval), so with a 0.4 s heartbeat it "
    "stays ~30 s (SPEC §5.3)"
)
async def test_heartbeat_drops_a_peer_that_never_answers(runner_factory, config, engine):
    config = {**config, "WEB_SERVER_ENGINE": engine}
    interval = 0.4
    disconnects = Disconnects()
    config = {
        **hub_config(config, heartbeat_interval=interval),
        "SHUTDOWN_GRACE_PERIOD": HEARTBEAT_GRACE,
    }
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, limited_service(disconnects))
        hub = hub_of(runner)
        async with connect("trio-websocket", ws_url(runner)) as answering:
            await connected(answering)
            silent = await SansIOClient.open(ws_url(runner))
            try:
                silent_id = await connected(silent)
                silent.mute = True  # reads everything, answers nothing from now on
                start = trio.current_time()
                # dropped within about two intervals (bounded here at four)
                with trio.move_on_after(4 * interval):
                    await disconnects.wait_for(silent_id)
                elapsed = trio.current_time() - start
                assert silent_id in disconnects.gone, f"still connected after {elapsed:.1f} s"
                assert hub.get_subscriptions(silent_id) == []
                with pytest.raises(Closed):
                    await silent.recv()  # its connection is gone too
                assert silent.pings >= 1  # counted as the frames before the end are read
            finally:
                await silent.aclose()
            await still_open(answering)  # the peer that answers pings is unaffected


async def test_stop_is_prompt_after_sockets_closed_with_heartbeats_on(runner_factory, local_config):
    disconnects = Disconnects()
    config = {**local_config, "SHUTDOWN_GRACE_PERIOD": 2}  # default heartbeat: 30 s
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, limited_service(disconnects))
        async with connect("trio-websocket", ws_url(runner)) as client:
            socket_id = await connected(client)
            await still_open(client)
        await disconnects.wait_for(socket_id)
        start = trio.current_time()
        await runner.stop()
        elapsed = trio.current_time() - start
        assert elapsed < 1.0, f"stop took {elapsed:.1f} s with nothing left to do"


# -- max_message_size -----------------------------------------------------------------------


async def test_larger_frame_closes_with_1009(runner_factory, config, kind):
    limit = 1024
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, max_message_size=limit), limited_service(disconnects)
        )
        url = ws_url(runner)
        async with connect(kind, url) as big, connect("trio-websocket", url) as bystander:
            big_id = await connected(big)
            await connected(bystander)

            def call_of(size: int) -> tuple[str, str]:
                """A call frame of exactly ``size`` bytes, and the value it echoes."""
                head = json.dumps({"method": "echo", "data": {"value": ""}, "correlation_id": 0})
                value = "x" * (size - len(head))
                text = json.dumps({"method": "echo", "data": {"value": value}, "correlation_id": 0})
                assert len(text.encode()) == size
                return text, value

            text, value = call_of(limit)
            await big.send(text)  # at the limit: served
            assert await recv_json(big) == success(value, 0)
            await big.send(call_of(limit + 1)[0])
            with pytest.raises(Closed) as closed:
                await recv_json(big)
            assert closed.value.code == 1009
            await disconnects.wait_for(big_id)
            assert hub_of(runner).get_subscriptions(big_id) == []
            await still_open(bystander)
            # a binary frame over the limit too
            async with connect(kind, url) as binary:
                binary_id = await connected(binary)
                await binary.send_bytes(b"\0" * (limit + 1))
                with pytest.raises(Closed) as closed:
                    await recv_json(binary)
                assert closed.value.code == 1009
            await disconnects.wait_for(binary_id)
            await still_open(bystander)


@pytest.mark.parametrize("kind", ["trio-websocket", "websockets"])
async def test_enormous_frame_closes_with_1009(runner_factory, config, kind):
    """The socket is closed with 1009; the others go on.

    On hypercorn the TCP connection itself may then linger until the read timeout, when the
    peer's close reply arrives in the same read as the frame's end (hypercorn drops the rest
    of that batch of events); the trio-native engine ends it at once.
    """
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(hub_config(config), limited_service(Disconnects()))
        async with connect(kind, ws_url(runner)) as other, connect(kind, ws_url(runner)) as client:
            await connected(other)
            await connected(client)
            await client.send("x" * (2 * 1024 * 1024))  # twice max_message_size
            with pytest.raises(Closed) as closed:
                await client.recv()
            assert closed.value.code == 1009
            await still_open(other)


# -- send_buffer: slow consumers --------------------------------------------------------------

PAD = "p" * 32_768  # large messages fill the TCP buffers of a peer that reads nothing


class Progress:
    """How many messages each reader has; ``await at_least(n)`` until all have n."""

    def __init__(self, names: list[str]) -> None:
        self.counts = dict.fromkeys(names, 0)
        self._changed = trio.Event()

    def bump(self, name: str) -> None:
        self.counts[name] += 1
        self._changed.set()
        self._changed = trio.Event()

    async def at_least(self, n: int) -> None:
        while min(self.counts.values()) < n:
            await self._changed.wait()


async def read_until_closed(client: SansIOClient) -> tuple[list[int], int]:
    """The numbers of the messages read until the socket closed, and its close code."""
    got: list[int] = []
    try:
        while True:
            got.append(json.loads(await client.recv())["data"]["i"])
    except Closed as closed:
        return got, closed.code


async def fill_until_slow(hub: WebSocketHub, channel: str, progress: Progress, limit: int) -> int:
    """Broadcast until the hub drops a slow consumer, then 20 more; the number sent.

    The readers that keep up are never more than 4 messages behind (send_buffer is 8).
    """
    sent = 0
    extra = None
    while sent < limit and (extra is None or sent < extra):
        hub.broadcast(channel, "m", {"i": sent, "pad": PAD})
        sent += 1
        await progress.at_least(sent - 4)
        if extra is None and hub.statistics().slow_consumers:
            extra = sent + 20
    return sent


@asynccontextmanager
async def slow_subscriber(url: str) -> AsyncIterator[tuple[SansIOClient, str]]:
    """A subscriber of channel "feed" with a small receive buffer, which the test leaves
    unread (the hub's slow consumer to be); and its socket id."""
    slow = await SansIOClient.open(url, rcvbuf=4096)
    try:
        slow_id = await connected(slow)
        await call(slow, "join", {"channel": "feed"})
        yield slow, slow_id
    finally:
        await slow.aclose()  # unread data: the kernel resets the connection


@asynccontextmanager
async def good_and_slow(url: str) -> AsyncIterator[tuple[Client, SansIOClient, str]]:
    """Two subscribers of channel "feed": one that reads (trio-websocket), and a
    ``slow_subscriber`` (with its socket id)."""
    async with connect("trio-websocket", url) as good:
        await connected(good)
        await call(good, "join", {"channel": "feed"})
        async with slow_subscriber(url) as (slow, slow_id):
            yield good, slow, slow_id


async def assert_aborted_within_a_second(
    runner: object, disconnects: Disconnects, slow_id: str
) -> None:
    """SPEC §5.3: once the hub drops the slow consumer, its close frame is tried for at
    most one second, then the connection is aborted (bounded here at three); the other
    socket stays."""
    start = trio.current_time()
    with trio.move_on_after(3):
        await disconnects.wait_for(slow_id)
    elapsed = trio.current_time() - start
    assert slow_id in disconnects.gone, f"connection still up after {elapsed:.1f} s"
    assert endpoint_of(runner).statistics().connections == 1


async def test_slow_consumer_is_dropped_others_get_everything_in_order(runner_factory, config):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, send_buffer=8), limited_service(disconnects)
        )
        hub = hub_of(runner)
        url = ws_url(runner)
        async with connected_clients(url) as (a, b, c):
            for client in (a, b, c):
                await call(client, "join", {"channel": "feed"})
            async with slow_subscriber(url) as (slow, slow_id):
                # from here on the slow one reads nothing
                progress = Progress(["a", "b", "c"])
                received: dict[str, list[int]] = {"a": [], "b": [], "c": []}
                sent = 0

                async def read(name: str, client: object) -> None:
                    while True:
                        message = await recv_json(client)  # type: ignore[arg-type]
                        if message["event"] == "end":  # type: ignore[index]
                            return
                        received[name].append(message["data"]["i"])  # type: ignore[index]
                        progress.bump(name)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read, "a", a)
                    nursery.start_soon(read, "b", b)
                    nursery.start_soon(read, "c", c)
                    sent = await fill_until_slow(hub, "feed", progress, 400)
                    hub.broadcast("feed", "end", None)
                stats = hub.statistics()
                assert stats.slow_consumers == 1, f"no slow consumer after {sent} messages"
                # every other socket got every message, in order
                for name in ("a", "b", "c"):
                    assert received[name] == list(range(sent)), name
                # the slow one left the hub at once
                assert (stats.sockets, stats.subscriptions) == (3, 3)
                assert hub.get_subscriptions(slow_id) == []
                with pytest.raises(ConnectionNotFound):
                    hub.unicast(slow_id, "e", None)
                # once it reads again: a prefix of the messages, in order, then 1008
                got, code = await read_until_closed(slow)
                assert code == 1008
                assert got == list(range(len(got)))
                assert len(got) < sent
                await disconnects.wait_for(slow_id)
            for client in (a, b, c):
                await still_open(client)


@on_both_engines(
    "on hypercorn a write to a peer that reads nothing is shielded "
    "from cancellation, so the slow consumer's connection is not aborted after the "
    "1 s of SPEC §5.3 but only when TCP_USER_TIMEOUT (30 s) cuts it"
)
async def test_slow_consumer_that_never_reads_is_aborted_within_a_second(
    runner_factory, config, engine
):
    config = {**config, "WEB_SERVER_ENGINE": engine}
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(
            hub_config(config, send_buffer=8), limited_service(disconnects)
        )
        hub = hub_of(runner)
        async with good_and_slow(ws_url(runner)) as (good, _, slow_id):
            progress = Progress(["good"])

            async def read() -> None:
                while (await recv_json(good))["event"] != "end":  # type: ignore[index]
                    progress.bump("good")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await fill_until_slow(hub, "feed", progress, 400)
                hub.broadcast("feed", "end", None)
            assert hub.statistics().slow_consumers == 1
            await assert_aborted_within_a_second(runner, disconnects, slow_id)


# -- shutdown -------------------------------------------------------------------------------


async def test_shutdown_closes_every_socket_with_1001_after_calls_in_flight(runner_factory, config):
    disconnects = Disconnects()
    gate = trio.Event()
    entered = trio.Event()
    config = {**hub_config(config), "SHUTDOWN_GRACE_PERIOD": 10}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, limited_service(disconnects, gate, entered))
        endpoint = endpoint_of(runner)
        url = ws_url(runner)
        async with (
            connect("trio-websocket", url) as busy,
            connect("websockets", url) as also_busy,
            connect("websockets-sync", url) as idle,
            connect("trio-websocket", url) as idle_too,
            trio.open_nursery() as nursery,
        ):
            for client in (busy, also_busy, idle, idle_too):
                await connected(client)
            await busy.send(json.dumps({"method": "work", "data": {"n": 1}, "correlation_id": "a"}))
            await entered.wait()
            await also_busy.send(
                json.dumps({"method": "work", "data": {"n": 2}, "correlation_id": "b"})
            )
            while endpoint.statistics().calls_in_flight < 2:
                await trio.testing.wait_all_tasks_blocked()
            stopped = trio.Event()

            async def stop() -> None:
                await runner.stop()
                stopped.set()

            nursery.start_soon(stop)
            while not endpoint.draining:
                await trio.testing.wait_all_tasks_blocked()
            # while draining: sockets stay open for the calls in flight; new calls are refused
            reply = await call(idle_too, "echo", {"value": 1}, "late")
            assert failure(reply, "ServiceUnavailable", "late")["value"]
            assert not stopped.is_set()
            gate.set()
            # each call in flight gets its reply, then the close frame
            assert await recv_json(busy) == success(1, "a")
            assert await recv_json(also_busy) == success(2, "b")
            for client in (busy, also_busy, idle, idle_too):
                with pytest.raises(Closed) as closed:
                    await client.recv()
                assert closed.value.code == 1001
            await stopped.wait()
        assert hub_of(runner).statistics().sockets == 0
        assert len(disconnects.gone) == 4


@on_both_engines(
    "on hypercorn a write to a peer that reads nothing cannot be "
    "cancelled, so a stop waits for such a peer until TCP_USER_TIMEOUT (30 s), "
    "past the grace period"
)
async def test_shutdown_is_not_held_up_by_a_peer_that_never_reads(runner_factory, config, engine):
    config = {**config, "WEB_SERVER_ENGINE": engine}
    disconnects = Disconnects()
    grace = 0.5
    config = {**hub_config(config, send_buffer=1000), "SHUTDOWN_GRACE_PERIOD": grace}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, limited_service(disconnects))
        hub = hub_of(runner)
        endpoint = endpoint_of(runner)
        stuck = await SansIOClient.open(ws_url(runner), rcvbuf=4096)
        try:
            stuck_id = await connected(stuck)
            # fill its TCP buffers: more than the kernel holds, less than its outbox
            for i in range(400):
                hub.unicast(stuck_id, "m", {"i": i, "pad": PAD})
                await trio.testing.wait_all_tasks_blocked()
                if hub.statistics().queued_messages > 10:
                    break  # the sender is blocked on the socket
            assert hub.statistics().queued_messages > 10
            assert hub.statistics().slow_consumers == 0
            stopped = trio.Event()

            async def stop() -> None:
                await runner.stop()
                stopped.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop)
                # grace period, then one second for close frames, then some slack
                with trio.move_on_after(grace + 1 + 2):
                    await stopped.wait()
                in_time = stopped.is_set()
                await stuck.aclose()  # unblocks the server if it is still waiting
                await stopped.wait()
            assert in_time, "the stop waited on a peer that reads nothing"
            assert endpoint.statistics().connections == 0
        finally:
            await stuck.aclose()

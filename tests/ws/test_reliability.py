"""Reliability over loopback, bounded in count and time: many sockets at once, and peers
that misbehave without disturbing anybody else.

Each abusive peer runs while a *witness* checks that everything else still works: an HTTP
request answers 200, an rpc call on another socket is answered, and a subscriber gets every
broadcast, in order.
"""

from __future__ import annotations

import json
import random
import resource
from functools import partial

import pytest
import trio
import trio.testing

from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, on_disconnect, rpc

from .clients import (
    TEST_TIMEOUT,
    Closed,
    Disconnects,
    Rejected,
    SansIOClient,
    call,
    connect,
    connected,
    connected_client,
    endpoint_of,
    event,
    failure,
    hub_of,
    recv_json,
    still_open,
    success,
    ws_url,
)

# -- services ------------------------------------------------------------------------------


def sturdy_service(disconnects: Disconnects) -> type:
    class Sturdy:
        name = "sturdy"
        hub = WebSocketHubProvider()

        @rpc
        async def echo(self, socket_id, value=None):
            return value

        @rpc
        async def join(self, socket_id, channel):
            self.hub.subscribe(socket_id, channel)

        @http("GET", "/ping")
        async def ping(self, request):
            return {"pong": True}

        @on_disconnect
        async def left(self, socket_id):
            disconnects.add(socket_id)

    return Sturdy


def address_of(runner: object) -> tuple[str, int]:
    host, port = runner.url.removeprefix("http://").rsplit(":", 1)  # type: ignore[attr-defined]
    return host, int(port)


# -- many sockets -------------------------------------------------------------------------------

SOCKETS = 1000


def enough_file_descriptors(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE for ``needed`` descriptors, or skip saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_thousand_sockets_at_once_all_get_a_broadcast(runner_factory, config, http_client):
    # a client and a server descriptor per socket, and room for the rest
    enough_file_descriptors(2 * SOCKETS + 512)
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))
        hub = hub_of(runner)
        url = ws_url(runner)
        kinds = ["websockets-sync"] * 10 + ["trio-websocket", "websockets"] * ((SOCKETS - 10) // 2)
        assert len(kinds) == SOCKETS
        ready = Progress()
        got = Progress()
        done = trio.Event()
        ids: set[str] = set()

        async def hold(kind: str, n: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with connect(kind, url) as client:
                ids.add(await connected(client))
                assert await call(client, "join", {"channel": "everyone"}, n) == success(None, n)
                task_status.started()
                ready.bump()
                assert await recv_json(client) == event("hello", {"to": "all", "n": SOCKETS})
                got.bump()
                await done.wait()

        async with http_client(runner) as session, trio.open_nursery() as nursery:
            batch = 100
            for start in range(0, SOCKETS, batch):  # connected in batches
                async with trio.open_nursery() as connecting:
                    for n in range(start, start + batch):
                        connecting.start_soon(nursery.start, partial(hold, kinds[n], n))
            assert len(ids) == SOCKETS
            assert hub.statistics().sockets == SOCKETS
            # one more is refused: max_connections defaults to 1000
            with pytest.raises(Rejected) as refused:
                async with connect("websockets", url):
                    pass
            assert refused.value.status == 503
            assert (await session.get("/ping")).status_code == 200
            hub.broadcast("everyone", "hello", {"to": "all", "n": SOCKETS})
            await got.at_least(SOCKETS)
            done.set()
        await disconnects.wait(SOCKETS)
        stats = hub.statistics()
        assert (stats.sockets, stats.channels, stats.subscriptions, stats.queued_messages) == (
            0,
            0,
            0,
            0,
        )


class Progress:
    def __init__(self) -> None:
        self.count = 0
        self._changed = trio.Event()

    def bump(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = trio.Event()

    async def at_least(self, n: int) -> None:
        while self.count < n:
            await self._changed.wait()


# -- abusive peers ------------------------------------------------------------------------------


async def witness(runner: object, session: object, rounds: int = 20) -> None:
    """Everything else still works: HTTP 200, rpc answers, broadcasts in order."""
    hub = hub_of(runner)
    url = ws_url(runner)
    async with connect("trio-websocket", url) as caller, connect("websockets", url) as listener:
        await connected(caller)
        await connected(listener)
        await call(listener, "join", {"channel": "witness"})
        for i in range(rounds):
            response = await session.get("/ping")  # type: ignore[attr-defined]
            assert response.status_code == 200
            assert response.json() == {"pong": True}
            assert await call(caller, "echo", {"value": [i]}, i) == success([i], i)
            hub.broadcast("witness", "tick", i)
            assert await recv_json(listener) == event("tick", i)


GARBAGE_TEXT = [
    "",
    " ",
    "{",
    "}{",
    "null",
    "[" * 100_000 + "]" * 100_000,  # nested beyond the parser's recursion limit
    '{"method": "echo", "data": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "1e999999",
    "9" * 100_000,  # an integer beyond Python's digit limit
    '"\\udc00"',  # a lone surrogate, escaped
    '{"method": "echo", "data": {"value": "\\ud800"}, "correlation_id": 1}',
    '{"method": "\\u0000"}',
    "\x00\x01\x02",
    "é" * 1000,
    '{"method": "echo", "data": {"value": NaN}}',
    '{"method": "echo", "data": {"value": Infinity}}',
    '{"method": "echo", "data": {"__proto__": 1}}',
    '{"method": "echo", "method": "nope"}',
]


async def garbage_text(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    rng = random.Random(1)
    frames = GARBAGE_TEXT + [
        "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 300)))
        for _ in range(100)
    ]
    for kind in ("trio-websocket", "websockets"):
        async with connected_client(runner, kind) as client:
            for frame in frames:
                await client.send(frame)
                reply = await recv_json(client)
                assert isinstance(reply, dict)
                assert reply["type"] == "result", (frame[:50], reply)
                if reply["success"]:  # a frame that happens to be a good call
                    continue
                assert reply["error"]["exc_type"] in (  # type: ignore[index]
                    "MalformedRequest",
                    "IncorrectSignature",
                    "MethodNotFound",
                    "InternalServerError",
                ), (frame[:50], reply)
            await still_open(client)
    in_place.set()
    await release.wait()


async def binary_frames(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    rng = random.Random(2)
    for kind in ("trio-websocket", "websockets", "websockets-sync"):
        async with connected_client(runner, kind) as client:
            for size in [0, 1, 2, 125, 126, 65535, 65536, 100_000]:
                await client.send_bytes(rng.randbytes(size))
                failure(await recv_json(client), "MalformedRequest")
            await still_open(client)
    in_place.set()
    await release.wait()


async def enormous_frames(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    limit = 1024 * 1024  # the default max_message_size
    # just under the limit: an answer; just over it: 1009
    async with connect("trio-websocket", ws_url(runner)) as client:
        await connected(client)
        value = "v" * (limit - 100)
        assert await call(client, "echo", {"value": value}, "big") == success(value, "big")
        await client.send("x" * (limit + 100_000))
        with pytest.raises(Closed) as closed:
            await client.recv()
        assert closed.value.code == 1009
    # far over it: 1009 too. (The server then never closes TCP: see test_limits.py, so this
    # client drops the connection itself.)
    client = await SansIOClient.open(ws_url(runner))
    try:
        await connected(client)
        await client.send("x" * (8 * limit))
        with pytest.raises(Closed) as closed:
            await client.recv()
        assert closed.value.code == 1009
    finally:
        await client.aclose()
    in_place.set()
    await release.wait()


async def half_open_handshake(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    streams = []
    try:
        for part in (
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConn",
            b"GET /ws HTTP/1.1\r\n",
            b"G",
            b"",  # connects and says nothing at all
        ):
            stream = await trio.open_tcp_stream(*address_of(runner))
            streams.append(stream)
            if part:
                await stream.send_all(part)
        in_place.set()
        await release.wait()
    finally:
        for stream in streams:
            await stream.aclose()


async def never_reads(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    hub = hub_of(runner)
    client = await SansIOClient.open(ws_url(runner), rcvbuf=4096)
    try:
        socket_id = await connected(client)
        await call(client, "join", {"channel": "witness"})  # it shares the witness's channel
        pad = "p" * 32_768
        for i in range(2000):  # more than its outbox (256) and the kernel's buffers hold
            if not hub.get_subscriptions(socket_id):
                break  # dropped as a slow consumer
            hub.unicast(socket_id, "flood", {"i": i, "pad": pad})
            await trio.testing.wait_all_tasks_blocked()
        assert hub.get_subscriptions(socket_id) == []
        assert hub.statistics().slow_consumers == 1
        in_place.set()
        await release.wait()
    finally:
        await client.aclose()


async def garbage_bytes(runner: object, in_place: trio.Event, release: trio.Event) -> None:
    rng = random.Random(3)
    host, port = address_of(runner)
    # not HTTP at all: ended as a request head would be, or longer than a head may be
    for opening in (rng.randbytes(4096) + b"\r\n\r\n", rng.randbytes(64 * 1024)):
        stream = await trio.open_tcp_stream(host, port)
        answer = b""
        try:
            await stream.send_all(opening)
            # the server ends the connection (an error answer, then EOF)
            with trio.fail_after(5):
                while data := await stream.receive_some(65536):
                    answer += data
        except trio.BrokenResourceError:
            pass  # reset by the server: as good as closed
        finally:
            await stream.aclose()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
    in_place.set()
    await release.wait()


ABUSERS = {
    "garbage text frames": garbage_text,
    "binary frames": binary_frames,
    "enormous frames": enormous_frames,
    "half-open handshakes": half_open_handshake,
    "a client that never reads": never_reads,
    "garbage bytes": garbage_bytes,
}


@pytest.mark.parametrize("abuser", list(ABUSERS))
async def test_an_abusive_peer_disturbs_nobody(runner_factory, config, http_client, abuser):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))
        async with http_client(runner) as session:
            async with trio.open_nursery() as nursery:
                in_place = trio.Event()
                release = trio.Event()
                nursery.start_soon(ABUSERS[abuser], runner, in_place, release)
                await witness(runner, session, rounds=5)  # while it abuses
                await in_place.wait()
                await witness(runner, session)  # while it holds on to what it did
                release.set()
            await witness(runner, session)  # after it has gone
        assert hub_of(runner).statistics().queued_messages == 0


async def test_all_abusive_peers_at_once_disturb_nobody(runner_factory, config, http_client):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))
        async with http_client(runner) as session:
            async with trio.open_nursery() as nursery:
                release = trio.Event()
                placed = []
                for abuse in ABUSERS.values():
                    in_place = trio.Event()
                    placed.append(in_place)
                    nursery.start_soon(abuse, runner, in_place, release)
                await witness(runner, session)
                for in_place in placed:
                    await in_place.wait()
                await witness(runner, session)
                release.set()
            await witness(runner, session)


# -- invalid WebSocket frames --------------------------------------------------------------------

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

INVALID_FRAMES = [
    random.Random(4).randbytes(4096),
    b"\x81\x05hello",  # a client frame must be masked
    b"\x8f\x80\x00\x00\x00\x00",  # a reserved opcode
    b"\xf1\x80\x00\x00\x00\x00",  # reserved bits set
    b"\x89\xfe\x01\x00" + b"\x00" * 4 + b"p" * 256,  # a control frame over 125 bytes
]


async def send_invalid_frames(runner: object, rounds: int) -> None:
    """Complete handshakes by hand, then send bytes that are no valid frames: each time the
    server ends the connection."""
    host, port = address_of(runner)
    for n in range(rounds):
        stream = await trio.open_tcp_stream(host, port)
        try:
            await stream.send_all(HANDSHAKE)
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            assert head.startswith(b"HTTP/1.1 101"), head[:100]
            await stream.send_all(INVALID_FRAMES[n % len(INVALID_FRAMES)])
            with trio.fail_after(5):
                while await stream.receive_some(65536):
                    pass
        except trio.BrokenResourceError:
            pass  # reset by the server: as good as closed
        finally:
            await stream.aclose()


async def test_invalid_frames_close_only_their_connection(runner_factory, config, http_client):
    disconnects = Disconnects()
    config = {**config, "WEBSOCKET_HUB_CONFIG": {"heartbeat_interval": 0}}
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))
        async with http_client(runner) as session:
            await send_invalid_frames(runner, 30)
            await witness(runner, session)
        await disconnects.wait(30)
        assert hub_of(runner).statistics().sockets == 0


async def test_invalid_frames_with_heartbeats_on_never_crash_the_server(
    runner_factory, config, http_client
):
    disconnects = Disconnects()
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))  # heartbeat: 30 s
        async with http_client(runner) as session:
            await send_invalid_frames(runner, 30)
            await witness(runner, session)


# -- calls dropped as they begin -------------------------------------------------------------


async def test_clients_that_drop_right_after_a_call_leak_no_worker(
    runner_factory, config, http_client
):
    """A call whose socket is gone before it begins is cancelled, and gives back its slot."""
    disconnects = Disconnects()
    config = {**config, "WEB_SERVER_TIMEOUT": 2}  # a wedged service answers 503 soon
    with trio.fail_after(TEST_TIMEOUT):
        runner = await runner_factory(config, sturdy_service(disconnects))
        drops = 30  # three times WEB_SERVER_MAX_WORKERS
        for n in range(drops):
            client = await SansIOClient.open(ws_url(runner))
            try:
                await connected(client)
                await client.send(json.dumps({"method": "echo", "data": {"value": n}}))
            finally:
                await client.aclose()  # at once: the call is cancelled as it begins
        # every connection ended (their @on_disconnect hooks want a worker too)
        await endpoint_of(runner).connections.wait_zero()
        async with http_client(runner) as session:
            await witness(runner, session)

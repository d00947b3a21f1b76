"""The triosvc engine's WebSocket side, driven directly with small ASGI apps."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from triosvc.web.engines.native.websocket import SEND_MANY, _frames, frame
from triosvc.ws import connection

from .conftest import TIMEOUT, echo, raw


def handshake(path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), key)
    )


async def test_echo_text_and_bytes(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{running.port}/ws") as ws:
            for n in range(100):
                await ws.send_message(f"hello {n}")
                assert await ws.get_message() == f"hello {n}"
            await ws.send_message(b"\x00\x01" * 1000)
            assert await ws.get_message() == b"\x00\x01" * 1000


async def test_the_app_sees_the_client_close(engine):
    seen: list[dict[str, Any]] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        done.set()

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{running.port}/ws") as ws:
            await ws.aclose(code=4000)
        await done.wait()
    assert seen == [{"type": "websocket.disconnect", "code": 4000}]


def masked_text_frame(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b"\x81\xfe" + len(payload).to_bytes(2, "big") + mask + masked


async def test_a_message_over_the_limit_closes_with_1009(engine):
    running = await engine(echo, websocket_max_message_size=1000)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(handshake())
            assert (await client.response(head=True)).status == 101
            await client.send(masked_text_frame(b"a" * 1000))
            await client._exactly(4 + 1000)  # the echo
            await client.send(masked_text_frame(b"a" * 1001))
            close = await client._exactly(4)
            assert close[0] == 0x88  # a close frame, code 1009
            assert int.from_bytes(close[2:4], "big") == 1009


async def test_a_silent_peer_is_dropped_after_two_ping_intervals(engine):
    gone = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive()) == {"type": "websocket.disconnect", "code": 1006}
        gone.set()

    running = await engine(app, websocket_ping_interval=0.2)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:  # answers the handshake, then nothing
            await client.send(handshake())
            assert (await client.response(head=True)).status == 101
            start = trio.current_time()
            assert await client.closed()  # reads the pings, never answers
            assert 0.35 < trio.current_time() - start < 1.5
            assert b"\x89" in client.buffer  # it was pinged meanwhile
        await gone.wait()


async def test_a_peer_that_answers_pings_stays(engine):
    running = await engine(echo, websocket_ping_interval=0.1)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{running.port}/ws") as ws:
            await trio.sleep(1)  # ten intervals without a message: the duration is the subject
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"


async def test_the_app_may_deny_the_handshake_with_a_response(engine):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        body = json.dumps({"error": "ServiceUnavailable", "message": "full"}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})

    running = await engine(app)
    with trio.fail_after(TIMEOUT):  # a raw client: trio-websocket leaks its socket on a refusal
        async with raw(running) as client:
            await client.send(handshake())
            response = await client.response()
            assert response.status == 503
            assert response.header("content-type") == "application/json"
            assert json.loads(response.body)["message"] == "full"
            assert await client.closed()


async def test_a_close_before_accept_is_a_403(engine):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(handshake())
            assert (await client.response()).status == 403


async def test_a_peer_that_never_reads_is_aborted_at_the_write_deadline(engine):
    finished = trio.Event()
    outcome: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(10_000):  # far more than the socket buffers hold
            await send({"type": "websocket.send", "bytes": b"x" * 65536})
        outcome.append(await receive())
        finished.set()

    running = await engine(app, write_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(handshake())  # and never reads a byte
            await finished.wait()
    assert outcome == [{"type": "websocket.disconnect", "code": 1006}]


async def test_pings_from_the_peer_are_answered(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{running.port}/ws") as ws:
            await ws.ping(b"abc")  # returns once the matching pong arrived


# -- data frames built by the engine, and the SEND_MANY extension ----------------------------

SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70000)


@pytest.mark.parametrize("size", SIZES)
def test_frame_is_wsprotos_frame(size: int) -> None:
    # What wsproto would send for the same message (a server's frames are unmasked).
    for message in ("a" * size, "é" * (size // 2), b"\x00\xff" * (size // 2)):
        expected = Connection(ConnectionType.SERVER).send(
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        assert frame(message) == expected
        assert _frames([message, message]) == expected + expected


async def test_send_many_sends_every_message_in_order(engine):
    messages: list[str | bytes] = [f"m{i}" for i in range(50)]
    messages += [b"\x00" * 70000, "é" * 200, "", b"", "x" * 126]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert SEND_MANY in scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": SEND_MANY, "messages": messages[:30]})
        await send({"type": "websocket.send", "text": "between"})
        await send({"type": SEND_MANY, "messages": messages[30:]})
        await receive()

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{running.port}/ws") as ws:
            got = [await ws.get_message() for _ in range(len(messages) + 1)]
    assert got == [*messages[:30], "between", *messages[30:]]


async def test_send_many_before_accept_fails_the_app(engine):
    failed: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": SEND_MANY, "messages": ["early"]})
        except RuntimeError as exc:
            failed.append(exc)
            raise

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(handshake())
            assert (await client.response()).status == 500
    assert len(failed) == 1


def test_the_hub_and_the_engine_agree_on_the_extension() -> None:
    assert connection.SEND_MANY == SEND_MANY

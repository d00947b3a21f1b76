"""Drive the triosvc engine directly: small ASGI apps, raw HTTP over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio

from triosvc.config import parse_address
from triosvc.web.engines import EngineOptions, get_engine
from triosvc.web.server import bind_socket

#: Upper bound, in seconds, for any test here (they all talk over sockets).
TIMEOUT = 20

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@attrs.define
class Running:
    port: int
    stop: trio.Event

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


async def _start(nursery: trio.Nursery, name: str, app: App, **options: Any) -> Running:
    values: dict[str, Any] = {
        "graceful_timeout": 5.0,
        "read_timeout": 5.0,
        "max_header_size": 16 * 1024,
        **options,
    }
    sock = bind_socket(parse_address("127.0.0.1:0"))
    port = sock.getsockname()[1]
    stop = trio.Event()
    serve = get_engine(name)
    if name == "hypercorn":
        app = _with_lifespan(app)  # hypercorn runs the lifespan protocol first
    await nursery.start(
        partial(serve, app, sock, EngineOptions(**values), shutdown_trigger=stop.wait)
    )
    return Running(port, stop)


def _with_lifespan(app: App) -> App:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    return wrapped


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every text and binary message back to its sender, as it came."""
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


@pytest.fixture
def engine(nursery: trio.Nursery) -> Callable[..., Any]:
    """``await engine(app, **options)``: the engine serving ``app`` until the test ends."""
    return partial(_start, nursery, "triosvc")


@pytest.fixture
def engine_named(nursery: trio.Nursery) -> Callable[..., Any]:
    """``await engine_named(name, app, **options)``: the engine called ``name``
    ("triosvc" or "hypercorn") serving ``app`` until the test ends."""
    return partial(_start, nursery)


@attrs.define
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class RawClient:
    """Reads HTTP/1.1 responses off a stream, keeping what follows for the next one."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def _until(self, marker: bytes) -> bytes:
        while (index := self.buffer.find(marker)) < 0:
            if not await self._fill():
                raise EOFError(bytes(self.buffer))
        chunk = bytes(self.buffer[:index])
        del self.buffer[: index + len(marker)]
        return chunk

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._fill():
                raise EOFError(bytes(self.buffer))
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk

    async def response(self, head: bool = False) -> Response:
        lines = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        response = Response(status, headers, b"")  # type: ignore[arg-type]
        if head or status in (204, 304) or status < 200:
            return response
        length = response.header("content-length")
        if length is not None:
            response.body = await self._exactly(int(length))
        elif response.header("transfer-encoding") == "chunked":
            body = bytearray()
            while size := int(await self._until(b"\r\n"), 16):
                body += await self._exactly(size)
                await self._until(b"\r\n")
            await self._until(b"\r\n")
            response.body = bytes(body)
        else:
            while await self._fill():
                pass
            response.body = bytes(self.buffer)
            self.buffer.clear()
        return response

    async def closed(self) -> bool:
        """Whether the server closed the connection (after any buffered bytes)."""
        try:
            while await self._fill():
                pass
        except trio.BrokenResourceError:  # reset
            pass
        return True


@asynccontextmanager
async def raw(running: Running) -> AsyncIterator[RawClient]:
    stream = await running.connect()
    async with stream:
        yield RawClient(stream)

"""WebSocket clients for the tests: trio-websocket, and the `websockets` library (sans-IO
over a trio stream, and its sync client in threads), behind one small interface, with the
frame helpers the WebSocket tests share."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio
import trio.testing
import trio_websocket
import websockets.sync.client
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Opcode
from websockets.uri import parse_uri
from wsproto.utilities import LocalProtocolError

from triosvc.web.server import WebServer
from triosvc.ws.endpoint import WebSocketEndpoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from triosvc.ws.hub import WebSocketHub

#: Upper bound, in seconds, for each WebSocket test.
TEST_TIMEOUT = 20

CLIENTS = ("trio-websocket", "websockets", "websockets-sync")


class Closed(Exception):
    """The server closed the socket; ``code`` is its close code (1006: no close frame)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Rejected(Exception):
    """The server answered the handshake with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes, content_type: str | None) -> None:
        super().__init__(status, body, content_type)
        self.status = status
        self.body = body
        self.content_type = content_type


class TrioWebsocketClient:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self) -> str:
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise Closed(exc.reason.code) from None
        assert isinstance(message, str), message
        return message

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no frame arrives within ``seconds``."""
        with trio.move_on_after(seconds):
            raise AssertionError(f"an unexpected frame: {await self.recv()}")


class SansIOClient:
    """The ``websockets`` library's sans-IO protocol over a trio socket stream.

    ``mute``: after the handshake, send nothing of what the protocol asks to (no pongs, no
    close replies), as a peer that stopped answering. ``pings`` counts pings received.
    """

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.frames: list[object] = []
        self.mute = False
        self.pings = 0

    @classmethod
    async def open(
        cls, url: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None
    ) -> SansIOClient:
        """Connect; ``rcvbuf`` shrinks the socket's receive buffer (SO_RCVBUF) first."""
        uri = parse_uri(url)
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
        try:
            await sock.connect((uri.host, uri.port))
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        protocol = ClientProtocol(uri, max_size=None)
        request = protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        protocol.send_request(request)
        client = cls(stream, protocol)
        try:
            await client._flush()
            events: list[object] = []
            while not events:
                await client._read()
                events = list(protocol.events_received())
            if protocol.handshake_exc is not None:
                response = events[0]
                raise Rejected(
                    response.status_code,  # type: ignore[attr-defined]
                    response.body,  # type: ignore[attr-defined]
                    response.headers.get("Content-Type"),  # type: ignore[attr-defined]
                )
        except BaseException:
            await stream.aclose()
            raise
        client.frames.extend(events[1:])
        return client

    async def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data and not self.mute:
            await self.stream.send_all(data)

    async def _read(self) -> bool:
        try:
            data = await self.stream.receive_some(1 << 16)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return bool(data)

    async def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def send_bytes(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        await self._flush()

    async def recv(self) -> str:
        while True:
            while self.frames:
                frame = self.frames.pop(0)
                if frame.opcode is Opcode.TEXT:  # type: ignore[attr-defined]
                    return frame.data.decode()  # type: ignore[attr-defined]
                if frame.opcode is Opcode.PING:  # type: ignore[attr-defined]
                    self.pings += 1
                if frame.opcode is Opcode.CLOSE:  # type: ignore[attr-defined]
                    data = frame.data  # type: ignore[attr-defined]
                    raise Closed(Close.parse(data).code if data else 1005)
            alive = await self._read()
            await self._flush()  # pongs, and the reply to a close frame
            self.frames.extend(self.protocol.events_received())
            if not alive and not self.frames:
                raise Closed(1006)

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no frame arrives within ``seconds``."""
        with trio.move_on_after(seconds):
            raise AssertionError(f"an unexpected frame: {await self.recv()}")

    async def aclose(self) -> None:
        await self.stream.aclose()


class SyncClient:
    """The ``websockets`` library's blocking client, each call in a worker thread."""

    def __init__(self, connection: websockets.sync.client.ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> SyncClient:
        connect = partial(
            websockets.sync.client.connect,
            url,
            additional_headers=headers,
            proxy=None,
            compression=None,
            open_timeout=5,
            close_timeout=2,
        )
        try:
            # entered as a context manager, as websockets >= 17.1 asks; closed by aclose()
            return cls(await trio.to_thread.run_sync(lambda: connect().__enter__()))
        except InvalidStatus as exc:
            response = exc.response
            raise Rejected(
                response.status_code, response.body, response.headers.get("Content-Type")
            ) from None

    async def send(self, text: str) -> None:
        await trio.to_thread.run_sync(self.connection.send, text)

    async def send_bytes(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self.connection.send, data)

    async def recv(self) -> str:
        try:
            message = await trio.to_thread.run_sync(
                partial(self.connection.recv, TEST_TIMEOUT), abandon_on_cancel=True
            )
        except ConnectionClosed as exc:
            raise Closed(exc.rcvd.code if exc.rcvd is not None else 1006) from None
        assert isinstance(message, str), message
        return message

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no frame arrives within ``seconds`` (the thread's recv times out)."""
        try:
            message = await trio.to_thread.run_sync(partial(self.connection.recv, seconds))
        except TimeoutError:
            return
        raise AssertionError(f"an unexpected frame: {message}")

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.connection.close)


@asynccontextmanager
async def connect(
    kind: str, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[TrioWebsocketClient | SansIOClient | SyncClient]:
    """A connected client of ``kind``; Rejected if the handshake is refused."""
    if kind == "trio-websocket":
        async with _trio_websocket(url, headers) as client:
            yield client
        return
    client = await (SansIOClient if kind == "websockets" else SyncClient).open(url, headers)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


@asynccontextmanager
async def connected_client(
    runner: object, kind: str
) -> AsyncIterator[TrioWebsocketClient | SansIOClient | SyncClient]:
    """A client of ``kind`` on ``runner``'s endpoint, its connected event read."""
    async with connect(kind, ws_url(runner)) as client:
        await connected(client)
        yield client


@asynccontextmanager
async def connected_clients(
    url: str, *kinds: str
) -> AsyncIterator[list[TrioWebsocketClient | SansIOClient | SyncClient]]:
    """One client of each of ``kinds`` (default: CLIENTS) on ``url``, each connected event read."""
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(k, url)) for k in kinds or CLIENTS]
        for client in clients:
            await connected(client)
        yield clients


@asynccontextmanager
async def _trio_websocket(
    url: str, headers: dict[str, str] | None
) -> AsyncIterator[TrioWebsocketClient]:
    # Over a stream of our own: open_websocket_url leaves its socket open when the
    # handshake is refused (a ResourceWarning, which this suite turns into an error).
    uri = parse_uri(url)
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    stream = await trio.open_tcp_stream(uri.host, uri.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, f"{uri.host}:{uri.port}", uri.resource_name, extra_headers=extra
            )
            try:
                yield TrioWebsocketClient(ws)
            finally:
                with trio.move_on_after(2, shield=True):
                    await ws.aclose()
                # The client then waits for the server to close TCP (RFC 6455 §7.1.1); a
                # server that never does would hold its reader, and this nursery, for ever.
                nursery.cancel_scope.deadline = trio.current_time() + 2
    except BaseExceptionGroup as group:
        # trio-websocket answers a ping that crosses its own close frame, which wsproto
        # refuses (python-trio/trio-websocket#184): a client bug, not the server's.
        _, rest = group.split(_pong_while_closing)
        if rest is None:
            return
        inner = _sole(rest)
        if isinstance(inner, trio_websocket.ConnectionRejected):
            headers = {k.decode().lower(): v.decode() for k, v in inner.headers}
            raise Rejected(
                inner.status_code, inner.body or b"", headers.get("content-type")
            ) from None
        raise inner from None
    finally:
        await stream.aclose()


def _pong_while_closing(exc: BaseException) -> bool:
    return isinstance(exc, LocalProtocolError) and str(exc).startswith("Event Pong")


def _sole(group: BaseExceptionGroup) -> BaseException:
    """The one exception in (nested) groups of one; the group itself otherwise."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


async def recv_json(client: TrioWebsocketClient | SansIOClient | SyncClient) -> object:
    return json.loads(await client.recv())


async def connected(client: TrioWebsocketClient | SansIOClient | SyncClient) -> str:
    """Read the connected event; the socket id."""
    message = await recv_json(client)
    assert isinstance(message, dict)
    assert message["type"] == "event"
    assert message["event"] == "connected"
    return str(message["data"]["socket_id"])


async def call(
    client: TrioWebsocketClient | SansIOClient | SyncClient,
    method: str,
    data: object = None,
    correlation_id: object = None,
) -> dict[str, object]:
    """Send one call and read the next frame (its answer, on a socket with no events)."""
    await client.send(
        json.dumps({"method": method, "data": data, "correlation_id": correlation_id})
    )
    reply = await recv_json(client)
    assert isinstance(reply, dict)
    return reply


def ws_url(runner: object) -> str:
    return runner.url.replace("http", "ws") + "/ws"  # type: ignore[attr-defined]


def exact(value: object) -> object:
    """A value with the type of every scalar in it, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, value)


def success(data: object, correlation_id: object) -> dict[str, object]:
    return {"type": "result", "success": True, "data": data, "correlation_id": correlation_id}


def failure(reply: dict[str, object], exc_type: str, correlation_id: object = None) -> dict:
    """Check that ``reply`` is an error frame of ``exc_type``; its ``error`` object."""
    assert set(reply) == {"type", "success", "error", "correlation_id"}, reply
    assert reply["type"] == "result"
    assert reply["success"] is False
    assert exact(reply["correlation_id"]) == exact(correlation_id)
    error = reply["error"]
    assert isinstance(error, dict)
    assert set(error) == {"exc_type", "value", "exc_args"}, error
    assert error["exc_type"] == exc_type, error
    assert isinstance(error["value"], str)
    assert isinstance(error["exc_args"], list)
    return error


async def still_open(client: TrioWebsocketClient | SansIOClient | SyncClient) -> None:
    """The socket still answers calls."""
    assert await call(client, "echo", {"value": "still here"}, "ping") == success(
        "still here", "ping"
    )


def endpoint_of(runner: object) -> WebSocketEndpoint:
    server = runner.shared_extension(WebServer)  # type: ignore[attr-defined]
    endpoint = server.companions[WebSocketEndpoint]
    assert isinstance(endpoint, WebSocketEndpoint)
    return endpoint


def hub_of(runner: object) -> WebSocketHub:
    """The runner's hub, as the WebSocket endpoint riding on its web server holds it."""
    return endpoint_of(runner).hub


class Disconnects:
    """Records socket ids (of ``@on_disconnect`` calls, or of calls begun); ``wait(n)`` until
    there are n, ``wait_for(socket_id)`` until that one is there."""

    def __init__(self) -> None:
        self.gone: list[str] = []
        self._changed = trio.Event()

    def add(self, socket_id: str) -> None:
        self.gone.append(socket_id)
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, count: int) -> None:
        while len(self.gone) < count:
            await self._changed.wait()

    async def wait_for(self, socket_id: str) -> None:
        while socket_id not in self.gone:
            await self._changed.wait()


def event(name: str, data: object) -> dict[str, object]:
    return {"type": "event", "event": name, "data": data}

"""WebSocket on one connection, upgraded from an HTTP/1.1 request, framed by wsproto.

The ASGI app runs in the connection's task, inside a nursery that holds one more task
at most: the heartbeat, which pings every ``websocket_ping_interval``. Frames are read
on demand, by the app's ``receive()``: pings are answered (pong) and the peer's close
is answered there, and every read has a deadline of two ping intervals after the last
bytes heard from the peer: a peer that stays silent (no pong, no frame) that long is
dropped (the app sees ``websocket.disconnect`` with 1006). This is the engine's own
liveness check, independent of the HTTP read timeout.

A message grows in memory only up to ``websocket_max_message_size``: beyond, the
connection is closed with 1009. Writes (app messages, pings, pongs) go through the
transport one at a time, each under the write deadline; close frames get at most
:data:`CLOSE_TIMEOUT`. A write that misses its deadline aborts the connection.

Sending: the ASGI ``websocket.send`` writes one frame. The engine also offers a private
extension, :data:`SEND_MANY` in ``scope["extensions"]``: one ASGI message
``{"type": SEND_MANY, "messages": [str | bytes, ...]}`` frames them all (a str as a text
message, bytes as a binary one) and writes them with one transport write, in order. It is
for a sender draining a queue (triosvc's hub: :mod:`triosvc.ws.connection`), which thus
pays the ASGI round, the write's syscall and its checkpoint once per batch rather than
once per message; the sender bounds the batch, so memory stays bounded. On the other
engines the key is absent and the sender sends one message at a time. Data frames are built
here (:func:`frame`: RFC 6455 §5.2, a server's frames are unmasked: a 2, 4 or 10 byte
header, then the payload): 0.2 µs for a short message against 3.5 µs in wsproto's
``Connection.send``, which copies the payload three times. wsproto still frames every
control frame and keeps the connection's state, which a data frame does not change
(this engine never fragments a message it sends).

Before ``websocket.accept`` the app may refuse: ``websocket.close`` is a 403, the
``websocket.http.response`` extension sends its own status, headers and body.
Permessage-deflate is not offered (a compressed message could not be bounded
before it is inflated).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from .http import LOGGER, error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ...asgi import Message as ASGIMessage
    from ...asgi import Scope
    from .http import ServerState
    from .parsing import Request
    from .transport import Transport

__all__ = ["CLOSE_TIMEOUT", "SEND_MANY", "WebSocketSession", "frame"]

#: Seconds a close frame may take to go out (and the peer's reply to come back).
CLOSE_TIMEOUT = 1.0

#: The private ASGI extension (and message type) that sends several messages in one write.
#: triosvc.ws.connection names it too; keep the two in step.
SEND_MANY = "triosvc.websocket.send_many"

# The first two header bytes of an unfragmented data frame: FIN and the opcode (text 0x1,
# binary 0x2), then the payload length when below 126 (no mask bit: a server's frame).
_TEXT_HEADS = tuple(bytes((0x81, n)) for n in range(126))
_BINARY_HEADS = tuple(bytes((0x82, n)) for n in range(126))
_LONG_HEAD = struct.Struct("!BBH")  # length 126..65535: 126, then 16 bits
_HUGE_HEAD = struct.Struct("!BBQ")  # longer: 127, then 64 bits


def frame(message: str | bytes) -> bytes:
    """One complete text (str) or binary (bytes) message as one unmasked frame."""
    if isinstance(message, str):
        payload, heads, opcode = message.encode(), _TEXT_HEADS, 0x81
    else:
        payload, heads, opcode = bytes(message), _BINARY_HEADS, 0x82
    n = len(payload)
    if n < 126:
        return heads[n] + payload
    if n < 65536:
        return _LONG_HEAD.pack(opcode, 126, n) + payload
    return _HUGE_HEAD.pack(opcode, 127, n) + payload


def _frames(messages: Iterable[str | bytes]) -> bytes:
    """Messages framed one after the other, joined in one copy."""
    parts = []
    for message in messages:
        if isinstance(message, str):
            payload, heads, opcode = message.encode(), _TEXT_HEADS, 0x81
        else:
            payload, heads, opcode = bytes(message), _BINARY_HEADS, 0x82
        n = len(payload)
        if n < 126:
            parts.append(heads[n])
        elif n < 65536:
            parts.append(_LONG_HEAD.pack(opcode, 126, n))
        else:
            parts.append(_HUGE_HEAD.pack(opcode, 127, n))
        parts.append(payload)
    return b"".join(parts)


class WebSocketSession:
    """One WebSocket: the handshake the app accepts or refuses, then messages."""

    def __init__(
        self, transport: Transport, state: ServerState, request: Request, scope: Scope
    ) -> None:
        self.transport = transport
        self.options = state.options
        self.app = state.app
        self.request = request
        headers = dict(request.headers)
        self.key = headers.get(b"sec-websocket-key")
        self.version = headers.get(b"sec-websocket-version")
        protocols = headers.get(b"sec-websocket-protocol", b"").decode("latin-1")
        scope["subprotocols"] = [p.strip() for p in protocols.split(",") if p.strip()]
        scope["extensions"] = {"websocket.http.response": {}, SEND_MANY: {}}
        self.scope = scope
        self.ws = Connection(ConnectionType.SERVER)
        self.connect_sent = False
        self.accepted = False
        #: The handshake got an HTTP answer instead (a refusal).
        self.refused = False
        self.close_code: int | None = None
        self.last_heard = 0.0
        self.parts: list[str | bytes] = []
        self.size = 0
        self._nursery: trio.Nursery | None = None

    async def run(self, trailing: bytes) -> None:
        if not self.key or self.version != b"13":
            message = "a WebSocket handshake needs Sec-WebSocket-Key and -Version: 13"
            await self.transport.write(error_response(400, "BadRequest", message))
            return
        self.ws.receive_data(trailing)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self.app(self.scope, self.receive, self.send)
                except Exception:
                    LOGGER.exception("the app failed on WebSocket %s", self.scope["path"])
                    if not (self.accepted or self.refused):
                        self.refused = True
                        await self.transport.write(
                            error_response(500, "InternalServerError", "internal server error")
                        )
                nursery.cancel_scope.cancel()
            if not (self.accepted or self.refused):
                await self._refuse(403, [], b"", more=False)
            elif self.accepted and self.ws.state is ConnectionState.OPEN:
                await self._close(CloseReason.NORMAL_CLOSURE, "")
            if self.ws.state is ConnectionState.LOCAL_CLOSING:
                await self._await_close_reply()
        finally:
            self.transport.close()

    # ASGI receive

    async def receive(self) -> ASGIMessage:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while self.close_code is None:
            for event in self.ws.events():
                message = await self._handle(event)
                if message is not None:
                    return message
            data = await self._read()
            if not data:
                self.close_code = CloseReason.ABNORMAL_CLOSURE
                break
            self.ws.receive_data(data)
        return {"type": "websocket.disconnect", "code": int(self.close_code)}

    async def _read(self) -> bytes:
        interval = self.options.websocket_ping_interval
        if not interval or not self.accepted:
            data = await self.transport.receive()
        else:
            with trio.move_on_at(self.last_heard + 2 * interval) as scope:
                data = await self.transport.receive()
            if scope.cancelled_caught:
                LOGGER.info(
                    "dropping WebSocket peer %s: silent for two pings", self.scope["client"]
                )
                self.transport.close()
                return b""
        self.last_heard = trio.current_time()
        return data

    async def _handle(self, event: object) -> ASGIMessage | None:
        if isinstance(event, (TextMessage, BytesMessage)):
            return await self._message(event)
        if isinstance(event, Ping):
            if self.ws.state is ConnectionState.OPEN:
                await self.transport.write(self.ws.send(event.response()))
            return None
        if isinstance(event, CloseConnection):
            code = event.code
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.transport.write(self.ws.send(event.response()), CLOSE_TIMEOUT)
            elif self.ws.state is ConnectionState.OPEN:  # a protocol error: fail at once
                await self._close(code, event.reason or "")
            self.close_code = code
            self.transport.close()
            return {"type": "websocket.disconnect", "code": int(code)}
        return None  # a pong: the read that brought it counts as heard

    async def _message(self, event: TextMessage | BytesMessage) -> ASGIMessage | None:
        data: str | bytes = bytes(event.data) if isinstance(event, BytesMessage) else event.data
        limit = self.options.websocket_max_message_size
        # In bytes: text is encoded to count it only when it is not ASCII.
        if isinstance(data, bytes) or data.isascii():
            self.size += len(data)
        else:
            self.size += len(data.encode())
        if self.size > limit:
            LOGGER.info(
                "closing WebSocket %s: a message over %d bytes", self.scope["client"], limit
            )
            await self._close(CloseReason.MESSAGE_TOO_BIG, "message too big")
            self.close_code = CloseReason.MESSAGE_TOO_BIG
            await self._await_close_reply()
            self.transport.close()
            return {"type": "websocket.disconnect", "code": int(CloseReason.MESSAGE_TOO_BIG)}
        self.parts.append(data)
        if not event.message_finished:
            return None
        parts, self.parts, self.size = self.parts, [], 0
        if isinstance(data, str):
            return {"type": "websocket.receive", "text": "".join(parts)}  # type: ignore[arg-type]
        return {"type": "websocket.receive", "bytes": b"".join(parts)}  # type: ignore[arg-type]

    # ASGI send

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.ws.state is not ConnectionState.OPEN or self.transport.closed:
                await trio.lowlevel.checkpoint()  # gone: ignored, as hypercorn does
                return
            text = message.get("text")
            if text is not None:
                data = frame(str(text))
            else:
                data = frame(bytes(message.get("bytes") or b""))  # type: ignore[call-overload]
            await self.transport.write(data)
        elif kind == SEND_MANY:
            if not self.accepted:
                raise RuntimeError(f"{SEND_MANY} before websocket.accept")
            if self.ws.state is not ConnectionState.OPEN or self.transport.closed:
                await trio.lowlevel.checkpoint()
                return
            await self.transport.write(_frames(message["messages"]))  # type: ignore[arg-type]
        elif kind == "websocket.close":
            if self.accepted:
                if self.ws.state is ConnectionState.OPEN:
                    code = int(message.get("code", 1000))  # type: ignore[call-overload]
                    await self._close(code, str(message.get("reason") or ""))
                else:
                    await trio.lowlevel.checkpoint()
            elif not self.refused:
                await self._refuse(403, [], b"", more=False)
        elif kind == "websocket.http.response.start":
            if self.accepted or self.refused:
                raise RuntimeError("websocket.http.response.start after the handshake")
            self._denial = (int(message["status"]), list(message.get("headers", ())))  # type: ignore[call-overload]
        elif kind == "websocket.http.response.body":
            status, headers = self._denial
            body = bytes(message.get("body", b""))  # type: ignore[call-overload]
            await self._refuse(status, headers, body, bool(message.get("more_body")))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a WebSocket")

    _denial: tuple[int, list[tuple[bytes, bytes]]]

    async def _accept(self, message: ASGIMessage) -> None:
        if self.accepted or self.refused:
            raise RuntimeError("websocket.accept after the handshake")
        assert self.key is not None
        accept = generate_accept_token(self.key)
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
            b"sec-websocket-accept: %s\r\n" % accept,
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            lines.append(b"sec-websocket-protocol: %s\r\n" % str(subprotocol).encode("latin-1"))
        for name, value in message.get("headers", ()):  # type: ignore[attr-defined]
            _check_header(name, value)
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        self.accepted = True
        self.last_heard = trio.current_time()
        await self.transport.write(b"".join(lines))
        interval = self.options.websocket_ping_interval
        if interval and self._nursery is not None:
            self._nursery.start_soon(self._heartbeat, interval)

    async def _refuse(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> None:
        """Answer the handshake with HTTP (close-delimited when the body is streamed)."""
        data = body
        if not self.refused:
            self.refused = True
            from .http import _date_header, _status_line

            lines = [_status_line(status)]
            for name, value in headers:
                _check_header(name, value)
                if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
                    lines.append(b"%s: %s\r\n" % (name, value))
            if not more:
                lines.append(b"content-length: %d\r\n" % len(body))
            lines += [b"connection: close\r\n", _date_header(), b"\r\n", body]
            data = b"".join(lines)
        await self.transport.write(data)
        if not more:
            self.transport.close()

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.state is ConnectionState.OPEN:
            data = self.ws.send(CloseConnection(code=code, reason=reason))
            await self.transport.write(data, CLOSE_TIMEOUT)

    async def _await_close_reply(self) -> None:
        """After our close frame: wait a little for the peer's, discarding messages."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            while self.ws.state is ConnectionState.LOCAL_CLOSING and not self.transport.closed:
                data = await self.transport.receive()
                if not data:
                    return
                self.ws.receive_data(data)
                for _ in self.ws.events():
                    pass

    async def _heartbeat(self, interval: float) -> None:
        payload = 0
        while self._open():
            await trio.sleep(interval)
            if not self._open():
                return
            payload += 1
            await self.transport.write(self.ws.send(Ping(payload=b"%d" % payload)))

    def _open(self) -> bool:
        return self.ws.state is ConnectionState.OPEN and not self.transport.closed


def _check_header(name: bytes, value: bytes) -> None:
    if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
        raise RuntimeError(f"header {name!r} contains a line break")

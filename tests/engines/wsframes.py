"""A WebSocket client for conformance tests, strict about what the server sends.

wsproto builds the opening handshake and the well-formed frames the client sends;
:func:`frame` builds any frame by hand, malformed ones included (reserved bits and
opcodes, oversized control frames, unmasked frames). What comes back is parsed here,
not by wsproto: a client-side parser that failed on a bad server frame would report
it as a close frame, and a test expecting the server to fail the connection would pass.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import TYPE_CHECKING

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

if TYPE_CHECKING:
    from .conftest import Running

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "Client",
    "Frame",
    "close_payload",
    "connect",
    "frame",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Seconds the server gets to close the TCP connection after its close frame.
EOF_TIMEOUT = 3.0


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """One frame as a client sends it (masked unless ``masked=False``), whatever it holds."""
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head.append(mask_bit | size)
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return bytes(head) + payload
    mask = os.urandom(4)
    return bytes(head) + mask + _xor(payload, mask)


def _xor(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@attrs.frozen
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None


class Client:
    """One WebSocket connection, after the handshake: frames out (well-formed ones from
    ``client.ws.send(event)``, any from :func:`frame`), frames in."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, buffer: bytes) -> None:
        self.stream = stream
        self.ws = ws
        self.buffer = bytearray(buffer)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # a reset: the server closed with our data unread
            return False
        self.buffer += data
        return bool(data)

    async def _exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not await self._fill():
                return None
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk

    async def frame(self) -> Frame | None:
        """The server's next frame, checked against RFC 6455 §5; None at EOF."""
        head = await self._exactly(2)
        if head is None:
            assert not self.buffer, f"EOF within a frame header: {bytes(self.buffer)!r}"
            return None
        fin, rsv, opcode = bool(head[0] & 0x80), head[0] >> 4 & 0x7, head[0] & 0xF
        assert rsv == 0, f"the server set reserved bits {rsv:#x}"
        assert opcode in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG), opcode
        assert not head[1] & 0x80, "a server frame must not be masked"
        size = head[1] & 0x7F
        if size == 126:
            extended = await self._exactly(2)
            assert extended is not None, "EOF within a frame header"
            size = struct.unpack("!H", extended)[0]
            assert size >= 126, "the length must be in its shortest form"
        elif size == 127:
            extended = await self._exactly(8)
            assert extended is not None, "EOF within a frame header"
            size = struct.unpack("!Q", extended)[0]
            assert 1 << 16 <= size < 1 << 63, "the length must be in its shortest form"
        if opcode >= CLOSE:
            assert fin, "a control frame is never fragmented"
            assert size <= 125, "a control frame's payload is at most 125 bytes"
        payload = await self._exactly(size)
        assert payload is not None, f"EOF within a frame's payload of {size} bytes"
        return Frame(fin, opcode, payload)

    async def next_frame(self, expected: str = "a frame") -> Frame:
        received = await self.frame()
        assert received is not None, f"the server closed the connection without {expected}"
        return received

    async def message(self) -> str | bytes:
        """The next data message, from its frames; any other frame fails the test."""
        first = await self.next_frame("a message")
        assert first.opcode in (TEXT, BINARY), first
        parts = [first.payload]
        last = first
        while not last.fin:
            last = await self.next_frame("the rest of a message")
            assert last.opcode == CONTINUATION, last
            parts.append(last.payload)
        data = b"".join(parts)
        return data.decode() if first.opcode == TEXT else data

    async def pong(self) -> bytes:
        received = await self.next_frame("a pong")
        assert received.opcode == PONG, received
        return received.payload

    async def expect_close(self, *codes: int | None) -> Frame:
        """The server's close frame, with one of ``codes``; then our answer, and its EOF.

        Nothing may come before the close frame, nor after it.
        """
        received = await self.next_frame("a close frame")
        assert received.opcode == CLOSE, received
        assert received.close_code in codes, (received.close_code, received.payload)
        assert len(received.payload) != 1
        # A valid reason: a close frame with invalid UTF-8 would be a protocol error.
        received.payload[2:].decode()
        await self.reply_close(received)
        await self.expect_eof()
        return received

    async def reply_close(self, received: Frame) -> None:
        # The server may have closed already: that was its right.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send_raw(frame(CLOSE, received.payload[:2]))

    async def expect_eof(self) -> None:
        with trio.fail_after(EOF_TIMEOUT):
            extra = await self.frame()
        assert extra is None, f"a frame after the close: {extra}"

    async def close_normally(self, code: int = 1000) -> None:
        """Our close first: the server answers with the same code, then closes TCP."""
        await self.send_raw(frame(CLOSE, close_payload(code)))
        received = await self.next_frame("a close frame")
        assert received.opcode == CLOSE, received
        assert received.close_code == code, received
        await self.expect_eof()


async def connect(running: Running, path: str = "/echo") -> Client:
    """The opening handshake, by wsproto's client; the caller closes ``client.stream``."""
    stream = await running.connect()
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{running.port}", target=path)))
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = await stream.receive_some(65536)
        assert data, f"EOF during the handshake: {bytes(buffer)!r}"
        buffer += data
    ws.receive_data(bytes(buffer[: end + 4]))
    events = list(ws.events())
    assert len(events) == 1, events
    assert isinstance(events[0], AcceptConnection), events
    return Client(stream, ws, bytes(buffer[end + 4 :]))

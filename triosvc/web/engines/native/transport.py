"""The byte stream under one connection: plain reads, and writes under a deadline.

No write may block forever. Every write runs under a deadline (the engine's
``write_timeout``, or a shorter one for close frames); a write that does not finish in
time (the peer takes nothing: a zero TCP window) *aborts* the connection, closing the
socket, since a half-written frame leaves the stream unusable anyway. A write cancelled
from outside leaves what it did not send queued (trio's ``socket.send`` sends what it
reports, or nothing): the next write sends that rest first, under its own deadline, so
the stream stays whole and a close frame can still follow a cancelled message. Data
is committed before the first checkpoint. Writes are never shielded.

The fast path: when no write is pending or in progress, :meth:`Transport.write` first
hands the bytes to the kernel with one non-blocking ``send()``; only what the kernel does
not take (its send buffer is full) goes the slow way: the write lock, the deadline scope,
and trio's ``send``, which waits for the socket. A write the kernel takes at once, nearly
every one, thus costs one syscall and one checkpoint, without a cancel scope or a lock
(which took 40% of the CPU of a WebSocket broadcast fan-out; benchmarks/README.md). The
checkpoint comes after the ``send()``, so a caller already cancelled still gets its bytes
out (committed before the first checkpoint, as above), then sees ``Cancelled``.

Once the connection is closed, reads return ``b""`` (end of stream) and writes return
False at once: the engine's users (the ASGI app) see a gone peer, never an exception
from the socket. Reads carry no deadline here: each caller knows which one applies.

:class:`TLSTransport` is the same over a :class:`trio.SSLStream`, with one difference:
TLS cannot say how much of a cancelled ``send_all`` went out (a record may be half
written), so a write cancelled from outside closes the connection too; and it has no
fast path (its records go out through the SSLStream, always under the lock and deadline).
"""

from __future__ import annotations

import os

import trio

__all__ = ["READ_SIZE", "TLSTransport", "Transport"]

#: Bytes asked of the socket per read: the most any connection buffers beyond its needs.
READ_SIZE = 64 * 1024


class Transport:
    """One accepted TCP connection."""

    __slots__ = ("_pending", "_write_lock", "closed", "stream", "write_timeout")

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self.stream = stream
        self.write_timeout = write_timeout
        self.closed = False
        # WebSocket writes come from several tasks (app, pongs, pings): one at a time.
        self._write_lock = trio.StrictFIFOLock()
        #: Bytes committed to go out, in order (one entry per waiting writer at most).
        self._pending: list[bytes] = []

    async def receive(self) -> bytes:
        """The next bytes from the peer; ``b""`` once it or we closed the connection."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            return await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
            return b""

    async def write(self, data: bytes, within: float | None = None) -> bool:
        """Send ``data`` within ``within`` seconds (default: the write timeout); False if gone.

        ``data`` is committed before the first checkpoint: if this call is cancelled,
        what did not go out stays queued, and the next write sends it first.
        """
        if self.closed:
            await trio.lowlevel.checkpoint()
            return False
        if not self._pending and not self._write_lock.locked():
            # Nothing queued and nobody writing: the bytes may go out in order right now.
            # The descriptor is asked for each time: -1 once the socket is closed, never
            # a number the kernel may since have given to another connection.
            fd = self.stream.socket.fileno()
            try:
                sent = os.write(fd, data) if fd >= 0 else 0
            except BlockingIOError:
                sent = 0
            except OSError:  # reset, broken pipe
                self.close()
                await trio.lowlevel.checkpoint()
                return False
            if sent == len(data):
                await trio.lowlevel.checkpoint()
                return True
            if sent:
                data = data[sent:]
        self._pending.append(data)
        async with self._write_lock:
            if not self._pending or self.closed:  # an earlier writer took it along
                return not self.closed
            chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            with trio.move_on_after(self.write_timeout if within is None else within) as scope:
                sent = 0
                try:
                    with memoryview(chunk) as view:
                        while sent < len(view):
                            sent += await self.stream.socket.send(view[sent:])
                except (OSError, trio.ClosedResourceError):  # reset, broken pipe, closed
                    self.close()
                    return False
                except trio.Cancelled:
                    if not scope.cancel_called:  # cancelled from outside: the rest waits
                        self._pending.insert(0, chunk[sent:])
                    raise
            if scope.cancelled_caught:
                self.close()
                return False
            return True

    def close(self) -> None:
        """Close the socket now; a task blocked reading or writing it wakes up."""
        if not self.closed:
            self.closed = True
            self.stream.socket.close()


class TLSTransport(Transport):
    """One accepted connection over TLS; ``stream`` is the TCP stream under ``tls``."""

    __slots__ = ("tls",)

    def __init__(self, tls: trio.SSLStream[trio.SocketStream], write_timeout: float) -> None:
        super().__init__(tls.transport_stream, write_timeout)
        self.tls = tls

    async def receive(self) -> bytes:
        if self.closed:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            # SSLObject.read gives bytes, which bytes() returns as they are (no copy).
            return bytes(await self.tls.receive_some(READ_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):  # TLS errors included
            self.close()
            return b""

    async def write(self, data: bytes, within: float | None = None) -> bool:
        """As :meth:`Transport.write`, but a write cancelled mid-send closes the connection."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return False
        self._pending.append(data)  # committed: a writer cancelled while queued loses nothing
        async with self._write_lock:
            if not self._pending or self.closed:
                return not self.closed
            chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            with trio.move_on_after(self.write_timeout if within is None else within) as scope:
                try:
                    await self.tls.send_all(chunk)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    self.close()
                    return False
                except trio.Cancelled:
                    # How much went out is unknown, and the SSLStream is broken for good.
                    self.close()
                    raise
            if scope.cancelled_caught:
                self.close()
                return False
            return True

"""The native engine's plain transport over a socketpair: the write fast path (one
non-blocking ``send()`` when nothing is pending) and the guarantees it must keep."""

from __future__ import annotations

import socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from triosvc.web.engines.native.transport import Transport

from .conftest import TIMEOUT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BIG = 16 << 20  # far more than a socketpair's buffers hold


@asynccontextmanager
async def _pair(write_timeout: float = 10) -> AsyncIterator[tuple[Transport, trio.SocketStream]]:
    """A server-side Transport and its peer's stream over loopback TCP, small buffers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.socket()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        theirs.connect(listener.getsockname())
        ours, _ = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    transport = Transport(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), write_timeout)
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    try:
        yield transport, peer
    finally:
        transport.close()
        peer.socket.close()


async def _read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(1 << 20)
        assert chunk, f"end of stream after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def _pattern(size: int, seed: int) -> bytes:
    """Bytes whose position shows: a lost or repeated piece changes what follows."""
    block = bytes((seed + i) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


async def test_a_write_the_kernel_takes_needs_no_lock_or_scope() -> None:
    async with _pair() as (transport, peer):
        with trio.fail_after(TIMEOUT):
            assert await transport.write(b"hello")
            assert not transport._write_lock.locked()
            assert not transport._pending
            assert await _read_exactly(peer, 5) == b"hello"


async def test_the_rest_of_a_partial_send_follows_in_order(nursery: trio.Nursery) -> None:
    async with _pair() as (transport, peer):
        first, second = _pattern(1 << 20, 1), _pattern(1000, 2)
        received: list[bytes] = []

        async def read() -> None:
            received.append(await _read_exactly(peer, len(first) + len(second)))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                assert await transport.write(first)  # the kernel takes part of it at once
                assert await transport.write(second)
        assert received == [first + second]


async def test_a_write_cancelled_mid_send_leaves_the_stream_whole(nursery: trio.Nursery) -> None:
    async with _pair() as (transport, peer):
        batch = _pattern(BIG, 3)
        with trio.fail_after(TIMEOUT):
            with trio.CancelScope() as scope:

                async def cancel_once_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(cancel_once_blocked)
                await transport.write(batch)  # blocks: the peer is not reading yet
            assert scope.cancelled_caught
            assert not transport.closed
            # What did not go out is still queued: it goes first, then the next write.
            assert transport._pending
            tail = b"close frame"
            received: list[bytes] = []

            async def read() -> None:
                received.append(await _read_exactly(peer, len(batch) + len(tail)))

            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                assert await transport.write(tail)
        assert received[0] == batch + tail


async def test_a_caller_cancelled_already_still_commits_its_bytes() -> None:
    async with _pair() as (transport, peer):
        with trio.fail_after(TIMEOUT):
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await transport.write(b"first")
            assert await transport.write(b"second")
            assert await _read_exactly(peer, 11) == b"firstsecond"


async def test_a_writer_cancelled_while_queued_keeps_its_bytes(nursery: trio.Nursery) -> None:
    async with _pair() as (transport, peer):
        first, second, third = _pattern(BIG, 4), b"queued", b"last"
        with trio.fail_after(TIMEOUT):
            outcome: list[bool] = []

            async def write_first() -> None:
                outcome.append(await transport.write(first))

            nursery.start_soon(write_first)
            await trio.testing.wait_all_tasks_blocked()  # first holds the lock, blocked
            with trio.CancelScope() as scope:

                async def cancel_once_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(cancel_once_blocked)
                await transport.write(second)  # waits for the lock: no fast path
            assert scope.cancelled_caught
            received: list[bytes] = []

            async def read() -> None:
                received.append(await _read_exactly(peer, len(first) + len(second) + len(third)))

            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                assert await transport.write(third)
            await trio.testing.wait_all_tasks_blocked()
        assert outcome == [True]
        assert received[0] == first + second + third


async def test_a_peer_that_never_reads_is_aborted_at_the_deadline() -> None:
    async with _pair(write_timeout=0.2) as (transport, _peer):
        with trio.fail_after(TIMEOUT):
            start = trio.current_time()
            assert await transport.write(_pattern(BIG, 5)) is False
            assert trio.current_time() - start < 5
            assert transport.closed
            assert await transport.write(b"more") is False
            assert await transport.receive() == b""


async def test_a_reset_peer_makes_writes_return_false() -> None:
    async with _pair() as (transport, peer):
        with trio.fail_after(TIMEOUT):
            assert await transport.write(b"x")
            # Unread data and no linger at close: the kernel resets the connection.
            peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.socket.close()
            results = [await transport.write(b"y" * 1000) for _ in range(3)]
            assert results[-1] is False
            assert transport.closed

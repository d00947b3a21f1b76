"""A minimal WebSocket hub as a bare ASGI app on hypercorn: the baseline.

Run by ``benchmarks/websocket.py`` as
``python benchmarks/servers/ws_baseline.py [send_buffer] [trio|asyncio]``: on hypercorn's trio
worker (``hypercorn.trio.serve``, the default) or its asyncio worker
(``hypercorn.asyncio.serve``, on the standard event loop); prints ``PORT <n>`` once it accepts
connections, then serves until killed.

It answers the same frames as ``ws_triosvc.py`` with the same bytes, and delivers the same
way, without a framework (``ws_hub.py``): each socket gets one bounded outbox (a trio memory
channel, or an ``asyncio.Queue``) of ``send_buffer`` messages drained by a sender task of its
own; a broadcast encodes its event once, then queues that one str for every subscriber
without waiting. Calls are handled inline by the socket's reader.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from _common import announce, argument, hypercorn_config, listening_socket
from ws_common import (
    HEARTBEAT_INTERVAL,
    MAX_MESSAGE_SIZE,
    PATH,
    READ_TIMEOUT,
    raise_nofile,
    send_buffer,
)
from ws_hub import POLICY_VIOLATION, Peer, handle, leave_all

if TYPE_CHECKING:
    from hypercorn.config import Config

SEND_BUFFER = send_buffer()


async def _refuse_other_paths(scope, receive, send) -> bool:  # ASGI, untyped
    """Take the connect message; refuse (and say so) a socket on another path than /ws."""
    if (await receive())["type"] != "websocket.connect":
        return True
    if scope["path"] != PATH:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return True
    await send({"type": "websocket.accept"})
    return False


async def trio_websocket(scope, receive, send) -> None:
    import trio

    if await _refuse_other_paths(scope, receive, send):
        return
    outbox, inbox = trio.open_memory_channel[str](SEND_BUFFER)

    def offer(text: str) -> bool:
        try:
            outbox.send_nowait(text)
        except trio.WouldBlock:
            return False
        except trio.ClosedResourceError:
            pass
        return True

    async def sender() -> None:
        async for text in inbox:
            await send({"type": "websocket.send", "text": text})

    async with trio.open_nursery() as nursery:
        peer = Peer(offer, nursery.cancel_scope.cancel)
        nursery.start_soon(sender)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break  # websocket.disconnect
                handle(peer, message.get("text"))
        finally:
            leave_all(peer)
            outbox.close()
            nursery.cancel_scope.cancel()
    if peer.slow:
        with trio.move_on_after(1):
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})


async def asyncio_websocket(scope, receive, send) -> None:
    if await _refuse_other_paths(scope, receive, send):
        return
    outbox: asyncio.Queue[str] = asyncio.Queue(SEND_BUFFER)

    def offer(text: str) -> bool:
        try:
            outbox.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def sender() -> None:
        while True:
            text = await outbox.get()
            await send({"type": "websocket.send", "text": text})

    reader = asyncio.current_task()
    assert reader is not None
    peer = Peer(offer, reader.cancel)
    sending = asyncio.create_task(sender())
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break  # websocket.disconnect
            handle(peer, message.get("text"))
    except asyncio.CancelledError:
        if not peer.slow:
            raise
        reader.uncancel()
    finally:
        leave_all(peer)
        sending.cancel()
    if peer.slow:
        await asyncio.wait_for(send({"type": "websocket.close", "code": POLICY_VIOLATION}), 1)


def make_app(websocket):  # the ASGI app, untyped: no framework
    async def app(scope, receive, send) -> None:
        if scope["type"] == "websocket":
            await websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": b"not found"})

    return app


def config() -> tuple[int, Config]:
    """A listening socket's port, and hypercorn's settings serving on it."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = hypercorn_config(sock)
    # As triosvc's engine sets them for a WebSocket endpoint with the default heartbeat.
    config.websocket_ping_interval = HEARTBEAT_INTERVAL
    config.read_timeout = READ_TIMEOUT
    config.websocket_max_message_size = MAX_MESSAGE_SIZE
    return port, config


async def serve_trio() -> None:
    import trio
    from hypercorn.trio import serve

    port, hypercorn_config = config()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, make_app(trio_websocket), hypercorn_config))
        announce(port)


async def serve_asyncio() -> None:
    from hypercorn.asyncio import serve

    port, hypercorn_config = config()
    announce(port)  # the socket listens already: connections wait in its backlog
    await serve(make_app(asyncio_websocket), hypercorn_config)


if __name__ == "__main__":
    raise_nofile()
    if argument(2, ("trio", "asyncio")) == "trio":
        import trio

        trio.run(serve_trio)
    else:
        asyncio.run(serve_asyncio())

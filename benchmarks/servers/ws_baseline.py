"""A minimal WebSocket hub as a bare ASGI app on ``hypercorn.trio.serve``: the baseline.

Run by ``benchmarks/websocket.py`` as ``python benchmarks/servers/ws_baseline.py [send_buffer]``;
prints ``PORT <n>`` once it accepts connections, then serves until killed.

It answers the same frames as ``ws_triosvc.py`` with the same bytes, and delivers the same
way, without a framework: each socket gets one bounded trio memory channel (``send_buffer``
messages) drained by a sender task of its own, and a broadcast encodes its event once, then
queues that one str for every subscriber without waiting (a socket whose outbox is full is
dropped and closed with 1008, as triosvc's hub does). Calls are handled inline by the
socket's reader: ``join(room)``, ``echo(value)``, ``fanout(room, count)``.
"""

from __future__ import annotations

import json
from functools import partial

import trio
from _common import announce, hypercorn_config, listening_socket
from hypercorn.trio import serve
from ws_common import (
    EVENT,
    HEARTBEAT_INTERVAL,
    MAX_MESSAGE_SIZE,
    PATH,
    READ_TIMEOUT,
    raise_nofile,
    send_buffer,
    tick,
)

SEND_BUFFER = send_buffer()
# Built once, as json.dumps(..., separators=(",", ":"), ensure_ascii=False) would build it on
# every call; triosvc's protocol module does the same.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
POLICY_VIOLATION = 1008


class Peer:
    """One connected socket: its outbox, its rooms, and the scope that ends it."""

    __slots__ = ("outbox", "rooms", "scope", "slow")

    def __init__(self, outbox: trio.MemorySendChannel[str], scope: trio.CancelScope) -> None:
        self.outbox = outbox
        self.scope = scope
        self.rooms: set[str] = set()
        self.slow = False


#: room -> its subscribers (a dict: delivery in subscription order, as triosvc's hub).
ROOMS: dict[str, dict[Peer, None]] = {}


def leave_all(peer: Peer) -> None:
    for room in peer.rooms:
        subscribers = ROOMS.get(room)
        if subscribers is not None:
            subscribers.pop(peer, None)
            if not subscribers:
                del ROOMS[room]
    peer.rooms.clear()


def queue(peer: Peer, text: str) -> None:
    """Queue one message without waiting; a full outbox drops the socket (slow consumer)."""
    try:
        peer.outbox.send_nowait(text)
    except trio.WouldBlock:
        peer.slow = True
        leave_all(peer)
        peer.scope.cancel()
    except trio.ClosedResourceError:
        pass


def broadcast(room: str, event: str, data: object) -> None:
    subscribers = ROOMS.get(room)
    if not subscribers:
        return
    text = _ENCODE({"type": "event", "event": event, "data": data})  # once, for everyone
    for peer in list(subscribers):
        queue(peer, text)


def result(correlation_id: object, data: object) -> str:
    return _ENCODE(
        {"type": "result", "success": True, "data": data, "correlation_id": correlation_id}
    )


def error(correlation_id: object, exc_type: str, value: str) -> str:
    error = {"exc_type": exc_type, "value": value, "exc_args": [value]}
    return _ENCODE(
        {"type": "result", "success": False, "error": error, "correlation_id": correlation_id}
    )


def handle(peer: Peer, text: str | None) -> None:
    """Answer one frame (a call) into the socket's outbox."""
    try:
        call = json.loads(text or "")
        method, data = call["method"], call.get("data") or {}
        correlation_id = call.get("correlation_id")
    except (ValueError, TypeError, KeyError):
        queue(peer, error(None, "MalformedRequest", "expected a JSON call"))
        return
    try:
        if method == "echo":
            answer = data["value"]
        elif method == "join":
            room = data["room"]
            ROOMS.setdefault(room, {})[peer] = None
            peer.rooms.add(room)
            answer = None
        elif method == "fanout":
            room, count = data["room"], data["count"]
            for seq in range(count):
                broadcast(room, EVENT, tick(seq, count))
            answer = count
        else:
            queue(peer, error(correlation_id, "MethodNotFound", f"no method {method!r}"))
            return
    except (KeyError, TypeError) as exc:
        queue(peer, error(correlation_id, "IncorrectSignature", repr(exc)))
        return
    queue(peer, result(correlation_id, answer))


async def sender(inbox: trio.MemoryReceiveChannel[str], send) -> None:
    async for text in inbox:
        await send({"type": "websocket.send", "text": text})


async def websocket(scope, receive, send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    if scope["path"] != PATH:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return
    await send({"type": "websocket.accept"})
    outbox, inbox = trio.open_memory_channel[str](SEND_BUFFER)
    async with trio.open_nursery() as nursery:
        peer = Peer(outbox, nursery.cancel_scope)
        nursery.start_soon(sender, inbox, send)
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


async def app(scope, receive, send) -> None:  # the ASGI app, untyped: no framework
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


async def main() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = hypercorn_config(sock)
    # As triosvc's engine sets them for a WebSocket endpoint with the default heartbeat.
    config.websocket_ping_interval = HEARTBEAT_INTERVAL
    config.read_timeout = READ_TIMEOUT  # type: ignore[assignment]
    config.websocket_max_message_size = MAX_MESSAGE_SIZE
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, config))
        announce(port)


if __name__ == "__main__":
    raise_nofile()
    trio.run(main)

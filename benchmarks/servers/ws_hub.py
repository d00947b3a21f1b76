"""The hand-written WebSocket hub of the servers without one of their own (the bare ASGI
hubs, quart-trio, Starlette): rooms, calls and broadcasts, independent of the event loop,
and one socket's life on trio (:func:`trio_socket`) and on asyncio (:func:`asyncio_socket`).

Each socket is a :class:`Peer` with a bounded outbox of ``send_buffer`` messages (the
server's first argument) drained by a sender task of its own; ``offer`` queues one message
without waiting and says whether it fitted, ``drop`` ends the socket (a full outbox: a slow
consumer, closed with 1008, as triosvc's hub does). A broadcast encodes its event once (with
a prebuilt ``json.JSONEncoder``, as triosvc does) and offers that one str to every
subscriber. Calls are answered by :func:`handle`, inline in the socket's reader:
``join(room)``, ``echo(value)``, ``fanout(room, count)``, with the same bytes as triosvc's
answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from ws_common import EVENT, send_buffer, tick

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SEND_BUFFER = send_buffer()

# Built once, as json.dumps(..., separators=(",", ":"), ensure_ascii=False) would build it on
# every call; triosvc's protocol module does the same.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
POLICY_VIOLATION = 1008


class Peer:
    """One connected socket: how to queue to it, how to end it, and its rooms."""

    __slots__ = ("drop", "offer", "rooms", "slow")

    def __init__(self, offer: Callable[[str], bool], drop: Callable[[], object]) -> None:
        self.offer = offer
        self.drop = drop
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
    if not peer.offer(text) and not peer.slow:
        peer.slow = True
        leave_all(peer)
        peer.drop()


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


class Disconnected(Exception):
    """What a socket's ``receive`` raises once the peer has gone (when the framework does not
    raise its own: see ``ended``)."""


async def trio_socket(
    receive: Callable[[], Awaitable[str | None]],
    send: Callable[[str], Awaitable[object]],
    close: Callable[[], Awaitable[object]],
    ended: tuple[type[Exception], ...] = (),
) -> None:
    """Serve one accepted socket on trio until it goes: its outbox a trio memory channel.

    ``receive`` returns the next message's text (and raises :class:`Disconnected`, or one
    of ``ended``, once the peer has gone), ``send`` sends one text, ``close`` closes the
    socket with 1008 (a slow consumer; tried for a second).
    """
    import trio

    gone: tuple[type[Exception], ...] = (Disconnected, *ended)
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
            await send(text)

    async with trio.open_nursery() as nursery:
        peer = Peer(offer, nursery.cancel_scope.cancel)
        nursery.start_soon(sender)
        try:
            while True:
                handle(peer, await receive())
        except gone:
            pass
        finally:
            leave_all(peer)
            outbox.close()
            nursery.cancel_scope.cancel()
    if peer.slow:
        with trio.move_on_after(1):
            await close()


async def asyncio_socket(
    receive: Callable[[], Awaitable[str | None]],
    send: Callable[[str], Awaitable[object]],
    close: Callable[[], Awaitable[object]],
    ended: tuple[type[Exception], ...] = (),
) -> None:
    """:func:`trio_socket` on asyncio: the outbox an ``asyncio.Queue``, the sender a task,
    a slow consumer dropped by cancelling the reader (this task)."""
    gone: tuple[type[Exception], ...] = (Disconnected, *ended)
    outbox: asyncio.Queue[str] = asyncio.Queue(SEND_BUFFER)

    def offer(text: str) -> bool:
        try:
            outbox.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def sender() -> None:
        while True:
            await send(await outbox.get())

    reader = asyncio.current_task()
    assert reader is not None
    peer = Peer(offer, reader.cancel)
    sending = asyncio.create_task(sender())
    try:
        while True:
            handle(peer, await receive())
    except gone:
        pass
    except asyncio.CancelledError:
        if not peer.slow:
            raise
        reader.uncancel()
    finally:
        leave_all(peer)
        sending.cancel()
    if peer.slow:
        await asyncio.wait_for(close(), 1)

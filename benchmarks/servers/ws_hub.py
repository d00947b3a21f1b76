"""The hand-written WebSocket hub of the servers without one of their own (the bare ASGI
hubs, quart-trio, Starlette): rooms, calls and broadcasts, independent of the event loop.

Each socket is a :class:`Peer` with a bounded outbox drained by a sender task of its own;
``offer`` queues one message without waiting and says whether it fitted, ``drop`` ends the
socket (a full outbox: a slow consumer, closed with 1008, as triosvc's hub does). A
broadcast encodes its event once (with a prebuilt ``json.JSONEncoder``, as triosvc does) and
offers that one str to every subscriber. Calls are answered by :func:`handle`, inline in the
socket's reader: ``join(room)``, ``echo(value)``, ``fanout(room, count)``, with the same
bytes as triosvc's answers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ws_common import EVENT, tick

if TYPE_CHECKING:
    from collections.abc import Callable

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

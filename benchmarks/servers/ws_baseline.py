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

from typing import TYPE_CHECKING, Any

from _common import argument, lifespan, serve_hypercorn
from ws_common import HYPERCORN_SETTINGS, PATH, raise_nofile
from ws_hub import POLICY_VIOLATION, Disconnected, asyncio_socket, trio_socket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    SocketIO = tuple[
        Callable[[], Awaitable[str | None]],
        Callable[[str], Awaitable[None]],
        Callable[[], Awaitable[None]],
    ]


async def _refuse_other_paths(scope, receive, send) -> bool:  # ASGI, untyped
    """Take the connect message; refuse (and say so) a socket on another path than /ws."""
    if (await receive())["type"] != "websocket.connect":
        return True
    if scope["path"] != PATH:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return True
    await send({"type": "websocket.accept"})
    return False


def _text_socket(receive: Any, send: Any) -> SocketIO:  # ASGI's receive and send
    """An accepted socket's receive, send and close, as ``ws_hub``'s socket loops take them."""

    async def receive_text() -> str | None:
        message = await receive()
        if message["type"] != "websocket.receive":
            raise Disconnected  # websocket.disconnect
        text: str | None = message.get("text")
        return text

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def close() -> None:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})

    return receive_text, send_text, close


def make_app(serve_socket: Callable[..., Awaitable[None]]) -> Any:
    """The ASGI app, each socket served by ``serve_socket`` (``trio_socket`` or
    ``asyncio_socket``); untyped, as a bare app without a framework."""

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "websocket":
            if not await _refuse_other_paths(scope, receive, send):
                await serve_socket(*_text_socket(receive, send))
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": b"not found"})

    return app


if __name__ == "__main__":
    raise_nofile()
    worker = argument(2, ("trio", "asyncio"))
    serve_socket = trio_socket if worker == "trio" else asyncio_socket
    serve_hypercorn(make_app(serve_socket), worker, HYPERCORN_SETTINGS)

"""The hypercorn engine: hypercorn's trio worker, embedded with ``hypercorn.trio.serve``."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from ..asgi import ASGIApp, Receive, Scope, Send
    from . import EngineOptions

__all__ = ["serve"]

#: hypercorn logs its errors here, and an INFO line per listener we leave quiet by default.
LOGGER = logging.getLogger("triosvc.engine.hypercorn")


def _guard_sends_during_close() -> None:
    """Keep one connection's send race from stopping the whole server (hypercorn 0.18).

    hypercorn's ``TCPServer._close`` calls ``send_eof`` outside the connection's send
    lock; trio's ``send_eof`` holds the stream across a checkpoint, so a WebSocket ping
    sent at that moment fails with ``trio.BusyResourceError``, which hypercorn does not
    catch: it escapes the connection's task and ends ``serve`` (a client sending one bad
    frame with heartbeats on could stop the service). The send is on a connection that
    is closing anyway: treat it as hypercorn treats a broken one. Only this exception is
    caught, so hypercorn's behaviour is otherwise untouched; the trio-native engine does
    not need this.
    """
    original = TCPServer.protocol_send
    if getattr(original, "_triosvc_guarded", False):
        return

    async def protocol_send(self: TCPServer, event: Event) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    protocol_send._triosvc_guarded = True  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


_guard_sends_during_close()


async def serve(
    app: ASGIApp,
    sock: socket.socket,
    options: EngineOptions,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[None],
) -> None:
    config = HypercornConfig()
    # hypercorn adopts the file descriptor; detaching keeps two socket objects from
    # both closing it (the second close could hit an unrelated, reused descriptor).
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = options.graceful_timeout
    config.read_timeout = options.read_timeout  # type: ignore[assignment]
    config.h11_max_incomplete_size = options.max_header_size
    config.keep_alive_max_requests = sys.maxsize  # SPEC: at least 10,000 per connection
    config.include_server_header = False
    # hypercorn pings but never checks pongs: the read timeout (twice the interval at
    # least) drops a peer that answers nothing, since a pong is data read.
    config.websocket_ping_interval = options.websocket_ping_interval
    config.websocket_max_message_size = options.websocket_max_message_size
    if options.certfile is not None and options.keyfile is not None:
        # With both set, hypercorn serves the bound socket over TLS (ALPN h2, http/1.1);
        # its handshake deadline, 60 s by default, follows our silence deadline instead.
        config.certfile = options.certfile
        config.keyfile = options.keyfile
        config.ssl_handshake_timeout = options.read_timeout
    config.accesslog = None
    config.errorlog = LOGGER
    await hypercorn_serve(
        _refuse_ambiguous_framing(app),  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown_trigger,  # type: ignore[arg-type]
        task_status=task_status,  # type: ignore[arg-type]
    )


#: The answer to a request whose body length is ambiguous (SPEC §4.2 error body).
_AMBIGUOUS_BODY = (
    b'{"error": "BadRequest", "message": "a request may not carry both Content-Length '
    b'and Transfer-Encoding"}'
)


def _refuse_ambiguous_framing(app: ASGIApp) -> ASGIApp:
    """Refuse requests with both Content-Length and Transfer-Encoding: 400, then close.

    h11 lets Transfer-Encoding win, as RFC 9112 §6.3 permits, but a proxy in front may
    have framed the body by Content-Length instead: the classic request smuggling. SPEC
    §8 asks for a 400 and the connection closed (RFC 9112 §6.1 allows exactly that).
    Two different Content-Lengths h11 already refuses the same way.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope["headers"]}  # type: ignore[attr-defined]
            if b"content-length" in names and b"transfer-encoding" in names:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(_AMBIGUOUS_BODY)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _AMBIGUOUS_BODY})
                return
        await app(scope, receive, send)

    return guarded

"""triosvc's own engine: HTTP/1.1 and WebSocket on trio, httptools and wsproto.

``serve`` accepts on the given socket with :func:`trio.serve_listeners`; each
connection is one task in a nursery the engine owns (:mod:`.http` serves its
requests in that task, :mod:`.websocket` takes over after an upgrade).

Shutdown, once ``shutdown_trigger()`` returns: the accept loop is cancelled and the
listener closed (new connections are refused); connections waiting idle for a next
request are closed after :data:`IDLE_GRACE` (a request already on its way is still
answered); every answer from then on carries ``Connection: close`` (the app itself
answers 503 while draining); connections still open after ``graceful_timeout`` are
cancelled. The ASGI ``lifespan`` protocol is not run: triosvc's app does nothing in
it (mounted apps get their lifespan from the runner).

Not yet: TLS, a request-line limit apart from the header limit, a body limit of its
own (the app enforces ``WEB_SERVER_MAX_BODY_SIZE``), permessage-deflate, HTTP/2.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from ....core.gauge import Gauge
from .http import LOGGER, HTTPConnection, ServerState
from .transport import Transport

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from ...asgi import ASGIApp
    from .. import EngineOptions

__all__ = ["IDLE_GRACE", "serve"]

#: Seconds idle keep-alive connections stay open once shutdown began.
IDLE_GRACE = 0.5


async def serve(
    app: ASGIApp,
    sock: socket.socket,
    options: EngineOptions,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[None],
) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    state = ServerState(app, options, _address(sock.getsockname()))
    open_connections = Gauge()
    handler = partial(_connection, state, open_connections)
    try:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                await accepting.start(
                    partial(trio.serve_listeners, handler, [listener], handler_nursery=connections)
                )
                task_status.started()
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            listener.socket.close()
            state.closing = True
            state.idle_deadline = trio.current_time() + IDLE_GRACE
            for scope in state.idle_scopes:
                scope.deadline = min(scope.deadline, state.idle_deadline)
            with trio.move_on_after(options.graceful_timeout):
                await open_connections.wait_zero()
            connections.cancel_scope.cancel()
    finally:
        listener.socket.close()  # also when cancelled from outside before the trigger


async def _connection(state: ServerState, count: Gauge, stream: trio.SocketStream) -> None:
    count.up()
    transport = Transport(stream, state.options.write_timeout)
    try:
        client = _address(stream.socket.getpeername())
    except OSError:  # already reset by the peer
        client = None
    try:
        await HTTPConnection(transport, state, client).run()
    except Exception:
        LOGGER.exception("connection from %s failed", client)
    finally:
        transport.close()
        count.down()


def _address(sockname: object) -> tuple[str, int] | None:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None

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

TLS, when ``options`` name a certificate and key: each accepted connection is wrapped
in a :class:`trio.SSLStream` (one context per server, ALPN ``http/1.1``) whose
handshake must complete within ``read_timeout`` (shorter once shutdown began, as for an
idle connection); a connection that fails it or stays silent is closed, logged at DEBUG
or INFO only. Writes then go through :class:`~.transport.TLSTransport`.

Not yet: a request-line limit apart from the header limit, a body limit of its own
(the app enforces ``WEB_SERVER_MAX_BODY_SIZE``), permessage-deflate, HTTP/2.
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import TYPE_CHECKING

import trio

from ....config import load_cert_chain
from ....core.gauge import Gauge
from .http import LOGGER, HTTPConnection, ServerState
from .transport import TLSTransport, Transport

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from ...asgi import ASGIApp, Receive, Scope, Send
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
    context = None
    if options.certfile is not None and options.keyfile is not None:
        context = _ssl_context(options.certfile, options.keyfile)
        app = _over_tls(app)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    state = ServerState(app, options, _address(sock.getsockname()))
    open_connections = Gauge()
    handler = partial(_connection, state, open_connections, context)
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


async def _connection(
    state: ServerState, count: Gauge, context: ssl.SSLContext | None, stream: trio.SocketStream
) -> None:
    count.up()
    transport: Transport
    if context is None:
        transport = Transport(stream, state.options.write_timeout)
    else:
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        transport = TLSTransport(tls, state.options.write_timeout)
    try:
        client = _address(stream.socket.getpeername())
    except OSError:  # already reset by the peer
        client = None
    try:
        if isinstance(transport, TLSTransport) and not await _handshake(
            transport.tls, state, client
        ):
            return
        await HTTPConnection(transport, state, client).run()
    except Exception:
        LOGGER.exception("connection from %s failed", client)
    finally:
        transport.close()
        count.down()


async def _handshake(
    tls: trio.SSLStream[trio.SocketStream], state: ServerState, client: tuple[str, int] | None
) -> bool:
    """Whether the TLS handshake completed in time; the caller closes the socket if not."""
    # Until it completes the connection is as good as idle: shutdown shortens the wait.
    deadline = min(trio.current_time() + state.options.read_timeout, state.idle_deadline)
    with trio.CancelScope(deadline=deadline) as scope:
        state.idle_scopes.add(scope)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # Scanners, plain HTTP sent to the TLS port, clients that distrust the
            # certificate: routine on a public port, so no traceback and no warning.
            LOGGER.debug("TLS handshake with %s failed: %s", client, exc.__cause__ or exc)
            return False
        finally:
            state.idle_scopes.discard(scope)
    if scope.cancelled_caught:
        LOGGER.info("dropping %s: no TLS handshake in time", client)
        return False
    return True


def _ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The server's one TLS context (the config checked both files already)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_cert_chain(context, certfile, keyfile)
    context.set_alpn_protocols(["http/1.1"])  # no HTTP/2 here: a client must not pick h2
    return context


def _over_tls(app: ASGIApp) -> ASGIApp:
    """``app`` with the ``https``/``wss`` scheme in its scopes (the plain path stays as is)."""

    async def secure(scope: Scope, receive: Receive, send: Send) -> None:
        scope["scheme"] = "https" if scope["type"] == "http" else "wss"
        await app(scope, receive, send)

    return secure


def _address(sockname: object) -> tuple[str, int] | None:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None

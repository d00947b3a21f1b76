"""The seam between triosvc's ASGI app and the server that speaks HTTP for it.

An engine is an async function ``serve(app, sock, options, *, shutdown_trigger,
task_status)``: it serves ``app`` on the already listening ``sock``, calls
``task_status.started()`` once it accepts connections, and once
``shutdown_trigger()`` returns it closes the listener, lets in-flight requests finish
within ``options.graceful_timeout``, and returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    import trio

    from ..asgi import ASGIApp

__all__ = ["ENGINES", "Engine", "EngineOptions", "get_engine"]


@attrs.frozen
class EngineOptions:
    """What the services ask of any engine."""

    #: Seconds in-flight requests get once the shutdown trigger fired.
    graceful_timeout: float
    #: Seconds a connection may stay silent while the server waits for it.
    read_timeout: float
    #: Bytes of request line and headers accepted (beyond: 431, or the connection closed).
    max_header_size: int
    #: Seconds between the server's WebSocket pings (None: no pings).
    websocket_ping_interval: float | None = None
    #: Bytes of one incoming WebSocket message; a larger one closes the socket with 1009.
    websocket_max_message_size: int = 1024 * 1024
    #: Seconds an idle keep-alive connection is kept (the triosvc engine).
    keep_alive_timeout: float = 5.0
    #: Seconds one write to a peer may take before the connection is aborted (the
    #: triosvc engine).
    write_timeout: float = 10.0
    #: PEM certificate (chain) and private key: with both, the engine speaks only TLS,
    #: and a TLS handshake must complete within ``read_timeout``.
    certfile: str | None = None
    keyfile: str | None = None


class Engine(Protocol):
    async def __call__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        options: EngineOptions,
        *,
        shutdown_trigger: Callable[[], Awaitable[object]],
        task_status: trio.TaskStatus[None],
    ) -> None: ...


def _hypercorn() -> Engine:
    from .hypercorn import serve

    return serve


def _triosvc() -> Engine:
    from .native import serve

    return serve


#: Engine names (WEB_SERVER_ENGINE) and how to load them: imported only when used.
ENGINES: dict[str, Callable[[], Engine]] = {"hypercorn": _hypercorn, "triosvc": _triosvc}


def get_engine(name: str) -> Engine:
    return ENGINES[name]()

"""What the servers share: the listening socket, hypercorn's settings and how to serve on it,
the ASGI lifespan of the bare apps, the "ready" line the benchmark runner waits for, and
the three endpoints' bodies.

Imports nothing outside the standard library at the top: the nameko servers import this
module in an interpreter of their own, without hypercorn (see benchmarks/README.md).
"""

from __future__ import annotations

import socket
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from hypercorn.config import Config


def user(user_id: int) -> dict[str, object]:
    """What ``GET /users/<user_id>`` answers, as JSON."""
    return {"id": user_id, "name": f"user-{user_id}", "active": True}


def received(size: int) -> dict[str, int]:
    """What ``POST /echo`` answers, as JSON: the size of the body it read."""
    return {"received": size}


HELLO = "hello"
#: The route of the POST benchmark, and the size of the body wrk sends it.
POST_PATH = "/echo"
POST_SIZE = 64 * 1024
BACKLOG = 1024  # as triosvc.web.server.BACKLOG


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free port of ``host``, bound the way triosvc binds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def hypercorn_config(sock: socket.socket) -> Config:
    """hypercorn's settings as triosvc's engine sets them (triosvc/web/engines/hypercorn.py).

    Those that change what a keep-alive load costs: no access log, no Server header, and no
    cap on requests per connection (hypercorn's default closes a connection after 1000).
    """
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1.0
    config.read_timeout = 30  # type: ignore[assignment]
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_max_requests = sys.maxsize
    config.include_server_header = False
    config.accesslog = None
    return config


def serve_hypercorn(app: Any, worker: str = "trio", settings: Mapping[str, object] = {}) -> None:
    """Serve the ASGI ``app`` on a free port of 127.0.0.1 until killed, on hypercorn's trio
    worker (``hypercorn.trio.serve``) or its asyncio worker (``worker="asyncio"``,
    ``hypercorn.asyncio.serve``, on the standard event loop), with ``hypercorn_config``'s
    settings and ``settings`` on top; ``announce`` the port once it accepts connections."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = hypercorn_config(sock)
    for name, value in settings.items():
        setattr(config, name, value)
    if worker == "trio":
        import trio
        from hypercorn.trio import serve

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve, app, config))
                announce(port)

        trio.run(main)
    else:
        import asyncio

        from hypercorn.asyncio import serve as serve_asyncio

        # The socket listens already: connections wait in its backlog until the worker accepts.
        announce(port)
        asyncio.run(serve_asyncio(app, config))


async def lifespan(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """A bare app's side of the ASGI lifespan protocol: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def argument(index: int, choices: tuple[str, ...]) -> str:
    """``sys.argv[index]``, one of ``choices`` (the first one when it is not given)."""
    value = sys.argv[index] if len(sys.argv) > index else choices[0]
    if value not in choices:
        raise SystemExit(f"argument {index}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def announce(port: int) -> None:
    """Tell the runner where this server listens: it reads this one line from stdout."""
    print(f"PORT {port}", flush=True)

"""The three endpoints as a Starlette app on uvicorn.

Run by the benchmark runner as ``python benchmarks/servers/starlette_app.py``; prints
``PORT <n>`` once it accepts connections, then serves until killed. Needs ``uvicorn`` and
``starlette`` (``pip install -r benchmarks/requirements.txt``). uvicorn runs as it is
usually deployed (``uvicorn[standard]``): its "auto" choices take uvloop and httptools
when they are installed; one process, no access log, no Server header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn
from _common import HELLO, POST_PATH, announce, listening_socket, received, user
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

if TYPE_CHECKING:
    import socket

    from starlette.requests import Request


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(HELLO)


async def get_user(request: Request) -> JSONResponse:
    return JSONResponse(user(request.path_params["user_id"]))


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(received(len(await request.body())))


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/users/{user_id:int}", get_user),
        Route(POST_PATH, echo, methods=["POST"]),
    ]
)


class _Server(uvicorn.Server):
    """Says ``PORT <n>`` once uvicorn listens."""

    port = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        announce(self.port)


def serve(asgi_app: object, **options: object) -> None:
    """Serve ``asgi_app`` with uvicorn on a free port of 127.0.0.1 until killed."""
    sock = listening_socket()
    config = uvicorn.Config(
        asgi_app,  # type: ignore[arg-type]
        access_log=False,
        server_header=False,
        log_level="warning",
        lifespan="off",
        **options,  # type: ignore[arg-type]
    )
    server = _Server(config)
    server.port = sock.getsockname()[1]
    server.run(sockets=[sock])


if __name__ == "__main__":
    serve(app)

"""The three endpoints as a bare ASGI app on hypercorn: the baseline.

Run by the benchmark runner as ``python benchmarks/servers/bare_hypercorn.py [trio|asyncio]``
(hypercorn's trio worker, ``hypercorn.trio.serve``, by default; or its asyncio worker,
``hypercorn.asyncio.serve``, on the standard event loop); prints ``PORT <n>`` once it accepts
connections, then serves until killed. The app itself does not depend on the event loop.
"""

from __future__ import annotations

import json
from functools import partial

from _common import (
    HELLO,
    POST_PATH,
    announce,
    argument,
    hypercorn_config,
    listening_socket,
    received,
    user,
)

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]
_HELLO = HELLO.encode()


async def app(scope, receive, send) -> None:  # the ASGI app, untyped: no framework
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    status, headers, body = 404, _TEXT, b"not found"
    if path == POST_PATH and method == "POST":
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        status, headers, body = 200, _JSON, json.dumps(received(size)).encode()
    elif method != "GET":
        status, body = 405, b"method not allowed"
    elif path == "/hello":
        status, body = 200, _HELLO
    elif path.startswith("/users/") and path[7:].isdigit():
        status, headers, body = 200, _JSON, json.dumps(user(int(path[7:]))).encode()
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_trio() -> None:
    import trio
    from hypercorn.trio import serve

    sock = listening_socket()
    port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, hypercorn_config(sock)))
        announce(port)


async def serve_asyncio() -> None:
    from hypercorn.asyncio import serve

    sock = listening_socket()
    port = sock.getsockname()[1]
    config = hypercorn_config(sock)
    # The socket listens already: connections wait in its backlog until the worker accepts.
    announce(port)
    await serve(app, config)  # type: ignore[arg-type]


if __name__ == "__main__":
    if argument(1, ("trio", "asyncio")) == "trio":
        import trio

        trio.run(serve_trio)
    else:
        import asyncio

        asyncio.run(serve_asyncio())

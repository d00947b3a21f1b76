"""The two endpoints as a bare ASGI app on ``hypercorn.trio.serve``: the baseline.

Run by the benchmark runner as ``python benchmarks/servers/bare_hypercorn.py``; prints
``PORT <n>`` once it accepts connections, then serves until killed.
"""

from __future__ import annotations

import json
from functools import partial

import trio
from _common import HELLO, announce, hypercorn_config, listening_socket, user
from hypercorn.trio import serve

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
    path = scope["path"]
    status, headers, body = 404, _TEXT, b"not found"
    if scope["method"] != "GET":
        status, body = 405, b"method not allowed"
    elif path == "/hello":
        status, body = 200, _HELLO
    elif path.startswith("/users/") and path[7:].isdigit():
        status, headers, body = 200, _JSON, json.dumps(user(int(path[7:]))).encode()
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def main() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, hypercorn_config(sock)))
        announce(port)


if __name__ == "__main__":
    trio.run(main)

"""The three endpoints as a bare ASGI app on hypercorn: the baseline.

Run by the benchmark runner as ``python benchmarks/servers/bare_hypercorn.py [trio|asyncio]``
(hypercorn's trio worker, ``hypercorn.trio.serve``, by default; or its asyncio worker,
``hypercorn.asyncio.serve``, on the standard event loop); prints ``PORT <n>`` once it accepts
connections, then serves until killed. The app itself does not depend on the event loop.
"""

from __future__ import annotations

import json

from _common import HELLO, POST_PATH, argument, lifespan, received, serve_hypercorn, user

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]
_HELLO = HELLO.encode()


async def app(scope, receive, send) -> None:  # the ASGI app, untyped: no framework
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
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


if __name__ == "__main__":
    serve_hypercorn(app, argument(1, ("trio", "asyncio")))

"""The ASGI application that serves every HTTP entrypoint of a runner.

Any ASGI server can run it; triosvc's own :class:`~triosvc.web.server.WebServer`
runs it on the configured engine. Per request: route, read the body within the
limit and the deadline, build the werkzeug Request, let the entrypoint answer, add
CORS headers, send.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import aclosing
from typing import TYPE_CHECKING

import trio
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from ..core.gauge import Gauge
from ..exceptions import PayloadTooLarge, RequestTimeout
from .responses import error_response, json_error, redirect_response

if TYPE_CHECKING:
    from ..config import Settings
    from .handlers import HttpEntrypoint
    from .mounting import MountTable
    from .routing import Router

__all__ = ["ASGIApp", "Scope", "ServicesApp", "build_environ", "route_path"]

LOGGER = logging.getLogger("triosvc.web")

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLOSE = ("Connection", "close")


class ServicesApp:
    """The runner's HTTP side as one ASGI app."""

    def __init__(self, router: Router, settings: Settings) -> None:
        self.router = router
        self.max_body_size = settings.max_body_size
        self.debug = settings.debug
        self.context_prefix = settings.context_header_prefix.lower().encode("latin-1")
        #: Set when the runner stops: requests still arriving get a 503.
        self.draining = False
        #: HTTP requests being answered: at zero, every answer has been written.
        self.in_flight = Gauge()
        self._websocket: ASGIApp | None = None
        self.websocket_path = settings.websocket_path
        #: Other ASGI apps under URL prefixes (``triosvc.web.mount``), once one is declared.
        self.mounts: MountTable | None = None

    @property
    def websocket(self) -> ASGIApp | None:
        """The WebSocket layer's handler for ``WEBSOCKET_PATH``, once it attached one."""
        return self._websocket

    @websocket.setter
    def websocket(self, endpoint: ASGIApp | None) -> None:
        if self.mounts is not None:  # a mount declared first may not hide the endpoint
            self.mounts.check_path(self.websocket_path, "WEBSOCKET_PATH")
        self._websocket = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            self.in_flight.up()  # mounted apps' requests too: the drain waits for them
            try:
                await self._http(scope, receive, send)
            finally:
                self.in_flight.down()
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            path = route_path(scope)
            if self._websocket is not None and path == self.websocket_path:
                await self._websocket(scope, receive, send)
                return
            mounts = self.mounts
            if mounts is not None and (mounted := mounts.find(path)) is not None:
                await mounts.websocket(mounted, scope, path, receive, send)
                return
            await receive()  # websocket.connect
            LOGGER.info("WebSocket handshake on %s: 404, no WebSocket endpoint there", path)
            await refuse_websocket(
                scope, send, json_error(404, "NotFound", f"no WebSocket endpoint at {path}")
            )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrival = trio.current_time()
        method = str(scope["method"])
        if self.draining:
            response = json_error(
                503,
                "ServiceUnavailable",
                "the service is shutting down; try another instance",
                [_CLOSE, ("Retry-After", "1")],
            )
            await send_response(send, response, method)
            return
        path = route_path(scope)
        if self.mounts is not None:
            mounted = self.mounts.find(path)
            if mounted is not None:
                await self.mounts.http(mounted, scope, path, receive, send)
                return
        try:
            entrypoint, arguments = self.router.match(
                path, method, _latin1(scope.get("query_string", b""))
            )
        except RequestRedirect as redirect:
            response = redirect_response(redirect)
        except NotFound:
            LOGGER.info("%s %s: 404, no route matches", method, path)
            response = json_error(404, "NotFound", f"no route matches {path}")
        except MethodNotAllowed:
            allowed = self.router.allowed_methods(path)
            if method == "OPTIONS":
                response = self._options(path, _headers(scope), allowed)
            else:
                LOGGER.info("%s %s: 405, allowed: %s", method, path, ", ".join(allowed))
                response = json_error(
                    405,
                    "MethodNotAllowed",
                    f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                    [("Allow", ", ".join(allowed))],
                )
        else:
            headers = _RequestHeaders(scope, self.context_prefix)
            deadline = arrival + (entrypoint.timeout or 0)
            body, refusal = await self._read_body(headers, receive, deadline)
            if body is not None:
                request = LazyRequest(scope, body)
                try:
                    response = await entrypoint.handle(
                        request, arguments, deadline=deadline, data=headers.context_data
                    )
                finally:
                    request.close()  # uploaded files' temporary files, as Flask does
            elif refusal is not None:
                response = refusal
            else:  # the client went away mid-body
                return
            policy = entrypoint.cors_policy
            origin = headers.origin
            if origin is not None and policy is not None and policy.allows_origin(origin):
                for name, value in policy.response_headers(origin):
                    response.headers.add(name, value)
        await send_response(send, response, method, receive)

    def _options(self, path: str, headers: dict[str, str], allowed: list[str]) -> Response:
        """Answer OPTIONS: a CORS preflight, or 204 with Allow."""
        origin = headers.get("origin")
        requested = headers.get("access-control-request-method")
        if origin is not None and requested is not None:
            by_method: dict[str, HttpEntrypoint] = {}
            for candidate in allowed:
                try:
                    by_method[candidate] = self.router.match(path, candidate)[0]
                except (NotFound, MethodNotAllowed, RequestRedirect):
                    continue
            if any(e.cors_policy is not None for e in by_method.values()):
                return _preflight(origin, requested.upper(), headers, by_method)
        response = Response(None, status=204)
        response.headers.remove("Content-Type")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    async def _read_body(
        self, headers: _RequestHeaders, receive: Receive, deadline: float
    ) -> tuple[bytes | None, Response | None]:
        """The whole body, or the error answer (413, 408), or neither if the client left."""
        limit = self.max_body_size
        declared = headers.content_length
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None, self._body_error(self._too_large())
        if not headers.has_body:
            # HTTP/1 headers that announce no body: there is nothing to read (ASGI lets an
            # app leave the empty message unread), and no scheduler round trip to pay.
            return b"", None
        message: Message | None = None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_at(deadline):
            while True:
                if message is None:
                    message = await receive()
                if message["type"] == "http.disconnect":
                    return None, None
                chunk = bytes(message.get("body", b""))  # type: ignore[call-overload]
                size += len(chunk)
                if size > limit:
                    return None, self._body_error(self._too_large())
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks), None
                message = None
        return None, self._body_error(
            RequestTimeout("the request body did not arrive before the call's deadline")
        )

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body exceeds the limit of {self.max_body_size} bytes")

    def _body_error(self, exc: PayloadTooLarge | RequestTimeout) -> Response:
        response = error_response(exc, handler="request body")
        response.headers.add(*_CLOSE)  # the unread rest of the body makes the connection unusable
        return response

    def context_data(self, scope: Scope) -> dict[str, object]:
        """Worker context data from the request headers with the configured prefix."""
        return _RequestHeaders(scope, self.context_prefix).context_data


class _RequestHeaders:
    """What the app needs from a request's headers, read in one pass."""

    __slots__ = ("content_length", "context_data", "has_body", "origin")

    def __init__(self, scope: Scope, context_prefix: bytes) -> None:
        self.origin: str | None = None
        self.content_length: str | None = None
        self.context_data: dict[str, object] = {}
        chunked = False
        for name, value in scope["headers"]:  # type: ignore[attr-defined]
            if name == b"origin":
                self.origin = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
            elif name.startswith(context_prefix):
                key = name[len(context_prefix) :].decode("latin-1").replace("-", "_")
                self.context_data[key] = value.decode("latin-1")
        # HTTP/1 says in its headers whether a body follows; HTTP/2 may send one anyway.
        http1 = scope.get("http_version", "1.1") in ("1.1", "1.0")
        self.has_body = chunked or self.content_length not in (None, "0") or not http1


def _preflight(
    origin: str, requested: str, headers: dict[str, str], by_method: dict[str, HttpEntrypoint]
) -> Response:
    """Answer a CORS preflight for the endpoint that serves the ``requested`` method."""
    request_headers = [
        h.strip().lower()
        for h in headers.get("access-control-request-headers", "").split(",")
        if h.strip()
    ]
    target = by_method.get(requested)
    policy = target.cors_policy if target is not None else None
    if target is None or policy is None:
        reason: str | None = f"method {requested} is not allowed from {origin}"
    else:
        reason = policy.preflight_refusal(origin, requested, request_headers, target.methods)
    if reason is not None or target is None or policy is None:
        LOGGER.info("CORS preflight refused: %s", reason)
        return json_error(403, "Forbidden", f"CORS preflight refused: {reason}")
    response = Response(None, status=204)
    response.headers.remove("Content-Type")
    for name, value in policy.preflight_headers(origin, request_headers, target.methods):
        response.headers.add(name, value)
    return response


async def _lifespan(receive: Receive, send: Send) -> None:
    # The runner sets services up and stops them; the ASGI lifespan only acknowledges.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_response(
    send: Send, response: Response, method: str, receive: Receive | None = None
) -> None:
    """Send a werkzeug Response over ASGI; HEAD gets the headers (with GET's length) only.

    A streamed body stops (its generator closed) when the client goes away, which
    ``receive`` tells (the request body has been read by then): an endless stream must
    not outlive its reader, and servers need not fail ``send`` for a gone client.
    """
    response, headers = asgi_headers(response)
    status = response.status_code
    no_body = method == "HEAD" or status in (204, 304) or status < 200
    if no_body or not response.is_streamed:
        body = b"" if no_body else response.get_data()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    try:
        async with trio.open_nursery() as nursery:
            # Only the streaming is stopped by a disconnect: the server may report one as
            # soon as the last message is sent, which must not cancel that send.
            with trio.CancelScope() as streaming:
                if receive is not None:
                    nursery.start_soon(_cancel_on_disconnect, receive, streaming)
                async with aclosing(_stream(response)) as chunks:
                    async for chunk in chunks:
                        if chunk:
                            more = {"type": "http.response.body", "body": chunk, "more_body": True}
                            await send(more)
            if not streaming.cancelled_caught:
                await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()
    finally:
        response.close()


async def _cancel_on_disconnect(receive: Receive, streaming: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    streaming.cancel()


async def refuse_websocket(scope: Scope, send: Send, response: Response) -> None:
    """Answer a WebSocket handshake with an HTTP error response instead of accepting it.

    Servers without ASGI's ``websocket.http.response`` extension can only refuse with a
    bare 403 (a close before accepting).
    """
    extensions = scope.get("extensions") or {}
    if "websocket.http.response" not in extensions:  # type: ignore[operator]
        await send({"type": "websocket.close", "code": 1008})
        return
    response, headers = asgi_headers(response)
    start = {"type": "websocket.http.response.start", "status": response.status_code}
    await send({**start, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": response.get_data()})


def asgi_headers(response: Response) -> tuple[Response, list[tuple[bytes, bytes]]]:
    """The response's headers as ASGI wants them; a 500 instead if they cannot be sent."""
    try:
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.to_wsgi_list()
        ]
        if any(b"\n" in value or b"\r" in value for _, value in headers):
            raise ValueError("a header value contains a line break")
    except (UnicodeEncodeError, ValueError) as exc:
        LOGGER.error("cannot send the response's headers (%s): %s", response.headers, exc)
        response = json_error(500, "InternalServerError", "internal server error")
        headers = [(n.lower().encode(), v.encode()) for n, v in response.headers.to_wsgi_list()]
    return response, headers


async def _stream(response: Response) -> AsyncGenerator[bytes, None]:
    """The chunks of a streamed body; a plain iterator is advanced in a thread (it may block)."""
    source = response.response
    if hasattr(source, "__aiter__"):
        try:
            async for chunk in source:
                yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        finally:
            if hasattr(source, "aclose"):  # an async generator: its `finally` runs now
                await source.aclose()
        return
    iterator: Iterator[bytes] = iter(response.iter_encoded())
    done = object()
    while True:
        chunk = await trio.to_thread.run_sync(next, iterator, done)
        if chunk is done:
            return
        yield chunk


class LazyRequest(Request):
    """werkzeug's Request, built from the ASGI scope when the handler first uses it.

    Many handlers never look at the request beyond their path arguments; for them the
    WSGI environ and werkzeug's objects are never made. Everything werkzeug's Request
    offers is there: the first attribute not found on the object builds it (its
    properties read instance attributes such as ``environ`` and ``headers``). The
    environ does not point back at the request (``populate_request=False``): no
    reference cycle, so a request and its body go as soon as the answer is sent.
    """

    def __init__(self, scope: Scope, body: bytes) -> None:  # werkzeug's, on first use
        self._unbuilt: tuple[Scope, bytes] | None = (scope, body)

    def __getattr__(self, name: str) -> object:
        unbuilt = self.__dict__.get("_unbuilt")
        if unbuilt is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._unbuilt = None
        Request.__init__(self, build_environ(*unbuilt), populate_request=False)
        return getattr(self, name)


def build_environ(scope: Scope, body: bytes) -> dict[str, object]:
    """A WSGI environ for werkzeug's Request, over the fully read ``body``."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, object] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": _wsgi_str(str(scope.get("root_path", ""))),
        "PATH_INFO": _wsgi_str(route_path(scope)),
        "QUERY_STRING": _latin1(scope.get("query_string", b"")),
        "SERVER_NAME": str(server[0]),  # type: ignore[index]
        "SERVER_PORT": str(server[1]),  # type: ignore[index]
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if client:
        environ["REMOTE_ADDR"] = str(client[0])  # type: ignore[index]
        environ["REMOTE_PORT"] = str(client[1])  # type: ignore[index]
    for raw_name, raw_value in scope["headers"]:  # type: ignore[attr-defined]
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in ("content-length", "transfer-encoding"):
            # The body is read whole (and de-chunked): CONTENT_LENGTH is its real length.
            # A chunked Transfer-Encoding left in would make werkzeug read no body at all.
            continue
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if "_" in name:
            continue  # x_user would pass for x-user in the environ: drop it, as nginx does
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            value = f"{environ[key]}{separator}{value}"
        environ[key] = value
    return environ


def route_path(scope: Scope) -> str:
    """The path to route on: ``path`` without the ``root_path`` the app is mounted at.

    ASGI's ``path`` includes ``root_path`` (Starlette's and triosvc's mounts pass it so);
    a path that does not start with it (a proxy stripped the prefix, older servers) is
    taken as it is, as Starlette does.
    """
    path = str(scope["path"])
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest or rest[0] == "/":
            return rest or "/"
    return path


def _wsgi_str(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def _latin1(raw: object) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes) else ""


def _headers(scope: Scope) -> dict[str, str]:
    return {
        key.decode("latin-1").lower(): value.decode("latin-1")
        for key, value in scope["headers"]  # type: ignore[attr-defined]
    }

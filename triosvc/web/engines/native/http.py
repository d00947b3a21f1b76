"""HTTP/1.1 on one connection: one request at a time, in the connection's own task.

:meth:`HTTPConnection.run` reads until a request's headers are complete, calls the
ASGI app for it in the same task (no task per request), and loops while the
connection may be kept alive. The socket is read only on demand ("pull"): by that
loop while it waits for a request, and by the app's ``receive()`` while it wants body
or, the body taken, waits for the client to go away. So the body flows only as fast as
the app takes it (TCP pushes back on the client), and what a connection buffers is
bounded by one read (:data:`~.transport.READ_SIZE`) beyond what the app asked for.
Pipelined requests parsed meanwhile wait their turn: answers go out in order.

Timeouts: an idle keep-alive connection (nothing of a next request) is closed after
``keep_alive_timeout``; a request's headers must be complete within ``read_timeout``
of its first byte (slowloris); a body that stays silent for ``read_timeout`` while the
app waits for it drops the connection (the app sees ``http.disconnect``). Writes have
their own deadline (:mod:`.transport`).

The answer: Content-Length when the app gave one or sent the body in one message,
chunked when it streams without one (close-delimited for HTTP/1.0); HEAD and
204/304/1xx never carry a body, and HEAD keeps the app's Content-Length. An exception
from the app before its response started is a 500 with the §4.2 JSON body; after, the
connection is closed. A connection whose request body was not wholly read, or whose
answer came out short, is closed rather than reused.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import trio

from .parsing import Reader, Request

if TYPE_CHECKING:
    from ...asgi import ASGIApp, Message, Scope
    from .. import EngineOptions
    from .transport import Transport

__all__ = ["LOGGER", "HTTPConnection", "ServerState", "error_response"]

LOGGER = logging.getLogger("triosvc.engine.native")

_DISCONNECT: dict[str, object] = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})


class ServerState:
    """What every connection of one engine shares: the app, options, shutdown."""

    def __init__(
        self, app: ASGIApp, options: EngineOptions, server: tuple[str, int] | None
    ) -> None:
        self.app = app
        self.options = options
        self.server = server
        #: Set once the shutdown trigger fired: no connection is kept alive after.
        self.closing = False
        #: When idle keep-alive connections are closed, once closing.
        self.idle_deadline = float("inf")
        #: Cancel scopes of connections waiting idle for a next request.
        self.idle_scopes: set[trio.CancelScope] = set()


def error_response(status: int, error: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the SPEC §4.2 JSON body, closing the connection."""
    body = json.dumps({"error": error, "message": message}).encode()
    return b"".join(
        (
            _status_line(status),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            _date_header(),
            b"\r\n",
            body,
        )
    )


_ERROR_NAMES = {
    400: "BadRequest",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalServerError",
    501: "NotImplemented",
    505: "HTTPVersionNotSupported",
}


class HTTPConnection:
    """Serves the requests of one connection, one after the other."""

    def __init__(
        self, transport: Transport, state: ServerState, client: tuple[str, int] | None
    ) -> None:
        self.transport = transport
        self.state = state
        self.client = client
        self.reader = Reader(state.options.max_header_size)

    async def run(self) -> None:
        while True:
            request = await self._next_request()
            if request is None:
                return
            if request.upgrade == b"websocket" and self.reader.upgrade_data is not None:
                from .websocket import WebSocketSession

                scope = self._scope(request, "websocket")
                session = WebSocketSession(self.transport, self.state, request, scope)
                await session.run(self.reader.upgrade_data)
                return
            if not await self._serve(request):
                return

    async def _next_request(self) -> Request | None:
        """The next request whose headers are complete; None when the connection ends."""
        reader = self.reader
        transport = self.transport
        options = self.state.options
        head_deadline: float | None = None
        while not reader.ready:
            if reader.error is not None:
                status, message = reader.error
                await transport.write(error_response(status, _ERROR_NAMES[status], message))
                return None
            if reader.stopped or transport.closed:
                return None
            if reader.in_head:
                if head_deadline is None:
                    head_deadline = trio.current_time() + options.read_timeout
                with trio.move_on_at(head_deadline):
                    reader.feed(await transport.receive())
                    continue
                LOGGER.info(
                    "dropping %s: its request's headers did not arrive in time", self.client
                )
                return None
            # Idle: nothing of a next request yet.
            deadline = min(
                trio.current_time() + options.keep_alive_timeout, self.state.idle_deadline
            )
            with trio.CancelScope(deadline=deadline) as idle:
                self.state.idle_scopes.add(idle)
                try:
                    data = await transport.receive()
                finally:
                    self.state.idle_scopes.discard(idle)
            if idle.cancelled_caught:
                return None
            reader.feed(data)
        return reader.ready.popleft()

    async def _serve(self, request: Request) -> bool:
        """Answer ``request``; whether the connection may serve another."""
        cycle = _Cycle(self, request)
        try:
            await self.state.app(self._scope(request, "http"), cycle.receive, cycle.send)
        except Exception:
            LOGGER.exception("the app failed on %s %r", request.method, request.url)
            if cycle.started:
                self.transport.close()
                return False
            await self.transport.write(_INTERNAL_ERROR)
            return False
        if not cycle.started:
            error = self.reader.error
            if error is not None:  # its body was malformed
                await self.transport.write(
                    error_response(error[0], _ERROR_NAMES[error[0]], error[1])
                )
            elif not cycle.disconnected:
                LOGGER.error("the app sent no answer to %s %r", request.method, request.url)
                await self.transport.write(_INTERNAL_ERROR)
            return False
        if not cycle.complete:
            self.transport.close()  # the client cannot know the answer is short otherwise
            return False
        return cycle.keep_alive and request.complete and not self.transport.closed

    def _scope(self, request: Request, kind: str) -> Scope:
        raw_path, _, query = request.url.partition(b"?")
        if not raw_path.startswith(b"/"):
            if raw_path == b"*":
                raw_path = b"*"
            else:  # absolute-form: scheme://host/path
                raw_path = b"/" + raw_path.partition(b"://")[2].partition(b"/")[2]
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        scope: Scope = {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.version,
            "scheme": "http" if kind == "http" else "ws",
            "path": path,
            "raw_path": raw_path,
            "query_string": query.partition(b"#")[0],
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.state.server,
        }
        if kind == "http":
            scope["method"] = request.method
        return scope


class _Cycle:
    """One request and its answer: the ``receive`` and ``send`` the app is given."""

    __slots__ = (
        "body_done",
        "chunked",
        "complete",
        "connection",
        "continued",
        "disconnected",
        "headers",
        "keep_alive",
        "length",
        "no_body",
        "request",
        "sent",
        "started",
        "status",
        "waiter",
        "wrote_head",
    )

    def __init__(self, connection: HTTPConnection, request: Request) -> None:
        self.connection = connection
        self.request = request
        self.body_done = False
        self.continued = False
        self.disconnected = False
        self.started = False
        self.wrote_head = False
        self.complete = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = request.keep_alive and not connection.state.closing
        self.chunked = False
        self.no_body = False
        self.length: int | None = None
        self.sent = 0
        #: The cancel scope of a ``receive()`` waiting for the client to go away.
        self.waiter: trio.CancelScope | None = None

    async def receive(self) -> Message:
        request = self.request
        connection = self.connection
        if self.body_done:
            await self._wait_disconnect()
            self.disconnected = True
            return _DISCONNECT
        transport = connection.transport
        reader = connection.reader
        if request.expect_continue and not self.continued and not self.started:
            self.continued = True
            if not request.complete and not request.body:
                await transport.write(_CONTINUE)
        while not request.body and not request.complete:
            if reader.stopped or transport.closed:
                self.disconnected = True
                return _DISCONNECT
            with trio.move_on_after(connection.state.options.read_timeout):
                reader.feed(await transport.receive())
                continue
            LOGGER.info("dropping %s: its request body stalled", connection.client)
            transport.close()
        body = request.body.popleft() if len(request.body) == 1 else b"".join(request.body)
        request.body.clear()
        more = not request.complete
        self.body_done = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def _wait_disconnect(self) -> None:
        """Return once the client went away, or the answer is complete."""
        connection = self.connection
        reader = connection.reader
        with trio.CancelScope() as self.waiter:
            if self.complete:
                return
            # Read on only while nothing of a next request is buffered: bounded.
            while not (reader.ready or reader.current or reader.stopped):
                reader.feed(await connection.transport.receive())
            if not (reader.eof or connection.transport.closed):
                await trio.sleep_forever()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True
            self.status = int(message["status"])  # type: ignore[call-overload]
            self.headers = list(message.get("headers", ()))  # type: ignore[call-overload]
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("the response is already complete")
        body = bytes(message.get("body", b""))  # type: ignore[call-overload]
        more = bool(message.get("more_body", False))
        if self.no_body:
            body = b""
        parts = [] if self.wrote_head else [self._head(body, more)]
        if body and not self.no_body:
            self.sent += len(body)
            if self.length is not None and self.sent > self.length:
                raise RuntimeError("the app sent more body than its Content-Length")
            parts.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)
        if not more:
            self.complete = True
            if self.chunked:
                parts.append(b"0\r\n\r\n")
            if self.length is not None and self.sent < self.length and not self.no_body:
                self.keep_alive = False
            if self.waiter is not None:
                self.waiter.cancel()
        if parts:
            await self.connection.transport.write(b"".join(parts))

    def _head(self, body: bytes, more: bool) -> bytes:
        self.wrote_head = True
        request = self.request
        status = self.status
        self.no_body = request.method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
        lines = [_status_line(status)]
        has_date = False
        for name, value in self.headers:
            lname = name.lower()
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise RuntimeError(f"header {name!r} contains a line break")
            if lname == b"content-length":
                self.length = int(value)
            elif lname == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            elif lname == b"transfer-encoding":
                continue  # the engine frames the body
            elif lname == b"date":
                has_date = True
            lines.append(b"%s: %s\r\n" % (name, value))
        if self.length is None and not self.no_body:
            if not more:
                self.length = len(body)
                lines.append(b"content-length: %d\r\n" % len(body))
            elif request.version == "1.1":
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0: the close ends the body
        if not request.complete:
            self.keep_alive = False  # the unread rest of the body
        if self.connection.state.closing:
            self.keep_alive = False
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        elif request.version == "1.0":
            lines.append(b"connection: keep-alive\r\n")
        if not has_date:
            lines.append(_date_header())
        lines.append(b"\r\n")
        return b"".join(lines)


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, f"date: {formatdate(now, usegmt=True)}\r\n".encode("ascii"))
    return _date_cache[1]


_INTERNAL_ERROR = error_response(500, "InternalServerError", "internal server error")

"""Clients that talk to a runner's ASGI app in memory: no socket, so ``autojump_clock`` works.

- HTTP: an ``httpx.AsyncClient`` on ``httpx.ASGITransport(app=...)`` (the pytest plugin's
  ``asgi_session`` fixture);
- WebSocket: :func:`open_asgi_websocket_client`, the public
  :class:`~triosvc.ws.client.WebSocketClient` over :class:`ASGIWebSocketTransport`, which
  passes ASGI ``websocket`` messages to the app through bounded trio memory channels (the
  plugin's ``memory_websocket`` fixture).

Everything the app does is the same as over a socket (routing, handshake refusals, hooks,
calls, the hub); what an engine does is not there: no pings (heartbeats), no frame size
limit, no TCP backpressure beyond the channels' bound, no TLS.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..ws.client import (
    CLOSE_TIMEOUT,
    CloseReason,
    Headers,
    WebSocketClient,
    WebSocketClosed,
    _close_reason,
    _header_list,
    _refusal,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..runners import ServiceRunner
    from ..web.asgi import ASGIApp, Message, Scope

__all__ = ["ASGIWebSocketTransport", "open_asgi_websocket_client", "served_app", "websocket_scope"]

#: An ASGI message, as it travels through the channels.
_Message = dict[str, Any]

#: The host the in-memory clients name (``Host`` header, ASGI ``server``).
HOST = "testserver"


def served_app(runner: ServiceRunner) -> ASGIApp:
    """What the runner's web server serves (its ``served_app``); ValueError if it has none."""
    from ..web.server import WebServer

    server = runner.shared_extension(WebServer)
    if isinstance(server, WebServer):
        return server.served_app
    raise ValueError(f"{runner!r} runs no web server (no @http entrypoint, no WebSocket)")


def _reason(code: int, reason: str | None = None) -> CloseReason:
    return _close_reason(trio_websocket.CloseReason(code, reason))


class ASGIWebSocketTransport:
    """A :class:`~triosvc.ws.client.WebSocketTransport` speaking ASGI to an app, in memory.

    The app's call runs in a task of the opener's nursery (:meth:`run_app`); frames go both
    ways through memory channels of ``buffer`` messages, so a side that reads nothing holds
    up the other, as a socket would.
    """

    def __init__(self, app: ASGIApp, scope: Scope, *, buffer: int = 16) -> None:
        self.app = app
        self.scope = scope
        self._to_app, self._app_inbox = trio.open_memory_channel[_Message](buffer)
        self._app_outbox, self._from_app = trio.open_memory_channel[_Message](buffer)
        self._close_reason: CloseReason | None = None
        #: The code the app's ``websocket.disconnect`` gives (1006 if nobody closed).
        self._disconnect_code = 1006
        self.app_done = trio.Event()

    # -- the app's side -----------------------------------------------------------------------

    async def run_app(self) -> None:
        """Call the app with the ``websocket`` scope; when it returns, the connection ends."""
        try:
            await self.app(self.scope, self._receive, self._send)
        finally:
            self.app_done.set()
            self._app_outbox.close()

    async def _receive(self) -> _Message:
        try:
            return await self._app_inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {"type": "websocket.disconnect", "code": self._disconnect_code}

    async def _send(self, message: Message) -> None:
        # Once the client has gone, dropped, as a server drops writes to a closed socket.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            copy: _Message = dict(message)
            await self._app_outbox.send(copy)

    # -- the client's side --------------------------------------------------------------------

    @property
    def close_reason(self) -> CloseReason | None:
        return self._close_reason

    async def handshake(self, url: str) -> None:
        """Send ``websocket.connect``; return once the app accepts.

        Raises the exceptions :func:`~triosvc.web.websocket.open_websocket_client` raises for a
        refusal (an ``HttpError`` of the body's class, with the status), or
        ``trio_websocket.HandshakeError`` when the app ends without answering.
        """
        await self._to_app.send({"type": "websocket.connect"})
        message = await self._next()
        if message is None:
            raise trio_websocket.HandshakeError(f"{url}: the app ended without an answer")
        kind = message["type"]
        if kind == "websocket.accept":
            return
        if kind == "websocket.close":  # a close before accepting: an engine answers 403
            rejected = trio_websocket.ConnectionRejected(403, (), b"")
            self._end(1006)
            raise _refusal(rejected, url) from rejected
        if kind == "websocket.http.response.start":
            status = int(message["status"])
            headers = tuple(message.get("headers") or ())
            body = b""
            while True:
                part = await self._next()
                if part is None:
                    break
                body += part.get("body", b"")
                if not part.get("more_body", False):
                    break
            rejected = trio_websocket.ConnectionRejected(status, headers, body)
            self._end(1006)
            raise _refusal(rejected, url) from rejected
        raise trio_websocket.HandshakeError(f"{url}: unexpected ASGI message {kind!r}")

    async def _next(self) -> _Message | None:
        try:
            return await self._from_app.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def get_message(self) -> str | bytes:
        while self._close_reason is None:
            message = await self._next()
            if message is None:  # the app returned without closing: dropped, as by a server
                self._end(1006)
                break
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                return text if text is not None else bytes(message.get("bytes") or b"")
            if kind == "websocket.close":
                self._end(int(message.get("code", 1000)), message.get("reason") or None)
        assert self._close_reason is not None
        await trio.lowlevel.checkpoint()
        raise WebSocketClosed(self._close_reason)

    async def send_message(self, message: str) -> None:
        if self._close_reason is None:
            try:
                await self._to_app.send({"type": "websocket.receive", "text": message})
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.lowlevel.checkpoint()
        raise WebSocketClosed(self._close_reason or _reason(1006))

    async def aclose(self, code: int) -> None:
        """Close with ``code`` (the app receives ``websocket.disconnect``); wait for its end."""
        if self._close_reason is None:
            self._end(code)
        await self.app_done.wait()

    def _end(self, code: int, reason: str | None = None) -> None:
        """The connection has ended with ``code``: both directions close."""
        if self._close_reason is not None:
            return
        self._close_reason = _reason(code, reason)
        self._disconnect_code = code
        self._to_app.close()  # the app reads what is queued, then websocket.disconnect
        self._from_app.close()  # the app's later sends are dropped


def websocket_scope(path: str = "/ws", *, extra_headers: Headers | None = None) -> Scope:
    """The ASGI ``websocket`` scope of a handshake on ``path`` (which may have a query)."""
    parts = urlsplit(path)
    route = parts.path or "/"
    headers = [(b"host", HOST.encode()), *_header_list(extra_headers)]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": (HOST, 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": route,
        "raw_path": route.encode(),
        "query_string": parts.query.encode(),
        "headers": headers,
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }


@asynccontextmanager
async def open_asgi_websocket_client(
    app: ASGIApp,
    path: str = "/ws",
    *,
    connect_timeout: float = 10,
    event_buffer: int = 256,
    extra_headers: Headers | None = None,
    buffer: int = 16,
) -> AsyncIterator[WebSocketClient]:
    """A :class:`~triosvc.ws.client.WebSocketClient` connected to ``app`` in memory.

    As :func:`~triosvc.web.websocket.open_websocket_client` (same client, same exceptions for a
    refused handshake), with the app's call running in this context manager's nursery.

    Args:
        app: An ASGI app: a runner's ``served_app`` (see :func:`served_app`).
        path: The endpoint's path, with a query if the ``@on_connect`` hooks read one.
        connect_timeout: Seconds for the handshake and the ``connected`` event.
        event_buffer: How many events :attr:`WebSocketClient.events` holds.
        extra_headers: Headers for the handshake (``Authorization``, ``Cookie``, ...).
        buffer: How many ASGI messages each direction's channel holds.
    """
    if isinstance(event_buffer, bool) or not isinstance(event_buffer, int) or event_buffer < 1:
        raise ValueError(f"event_buffer must be an int >= 1, got {event_buffer!r}")
    if not connect_timeout > 0 or math.isnan(connect_timeout):
        raise ValueError(f"connect_timeout must be a number of seconds > 0: {connect_timeout!r}")
    url = f"ws://{HOST}{path}"
    transport = ASGIWebSocketTransport(
        app, websocket_scope(path, extra_headers=extra_headers), buffer=buffer
    )
    deadline = trio.current_time() + connect_timeout
    # As in open_websocket_client: nothing escapes the nursery's body, so that the body's
    # exception comes out as itself rather than in an exception group.
    errors: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.run_app)
        client: WebSocketClient | None = None
        try:
            with trio.move_on_at(deadline) as handshake:
                await transport.handshake(url)
            if handshake.cancelled_caught:
                raise trio_websocket.ConnectionTimeout(
                    f"no WebSocket handshake with {url} within {connect_timeout} s"
                )
            client = WebSocketClient(transport, url=url, event_buffer=event_buffer)
            client._start(nursery)
            await client._wait_connected(deadline)
            yield client
        except BaseException as exc:
            errors.append(exc)
        try:
            if client is not None:
                await client.aclose()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await transport.aclose(1000)
        except BaseException as exc:
            errors.append(exc)
        nursery.cancel_scope.cancel()
    if errors:
        try:
            raise errors[0]
        finally:
            errors.clear()

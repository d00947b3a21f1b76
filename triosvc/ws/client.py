"""The Python WebSocket RPC client: call ``@rpc`` methods, receive the hub's events.

For bots, scripts, other services and tests. It speaks SPEC §5.1 over trio-websocket, with
the frames of :mod:`triosvc.ws.protocol` (or, for tests, over ASGI messages to an app in
memory: :mod:`triosvc.testing.memory`; the connection is a :class:`WebSocketTransport`), and
it is structured: the tasks it runs live in a
nursery that :func:`open_websocket_client` owns, and they end when its ``async with`` does.

Example::

    import trio

    from triosvc.web.websocket import open_websocket_client


    async def main() -> None:
        async with open_websocket_client("http://127.0.0.1:8000?token=secret") as client:
            print("connected as", client.socket_id)
            await client.rpc("join", room="lobby")          # the method's keyword arguments
            with trio.fail_after(5):                        # rpc() has no timeout of its own
                joined = await client.wait_for_event("joined")
            async for event in client.events:               # ends when the socket closes
                print(event.event, event.data)


    trio.run(main)

Policies:

- **Calls.** Each call gets a fresh correlation id (an increasing int); replies are matched to
  their callers, so any number of tasks may call concurrently on one client. A remote error is
  raised as triosvc's class of that name, or as :class:`~triosvc.exceptions.RemoteError`. A
  call whose socket closes before its answer raises :class:`WebSocketClosed`; none hangs. A
  call cancelled while waiting (``trio.fail_after``) abandons its reply, which is dropped when
  it comes.
- **Events.** The reader never blocks on events, so replies keep flowing whatever the
  application does with them. Events wait in :attr:`WebSocketClient.events`, a channel of
  ``event_buffer`` events; when it is full, the **oldest** event is dropped to make room for
  the new one (the newest events are usually the ones that matter; a dropped one is counted
  in :meth:`WebSocketClient.statistics` and logged, at WARNING the first time).
- **wait_for_event(name)** takes out of ``events`` the oldest event of that name, or waits for
  the next one; events of other names stay in ``events``, in their order. While a task waits
  for a name, events of that name go to it rather than to ``events`` (one event per waiter,
  first come first served). Once the socket has closed nothing can be put back: it then reads
  ``events`` up to the first event of that name, discarding the others before it, and raises
  :class:`WebSocketClosed` when there is none.
- **The ``connected`` event** is consumed by the client: its socket id is
  :attr:`WebSocketClient.socket_id`; it does not appear in ``events``.
- **Closing.** Leaving the ``async with`` (or :meth:`WebSocketClient.aclose`) closes with 1000
  and waits at most :data:`~triosvc.ws.client.CLOSE_TIMEOUT` seconds for the server's answer,
  then drops the connection. :attr:`WebSocketClient.close_reason` says how the socket ended:
  1001 when the server shut down, 1008 for a slow consumer, 1009 for a frame over a size
  limit, 1006 when the connection broke without a close frame.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import ssl
from collections.abc import Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from .. import exceptions
from ..exceptions import HttpError, RemoteError, TriosvcError
from .protocol import Event, Failure, Result, Unreadable, decode_message, encode_call

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_PATH",
    "ClientStatistics",
    "CloseReason",
    "Headers",
    "TrioWebSocketTransport",
    "WebSocketClient",
    "WebSocketClosed",
    "WebSocketTransport",
    "open_websocket_client",
    "remote_exception",
    "websocket_url",
]

LOGGER = logging.getLogger("triosvc.ws.client")

#: The path a URL without one is given: ``WEBSOCKET_PATH``'s default.
DEFAULT_PATH: Final = "/ws"
#: Seconds a close waits for the server's close frame before dropping the connection.
CLOSE_TIMEOUT: Final = 5.0

_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_NORMAL_CLOSURE: Final = 1000
_ABNORMAL_CLOSURE: Final = 1006

#: Extra handshake headers: a mapping, or (name, value) pairs (str or bytes).
Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


@attrs.frozen
class CloseReason:
    """How a WebSocket ended.

    Attributes:
        code: The close code (RFC 6455): 1000 normal, 1001 going away, 1006 abnormal (no close
            frame), 1008 policy violation, 1009 message too big, ...
        name: The code's name, e.g. ``"GOING_AWAY"``.
        reason: The reason the closing side gave, if any.
    """

    code: int
    name: str
    reason: str | None = None

    def __str__(self) -> str:
        text = f"{self.code} {self.name}"
        return f"{text} ({self.reason})" if self.reason else text


@attrs.frozen
class ClientStatistics:
    """A snapshot of a client's queues.

    Attributes:
        calls_pending: Calls sent (or being sent) and not answered yet.
        events_queued: Events waiting in :attr:`WebSocketClient.events`.
        events_dropped: Events dropped since the client connected: the oldest ones when the
            buffer was full, and those that came after ``events`` was closed by the application.
        event_waiters: Tasks in :meth:`WebSocketClient.wait_for_event`.
    """

    calls_pending: int
    events_queued: int
    events_dropped: int
    event_waiters: int


class WebSocketClosed(trio.BrokenResourceError):
    """The WebSocket is closed: a call or a wait cannot complete.

    A :class:`trio.BrokenResourceError`, so code written for trio's streams catches it too.

    Attributes:
        reason: How the socket ended.
    """

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"the WebSocket is closed: {self.reason}"


class WebSocketTransport(Protocol):
    """The connection a :class:`WebSocketClient` speaks through: one WebSocket, handshake done.

    Two implementations: :class:`TrioWebSocketTransport` (a socket, through trio-websocket)
    and :class:`triosvc.testing.memory.ASGIWebSocketTransport` (ASGI messages straight to an
    app, in memory). Once the connection has ended, :meth:`get_message` and
    :meth:`send_message` raise :class:`WebSocketClosed`.
    """

    @property
    def close_reason(self) -> CloseReason | None:
        """How the connection ended; None while it is open."""
        ...

    async def get_message(self) -> str | bytes:
        """The next frame from the server; WebSocketClosed once the connection has ended."""
        ...

    async def send_message(self, message: str) -> None:
        """Send one text frame; WebSocketClosed once the connection has ended."""
        ...

    async def aclose(self, code: int) -> None:
        """Close with ``code`` and wait for the server's answer (the caller bounds the wait)."""
        ...


class TrioWebSocketTransport:
    """A :class:`WebSocketTransport` over a trio-websocket connection."""

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self.connection = connection

    @property
    def close_reason(self) -> CloseReason | None:
        closed = self.connection.closed
        return None if closed is None else _close_reason(closed)

    async def get_message(self) -> str | bytes:
        try:
            return await self.connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise WebSocketClosed(_close_reason(exc.reason)) from None

    async def send_message(self, message: str) -> None:
        try:
            await self.connection.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise WebSocketClosed(_close_reason(exc.reason)) from None

    async def aclose(self, code: int) -> None:
        await self.connection.aclose(code)


class _Reply:
    """Where the reader puts the answer to one call."""

    __slots__ = ("done", "message")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.message: Result | Failure | None = None  # None when the socket closed first


class _EventWaiter:
    """A task in wait_for_event(), and the event it is given."""

    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.event: Event | None = None  # None when the socket closed first


class WebSocketClient:
    """A connected WebSocket RPC client; get one from :func:`open_websocket_client`.

    Attributes:
        url: The ``ws://`` or ``wss://`` URL the client connected to.
    """

    def __init__(
        self,
        connection: WebSocketTransport | trio_websocket.WebSocketConnection,
        *,
        url: str,
        event_buffer: int,
    ) -> None:
        """Wrap an open connection (internal: use :func:`open_websocket_client`).

        Args:
            connection: The connection, handshake done: a :class:`WebSocketTransport`, or a
                trio-websocket connection (wrapped in a :class:`TrioWebSocketTransport`).
            url: Its URL, for messages.
            event_buffer: How many events :attr:`events` holds.
        """
        self.url = url
        if isinstance(connection, trio_websocket.WebSocketConnection):
            connection = TrioWebSocketTransport(connection)
        self._connection: WebSocketTransport = connection
        self._ids = itertools.count(1)
        self._calls: dict[int, _Reply] = {}
        self._outbox, self._outbox_receive = trio.open_memory_channel[str](0)
        self._event_send, self._events = trio.open_memory_channel[Event](event_buffer)
        self._waiters: dict[str, collections.deque[_EventWaiter]] = {}
        self._events_dropped = 0
        self._socket_id = ""
        self._connected = trio.Event()  # set by the `connected` event, or by the close
        self._close_reason: CloseReason | None = None

    def __repr__(self) -> str:
        state = f"closed {self._close_reason}" if self._close_reason else "open"
        return f"<WebSocketClient {self.url} socket_id={self._socket_id!r} {state}>"

    # -- public -----------------------------------------------------------------------------

    @property
    def socket_id(self) -> str:
        """The id the server gave this socket in its ``connected`` event (hub calls take it)."""
        return self._socket_id

    @property
    def events(self) -> trio.MemoryReceiveChannel[Event]:
        """The events the server pushed (:class:`~triosvc.ws.protocol.Event`: ``event``, ``data``).

        Bounded by ``event_buffer``; when full, the oldest event is dropped for the new one.
        Iterating ends once the socket has closed and the events before the close are read.
        """
        return self._events

    @property
    def closed(self) -> bool:
        """Whether the socket has closed, from either side."""
        return self._close_reason is not None

    @property
    def close_reason(self) -> CloseReason | None:
        """How the socket ended; None while it is open."""
        return self._close_reason

    def statistics(self) -> ClientStatistics:
        """Counts of pending calls, queued and dropped events, and event waiters."""
        return ClientStatistics(
            calls_pending=len(self._calls),
            events_queued=self._event_send.statistics().current_buffer_used,
            events_dropped=self._events_dropped,
            event_waiters=sum(len(waiters) for waiters in self._waiters.values()),
        )

    async def rpc(self, method: str, /, **data: object) -> Any:
        """Call a ``@rpc`` method and return its result.

        There is no timeout argument, since every keyword is the method's: bound a call with
        ``trio.fail_after`` (or ``move_on_after``) around it. A cancelled call's reply is
        dropped when it comes.

        Args:
            method: The method's name.
            **data: Its keyword arguments (JSON values).

        Returns:
            The method's return value, decoded from JSON.

        Raises:
            triosvc.exceptions.TriosvcError: The remote error, as the class of
                :mod:`triosvc.exceptions` its ``exc_type`` names (``MethodNotFound``,
                ``IncorrectSignature``, ``Timeout``, ``Forbidden``, ...), else as a
                :class:`~triosvc.exceptions.RemoteError` (see
                :func:`~triosvc.ws.client.remote_exception`).
            triosvc.exceptions.UnencodableValue: An argument cannot be sent as JSON (nothing
                was sent; the client stays usable).
            WebSocketClosed: The socket closed before the answer came (or was closed already).
        """
        if self._close_reason is not None:
            await trio.lowlevel.checkpoint()
            raise WebSocketClosed(self._close_reason)
        correlation_id = next(self._ids)
        frame = encode_call(method, data, correlation_id)
        reply = self._calls[correlation_id] = _Reply()
        try:
            try:
                await self._outbox.send(frame)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise self._closed_error() from None
            await reply.done.wait()
        finally:
            self._calls.pop(correlation_id, None)
        message = reply.message
        if message is None:
            raise self._closed_error()
        if isinstance(message, Failure):
            raise remote_exception(message)
        return message.data

    async def wait_for_event(self, name: str) -> Any:
        """The data of the oldest event called ``name`` not yet received, or of the next one.

        The event is taken out of :attr:`events`; events of other names stay there, in order.
        Bound the wait with ``trio.fail_after``; a cancelled wait loses no event.

        Args:
            name: The event's name.

        Returns:
            The event's data, decoded from JSON.

        Raises:
            WebSocketClosed: The socket has closed and no event of that name is left.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        event = self._take_queued(name)
        if event is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event.data
        if self._close_reason is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise WebSocketClosed(self._close_reason)
        waiter = _EventWaiter()
        self._waiters.setdefault(name, collections.deque()).append(waiter)
        try:
            await waiter.done.wait()
        except BaseException:
            if waiter.event is not None:  # given an event as the cancellation came: keep it
                self._put_back(waiter.event)
            else:
                self._forget_waiter(name, waiter)
            raise
        if waiter.event is None:
            raise self._closed_error()
        return waiter.event.data

    async def aclose(self) -> None:
        """Close the socket with 1000, waiting for the server at most ``CLOSE_TIMEOUT`` seconds.

        Idempotent. Pending calls and waits raise :class:`WebSocketClosed`; events already
        received stay readable from :attr:`events`, whose iteration then ends.
        """
        if self._close_reason is not None:
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._connection.aclose(_NORMAL_CLOSURE)
        finally:
            self._finish(self._connection.close_reason or _close_reason(None))

    # -- tasks ------------------------------------------------------------------------------

    async def _read_frames(self) -> None:
        """The reader: decode every frame and hand it on; never blocks on the application."""
        try:
            while True:
                frame = await self._connection.get_message()
                self._dispatch(decode_message(frame))
        except WebSocketClosed as exc:
            self._finish(exc.reason)

    async def _send_frames(self) -> None:
        """The sender: the only task writing calls, so a cancelled call cannot cut a frame."""
        async for frame in self._outbox_receive:
            try:
                await self._connection.send_message(frame)
            except WebSocketClosed as exc:
                self._finish(exc.reason)
                return

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the reader and the sender in ``nursery`` (the opener's)."""
        nursery.start_soon(self._read_frames)
        nursery.start_soon(self._send_frames)

    async def _wait_connected(self, deadline: float) -> None:
        """Wait for the ``connected`` event, until ``deadline``."""
        with trio.move_on_at(deadline):
            await self._connected.wait()
        if self._socket_id:
            return
        if self._close_reason is not None:
            raise WebSocketClosed(self._close_reason)
        raise trio_websocket.ConnectionTimeout(
            f"{self.url} accepted the WebSocket but sent no 'connected' event in time"
        )

    # -- the reader's side --------------------------------------------------------------------

    def _dispatch(self, message: Result | Failure | Event | Unreadable) -> None:
        if isinstance(message, Event):
            self._on_event(message)
        elif isinstance(message, Unreadable):
            LOGGER.warning("%s: ignored a frame: %s", self.url, message.reason)
        else:
            self._on_reply(message)

    def _on_reply(self, message: Result | Failure) -> None:
        correlation_id = message.correlation_id
        # type() rather than isinstance(): JSON true would find call 1 (True == 1)
        reply = self._calls.pop(correlation_id, None) if type(correlation_id) is int else None
        if reply is not None:
            reply.message = message
            reply.done.set()
        elif isinstance(message, Failure) and correlation_id is None:
            LOGGER.warning(
                "%s: the server could not read a call: %s: %s",
                self.url,
                message.exc_type,
                message.value,
            )
        else:
            LOGGER.debug(
                "%s: dropped the reply to call %r (no longer waited for)", self.url, message
            )

    def _on_event(self, event: Event) -> None:
        if not self._socket_id and event.event == "connected":
            socket_id = event.data.get("socket_id") if isinstance(event.data, dict) else None
            if isinstance(socket_id, str) and socket_id:
                self._socket_id = socket_id
                self._connected.set()
                return
            LOGGER.warning("%s: a 'connected' event without a socket id: %r", self.url, event)
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        """To the first task waiting for its name, else into ``events``."""
        waiters = self._waiters.get(event.event)
        if waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._waiters[event.event]
            waiter.event = event
            waiter.done.set()
            return
        self._queue(event)

    def _queue(self, event: Event) -> None:
        """Into ``events``; when full, the oldest queued event makes room."""
        try:
            self._event_send.send_nowait(event)
            return
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._dropped(event, "the application closed client.events")
            return
        try:
            oldest = self._events.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            self._dropped(event, "client.events is full")
            return
        self._dropped(oldest, "client.events is full")
        self._event_send.send_nowait(event)

    def _dropped(self, event: Event, why: str) -> None:
        self._events_dropped += 1
        level = logging.WARNING if self._events_dropped == 1 else logging.DEBUG
        LOGGER.log(
            level,
            "%s: dropped the event %r (%s); further drops are logged at DEBUG and counted "
            "in statistics().events_dropped",
            self.url,
            event.event,
            why,
        )

    # -- events, the application's side -------------------------------------------------------

    def _take_queued(self, name: str) -> Event | None:
        """Take the oldest queued event called ``name`` out of ``events``, or None."""
        if self._close_reason is not None:
            # The channel is closed for sending: read up to the match; others are discarded.
            while True:
                try:
                    event = self._events.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    return None
                if event.event == name:
                    return event
        queued = self._drain()
        found: Event | None = None
        for index, event in enumerate(queued):
            if event.event == name:
                found = queued.pop(index)
                break
        for event in queued:  # no checkpoint since the drain: the order is kept
            self._event_send.send_nowait(event)
        return found

    def _drain(self) -> list[Event]:
        queued: list[Event] = []
        while True:
            try:
                queued.append(self._events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return queued

    def _put_back(self, event: Event) -> None:
        """Return an event a cancelled waiter was given: to the next waiter, or first in line."""
        if self._close_reason is not None:  # the channel is closed: nowhere to put it
            self._dropped(event, "its waiter was cancelled as the socket closed")
        elif self._waiters.get(event.event):
            self._deliver(event)
        else:
            for queued in [event, *self._drain()]:
                self._queue(queued)

    def _forget_waiter(self, name: str, waiter: _EventWaiter) -> None:
        waiters = self._waiters.get(name)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            return
        if not waiters:
            del self._waiters[name]

    # -- ending -------------------------------------------------------------------------------

    def _finish(self, reason: CloseReason) -> None:
        """The socket has closed: fail what waits on it, end ``events``. Idempotent."""
        if self._close_reason is not None:
            return
        self._close_reason = reason
        LOGGER.debug("%s: closed: %s", self.url, reason)
        self._outbox.close()  # calls waiting to be sent raise ClosedResourceError
        for reply in self._calls.values():
            reply.done.set()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.done.set()
        self._waiters.clear()
        self._event_send.close()
        self._connected.set()

    def _closed_error(self) -> WebSocketClosed:
        reason = self._close_reason or CloseReason(_ABNORMAL_CLOSURE, "ABNORMAL_CLOSURE")
        return WebSocketClosed(reason)


def _close_reason(reason: trio_websocket.CloseReason | None) -> CloseReason:
    if reason is None:
        return CloseReason(_ABNORMAL_CLOSURE, "ABNORMAL_CLOSURE")
    return CloseReason(reason.code, reason.name, reason.reason)


# Errors --------------------------------------------------------------------------------------


def _triosvc_class(name: str) -> type[TriosvcError] | None:
    """The class of :mod:`triosvc.exceptions` called ``name``, or None."""
    if name not in exceptions.__all__:
        return None
    cls = getattr(exceptions, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, TriosvcError) else None


def remote_exception(failure: Failure) -> TriosvcError:
    """The exception to raise for an error answer.

    Args:
        failure: The decoded error frame.

    Returns:
        The class of :mod:`triosvc.exceptions` that ``exc_type`` names, built with ``value`` as
        its message (an HttpError subclass keeps its class's status); a ``RemoteError`` the
        method let through keeps its original ``exc_type`` and ``value``; anything else (an
        ``expected_exceptions`` class of the service, ``InternalServerError``) is
        ``RemoteError(exc_type, value)``.
    """
    exc_type, value = failure.exc_type, failure.value
    if exc_type == RemoteError.__name__:
        match failure.exc_args:
            case (str() as original_type, str() as original_value):
                return RemoteError(original_type, original_value)
        return RemoteError(exc_type, value)
    cls = _triosvc_class(exc_type)
    if cls is None:
        return RemoteError(exc_type, value)
    return cls(value)


def _refusal(rejected: trio_websocket.ConnectionRejected, url: str) -> HttpError:
    """The exception for a handshake the server answered with an HTTP error (SPEC §4.2 body)."""
    status = rejected.status_code
    body = rejected.body or b""
    name: object = None
    message: object = None
    try:
        document = json.loads(body)
    except ValueError:  # not JSON (a proxy's page, say): shown as it is
        document = None
    if isinstance(document, dict):
        name, message = document.get("error"), document.get("message")
    if isinstance(name, str) and isinstance(message, str):
        cls = _triosvc_class(name)
        if cls is not None and issubclass(cls, HttpError):
            return cls(message, status_code=status)
        detail = f"{name}: {message}"
    else:
        text = body.decode("utf-8", "replace").strip()
        detail = text[:200] + ("..." if len(text) > 200 else "") or "no body"
    return HttpError(
        f"the WebSocket handshake with {url} was refused with HTTP {status}: {detail}",
        status_code=status,
    )


# Opening -------------------------------------------------------------------------------------


def websocket_url(url: str, default_path: str = DEFAULT_PATH) -> str:
    """The WebSocket URL for ``url``: ``http``/``https`` become ``ws``/``wss``.

    A URL without a path gets ``default_path``; one with a path, ``/`` included, keeps it.
    The query is kept (an ``@on_connect`` hook reads it); a fragment is dropped.

    Args:
        url: An ``http://``, ``https://``, ``ws://`` or ``wss://`` URL.
        default_path: The path for a URL without one.

    Returns:
        The ``ws://`` or ``wss://`` URL.

    Raises:
        ValueError: Another scheme, no host, or a bad port.
    """
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"expected an http://, https://, ws:// or wss:// URL with a host: {url!r}")
    try:
        parts.port  # noqa: B018 (it raises for a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"expected a URL with a valid port: {url!r} ({exc})") from None
    return urlunsplit((scheme, parts.netloc, parts.path or default_path, parts.query, ""))


def _header_list(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(_header_bytes(name), _header_bytes(value)) for name, value in pairs]


def _header_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


async def _open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None, deadline: float, url: str
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The TCP (or TLS) connection under a WebSocket, opened by ``deadline``."""
    with trio.move_on_at(deadline):
        try:
            if ssl_context is None:
                return await trio.open_tcp_stream(host, port)
            return await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl_context, https_compatible=True
            )
        except OSError as exc:
            raise trio_websocket.HandshakeError(f"cannot connect to {url}: {exc}") from exc
    raise trio_websocket.ConnectionTimeout(f"no connection to {url} within the connect timeout")


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


@asynccontextmanager
async def open_websocket_client(
    url: str,
    *,
    connect_timeout: float = 10,
    event_buffer: int = 256,
    max_message_size: int = 1 << 20,
    extra_headers: Headers | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketClient]:
    """Connect to a triosvc WebSocket endpoint; the client lives as long as the ``async with``.

    The client's tasks (trio-websocket's reader, and the client's reader and sender) run in a
    nursery this context manager owns. On leaving, the socket is closed with 1000 (see
    :meth:`WebSocketClient.aclose`), the tasks end and the TCP connection is closed; an
    exception from the body propagates as itself, not in an exception group.

    Args:
        url: The server's URL: ``http(s)://host:port`` (the path defaults to ``/ws``) or a
            ``ws(s)://`` URL; see :func:`~triosvc.ws.client.websocket_url`.
        connect_timeout: Seconds for the TCP connection, the handshake and the server's
            ``connected`` event together.
        event_buffer: How many events :attr:`WebSocketClient.events` holds before the oldest is
            dropped (at least 1).
        max_message_size: The largest frame accepted from the server; a larger one closes the
            socket with 1009.
        extra_headers: Headers for the handshake (``Authorization``, ``Cookie``, ...).
        ssl_context: For ``wss://``: the TLS context; Python's default one when None.

    Yields:
        The connected client; its :attr:`~WebSocketClient.socket_id` is known.

    Raises:
        triosvc.exceptions.HttpError: The server refused the handshake. The class is the one
            the §4.2 body's ``error`` names when triosvc has it (``Unauthorized``,
            ``ServiceUnavailable``, ...), else ``HttpError``; ``status_code`` is the HTTP status
            and the message the body's. The original ``trio_websocket.ConnectionRejected``
            (status, headers, raw body) is its ``__cause__``.
        trio_websocket.HandshakeError: The connection or the handshake failed, or
            ``connect_timeout`` passed (``trio_websocket.ConnectionTimeout``).
        WebSocketClosed: The server closed the socket before its ``connected`` event.
        ValueError: A bad URL, ``event_buffer``, ``connect_timeout`` or ``ssl_context``.
    """
    if isinstance(event_buffer, bool) or not isinstance(event_buffer, int) or event_buffer < 1:
        raise ValueError(f"event_buffer must be an int >= 1, got {event_buffer!r}")
    if not connect_timeout > 0 or math.isnan(connect_timeout):
        raise ValueError(f"connect_timeout must be a number of seconds > 0: {connect_timeout!r}")
    target = websocket_url(url)
    parts = urlsplit(target)
    secure = parts.scheme == "wss"
    if ssl_context is not None and not secure:
        raise ValueError(f"ssl_context is for wss:// URLs, not {target!r}")
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    host_header = parts.netloc.rpartition("@")[2]
    resource = f"{parts.path}?{parts.query}" if parts.query else parts.path
    headers = _header_list(extra_headers)
    deadline = trio.current_time() + connect_timeout

    # The client owns its TCP stream, and closes it whatever happens: trio-websocket leaves it
    # open when the server refuses the handshake. Nothing may escape the nursery's body, or it
    # would come out wrapped in an exception group: the body's error and the close's are kept,
    # and raised once the nursery is done.
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
    client: WebSocketClient | None = None
    body_error: BaseException | None = None
    close_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                stream = await _open_stream(host, port, ssl_context, deadline, target)
                with trio.move_on_at(deadline) as handshake:
                    connection = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        extra_headers=headers,
                        max_message_size=max_message_size,
                    )
                if handshake.cancelled_caught:
                    raise trio_websocket.ConnectionTimeout(
                        f"no WebSocket handshake with {target} within {connect_timeout} s"
                    )
                client = WebSocketClient(connection, url=target, event_buffer=event_buffer)
                client._start(nursery)
                await client._wait_connected(deadline)
                yield client
            except BaseException as exc:
                body_error = exc
            if client is not None:
                try:
                    await client.aclose()
                except BaseException as exc:
                    close_error = exc
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A task failed: trio-websocket's reader raises ConnectionRejected for a refusal (and
        # the body was cancelled by it, so body_error is that cancellation).
        body_error = close_error = None
        rejected = next(
            (e for e in _leaves(group) if isinstance(e, trio_websocket.ConnectionRejected)), None
        )
        if rejected is not None:
            raise _refusal(rejected, target) from rejected
        if client is None:
            raise trio_websocket.HandshakeError(
                f"the WebSocket handshake with {target} failed"
            ) from group
        raise
    else:
        try:
            if body_error is not None:
                raise body_error
            if close_error is not None:
                raise close_error
        finally:
            body_error = close_error = None  # no reference cycle through the traceback
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)

"""The hub: which sockets are connected, which channels they subscribe to, and delivery.

Every method is a plain call that never blocks, callable from any worker: from a
worker thread it hops into trio (``trio.from_thread.run_sync``), so that the hub's
state only ever changes in trio's thread, in the order the calls were made.

Delivery never waits on a socket. Each socket has a bounded outbox (``send_buffer``
messages) drained by its own sender; a socket whose outbox is full when a message is
due is a slow consumer: it is dropped from the hub at once and asked to close with
1008, and nobody else's delivery is delayed or lost because of it.

With a Redis broker the hub has a cluster link (``cluster``, :mod:`triosvc.ws.cluster`):
sockets it does not have are looked up there, broadcasts and changes to its own sockets
are passed on; the link delivers other nodes' messages through ``fan_out``, ``send``,
``subscribe`` and ``unsubscribe``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import attrs
import trio

from ..exceptions import ConnectionNotFound
from .protocol import encode_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from .cluster import ClusterLink, ClusterStatistics

__all__ = ["HubStatistics", "SocketState", "WebSocketHub"]

P = ParamSpec("P")
R = TypeVar("R")

#: Close codes (RFC 6455): the server is going away, a policy was broken (slow consumer).
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


@attrs.frozen
class HubStatistics:
    """A snapshot of the hub; all zero once every socket has gone."""

    #: Sockets registered (connected, or handshaking).
    sockets: int
    #: Channels with at least one subscriber.
    channels: int
    #: (socket, channel) subscriptions.
    subscriptions: int
    #: Messages waiting in outboxes.
    queued_messages: int
    #: Sockets closed as slow consumers since the hub began.
    slow_consumers: int
    #: The link to the other nodes (Redis broker), None for a hub of its own runner.
    cluster: ClusterStatistics | None = None


@attrs.define(eq=False)
class SocketState:
    """One socket as the hub sees it: its outbox and subscriptions."""

    socket_id: str
    outbox: trio.MemorySendChannel[str]
    inbox: trio.MemoryReceiveChannel[str]
    subscriptions: set[str] = attrs.field(factory=set)
    #: Set when the socket must close, with the code to close with.
    close_code: int | None = None
    #: Cancelled to stop the socket's sender when it must close.
    sender_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def request_close(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
        self.sender_scope.cancel()


def _in_trio(
    method: Callable[Concatenate[WebSocketHub, P], R],
) -> Callable[Concatenate[WebSocketHub, P], R]:
    """Run a hub method in trio's thread, whichever thread calls it."""

    def call(self: WebSocketHub, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if trio.lowlevel.in_trio_run():
            return method(self, *args, **kwargs)
        return trio.from_thread.run_sync(functools.partial(method, self, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


class WebSocketHub:
    """Sockets and channels of one runner's WebSocket endpoint (SPEC §5.2)."""

    def __init__(self, *, send_buffer: int = 256) -> None:
        self.send_buffer = send_buffer
        self._sockets: dict[str, SocketState] = {}
        # dicts, not sets: delivery follows subscription order, which keeps runs repeatable
        self._channels: dict[str, dict[str, None]] = {}
        self._slow_consumers = 0
        #: Messages queued for a socket since the hub began (the metrics' count).
        self.messages_sent = 0
        #: The other nodes, when the broker spans processes (set by the link itself).
        self.cluster: ClusterLink | None = None

    # -- what workers call --------------------------------------------------------------

    @_in_trio
    def subscribe(self, socket_id: str, channel: str) -> None:
        """Subscribe ``socket_id`` to ``channel`` (idempotent)."""
        cluster = self.cluster
        if cluster is not None and socket_id not in self._sockets:
            if cluster.subscribe(socket_id, channel):  # another node's socket
                return
            raise ConnectionNotFound(f"no WebSocket with socket id {socket_id!r} is connected")
        state = self._socket(socket_id)
        state.subscriptions.add(channel)
        self._channels.setdefault(channel, {})[socket_id] = None
        if cluster is not None:
            cluster.changed()

    @_in_trio
    def unsubscribe(self, socket_id: str, channel: str) -> None:
        """Unsubscribe; nothing happens for a socket not subscribed or not connected."""
        state = self._sockets.get(socket_id)
        if state is None and self.cluster is not None:
            self.cluster.unsubscribe(socket_id, channel)
            return
        if state is None or channel not in state.subscriptions:
            return
        state.subscriptions.discard(channel)
        self._forget_subscription(socket_id, channel)
        if self.cluster is not None:
            self.cluster.changed()

    @_in_trio
    def broadcast(self, channel: str, event: str, data: object) -> None:
        """Send one event to every socket subscribed to ``channel``; encoded once."""
        if self.cluster is None and channel not in self._channels:
            return
        message = encode_event(event, data)
        self.fan_out(channel, message)
        if self.cluster is not None:
            self.cluster.broadcast(channel, message)

    @_in_trio
    def unicast(self, socket_id: str, event: str, data: object) -> None:
        """Send one event to one socket; ConnectionNotFound if it is not connected."""
        if self.cluster is not None and socket_id not in self._sockets:
            if self.cluster.unicast(socket_id, event, data):  # another node's socket
                return
            raise ConnectionNotFound(f"no WebSocket with socket id {socket_id!r} is connected")
        self._socket(socket_id)
        self._deliver(socket_id, encode_event(event, data))

    @_in_trio
    def get_subscriptions(self, socket_id: str) -> list[str]:
        """The channels ``socket_id`` subscribes to, sorted; [] for an unknown socket."""
        state = self._sockets.get(socket_id)
        if state is None and self.cluster is not None:
            return self.cluster.subscriptions(socket_id)
        return sorted(state.subscriptions) if state is not None else []

    @_in_trio
    def statistics(self) -> HubStatistics:
        return HubStatistics(
            sockets=len(self._sockets),
            channels=len(self._channels),
            subscriptions=sum(len(s) for s in self._channels.values()),
            queued_messages=sum(
                s.outbox.statistics().current_buffer_used for s in self._sockets.values()
            ),
            slow_consumers=self._slow_consumers,
            cluster=self.cluster.statistics() if self.cluster is not None else None,
        )

    def is_connected(self, socket_id: str) -> bool:
        return socket_id in self._sockets

    @property
    def socket_ids(self) -> list[str]:
        return list(self._sockets)

    # -- what connections call ------------------------------------------------------------

    def register(self, socket_id: str) -> SocketState:
        """Add a socket with an empty outbox of ``send_buffer`` messages."""
        if socket_id in self._sockets:
            raise ValueError(f"socket {socket_id} is already registered")
        outbox, inbox = trio.open_memory_channel[str](self.send_buffer)
        state = self._sockets[socket_id] = SocketState(socket_id, outbox, inbox)
        if self.cluster is not None:
            self.cluster.changed()
        return state

    def unregister(self, socket_id: str) -> None:
        """Forget a socket: its subscriptions and its outbox (queued messages are dropped)."""
        state = self._sockets.pop(socket_id, None)
        if state is None:
            return
        for channel in state.subscriptions:
            self._forget_subscription(socket_id, channel)
        state.subscriptions.clear()
        state.outbox.close()  # the connection's sender sees the end; nothing queues any more
        if self.cluster is not None:
            self.cluster.changed()

    def fan_out(self, channel: str, message: str) -> None:
        """Deliver an encoded event to this node's subscribers of ``channel``."""
        subscribers = self._channels.get(channel)
        if subscribers:
            for socket_id in list(subscribers):
                self._deliver(socket_id, message)

    def send(self, socket_id: str, message: str) -> bool:
        """Queue an encoded message (a call's reply) for one socket; False if it is gone."""
        if socket_id not in self._sockets:
            return False
        self._deliver(socket_id, message)
        return socket_id in self._sockets

    def close_all(self, code: int = GOING_AWAY) -> None:
        for state in self._sockets.values():
            state.request_close(code)

    # -- internals --------------------------------------------------------------------------

    def _socket(self, socket_id: str) -> SocketState:
        state = self._sockets.get(socket_id)
        if state is None:
            raise ConnectionNotFound(f"no WebSocket with socket id {socket_id!r} is connected")
        return state

    def _deliver(self, socket_id: str, message: str) -> None:
        state = self._sockets[socket_id]
        try:
            state.outbox.send_nowait(message)
            self.messages_sent += 1
        except trio.WouldBlock:
            # A slow consumer: out of the hub now (so no one waits on it), closed by its
            # connection with 1008.
            self._slow_consumers += 1
            state.request_close(POLICY_VIOLATION)
            self.unregister(socket_id)

    def _forget_subscription(self, socket_id: str, channel: str) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.pop(socket_id, None)
            if not subscribers:
                del self._channels[channel]

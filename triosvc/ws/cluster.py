"""The hub's backplane: what a :class:`~triosvc.ws.hub.WebSocketHub` asks of the cluster.

A runner's hub knows its own sockets. With a broker that spans processes (``BROKER_URL``
``redis://``) it also has a :class:`ClusterLink` (``hub.cluster``), which it consults
for every socket that is not its own and tells of every broadcast and every change to
its own sockets; with ``memory://`` it has none and is the runner's alone, as before.
One implementation so far: :mod:`triosvc.ws.redis_cluster` (loaded only for
``redis://``, since it needs coredis).

The contract, for implementations:

- Every method is a plain call made in trio's thread (the hub's methods hop there
  first), and never blocks: what must reach other nodes is queued, bounded, and
  dropped (counted, and made known to the sockets it was for) when the queue is full.
- The link answers for *other* nodes' sockets from a view of the cluster that it keeps
  current in the background; what it says may lag (see :mod:`~triosvc.ws.redis_cluster`).
- Messages from other nodes reach this node's sockets through the hub's own methods
  (:meth:`~triosvc.ws.hub.WebSocketHub.fan_out`, ``send``, ``subscribe``,
  ``unsubscribe``), in the order each other node sent them.
- A link opens with the WebSocket endpoint (its ``lifespan``), in the runner's nursery
  tree, and attaches itself to the hub for that time.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import attrs

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .hub import WebSocketHub

__all__ = ["GAP_EVENT", "ClusterLink", "ClusterStatistics", "open_cluster_link"]

#: The event a socket receives when messages meant for it may have been lost (a broker
#: outage, a full outgoing queue on another node): ``{"channels": [...], "duration": s}``.
GAP_EVENT = "hub_gap"


@attrs.frozen
class ClusterStatistics:
    """A snapshot of a node's link to the rest of the cluster."""

    #: This node's id (one per runner).
    node_id: str
    #: Whether the broker answers (the last round trip succeeded).
    connected: bool
    #: Nodes in this node's view of the cluster, itself included.
    nodes: int
    #: Sockets of other nodes in the view.
    remote_sockets: int
    #: Messages handed to the broker for other nodes (broadcasts, unicasts, commands).
    published: int
    #: Messages from other nodes delivered here (broadcasts, unicasts, commands).
    received: int
    #: Messages for other nodes that never left this one: the outgoing queue was full, the
    #: broker failed, or the node they were for had gone.
    dropped: int
    #: Times this node's sockets were told that messages may have been lost (GAP_EVENT),
    #: counted per socket.
    gaps: int


class ClusterLink(Protocol):
    """What the hub calls when it has a cluster link (``hub.cluster``)."""

    node_id: str

    def changed(self) -> None:
        """One of this node's sockets came, went, subscribed or unsubscribed."""

    def broadcast(self, channel: str, message: str) -> None:
        """Deliver an encoded event to ``channel``'s subscribers on every other node."""

    def unicast(self, socket_id: str, event: str, data: object) -> bool:
        """Send an event to another node's socket; False if no node has that socket."""

    def subscribe(self, socket_id: str, channel: str) -> bool:
        """Subscribe another node's socket; False if no node has that socket."""

    def unsubscribe(self, socket_id: str, channel: str) -> None:
        """Unsubscribe another node's socket; nothing for an unknown socket."""

    def subscriptions(self, socket_id: str) -> list[str]:
        """Another node's socket's channels, sorted; [] for an unknown socket."""

    def statistics(self) -> ClusterStatistics: ...


@asynccontextmanager
async def open_cluster_link(broker_url: str, hub: WebSocketHub) -> AsyncIterator[None]:
    """Link ``hub`` to the other nodes on ``broker_url`` for the block (nothing for memory://).

    Raises:
        ConfigurationError: ``redis://`` without coredis installed.
    """
    if not broker_url.startswith("redis://"):
        yield  # memory://: every node is a process of its own; the hub is the runner's
        return
    try:
        from .redis_cluster import open_redis_cluster
    except ImportError as exc:
        raise ConfigurationError(
            "BROKER_URL is a redis:// URL, but the cluster-wide WebSocket hub needs coredis, "
            f"which cannot be imported ({exc}); install it with: pip install 'triosvc[redis]'"
        ) from None
    async with open_redis_cluster(broker_url, hub):
        yield

"""The service every node of these tests runs: WebSocket methods and HTTP routes over the hub."""

from __future__ import annotations

from triosvc.exceptions import ConnectionNotFound
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, rpc

#: The cluster options of every test here and of the child node (node.py): short lifetimes.
FAST: dict[str, object] = {
    "snapshot_ttl": 2.0,
    "refresh_interval": 0.25,
    "change_delay": 0.05,
    "silence_limit": 3.0,
    "connect_timeout": 1.0,
    "op_timeout": 2.0,
    "close_timeout": 2.0,
    "backoff": (0.02, 0.2),
}


class Node:
    name = "node"
    hub = WebSocketHubProvider()

    @rpc
    async def join(self, socket_id, channels):
        for channel in channels:
            self.hub.subscribe(socket_id, channel)
        return self.hub.get_subscriptions(socket_id)

    @http("POST", "/broadcast/<channel>/<int:count>")
    async def broadcast_many(self, request, channel, count):
        for i in range(count):
            self.hub.broadcast(channel, "t", i)
        return {"sent": count}

    @http("POST", "/hub/<op>")
    def hub_op(self, request, op):  # a blocking handler: the hub from a worker thread
        try:
            return {"result": getattr(self.hub, op)(**request.get_json())}
        except ConnectionNotFound as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

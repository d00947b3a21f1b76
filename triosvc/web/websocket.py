"""WebSocket RPC and the hub, at nameko's import path.

``rpc`` exposes a method to WebSocket clients, ``WebSocketHubProvider`` injects the
``WebSocketHub``; ``on_connect`` / ``on_disconnect`` run code as sockets come and go.
"""

from __future__ import annotations

from ..ws.entrypoints import on_connect as on_connect
from ..ws.entrypoints import on_disconnect as on_disconnect
from ..ws.entrypoints import rpc as rpc
from ..ws.hub import HubStatistics as HubStatistics
from ..ws.hub import WebSocketHub as WebSocketHub
from ..ws.provider import WebSocketHubProvider as WebSocketHubProvider

#: The name SPEC §5.2 uses for ``rpc``.
websocket_rpc = rpc

__all__ = [
    "HubStatistics",
    "WebSocketHub",
    "WebSocketHubProvider",
    "on_connect",
    "on_disconnect",
    "rpc",
    "websocket_rpc",
]

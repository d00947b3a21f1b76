"""WebSocket RPC and the hub, at nameko's import path.

``rpc`` exposes a method to WebSocket clients, ``WebSocketHubProvider`` injects the
``WebSocketHub``; ``on_connect`` / ``on_disconnect`` run code as sockets come and go.
"""

from __future__ import annotations

from ..ws.client import WebSocketClient as WebSocketClient
from ..ws.client import WebSocketClosed as WebSocketClosed
from ..ws.client import open_websocket_client as open_websocket_client
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
    "WebSocketClient",
    "WebSocketClosed",
    "WebSocketHub",
    "WebSocketHubProvider",
    "on_connect",
    "on_disconnect",
    "open_websocket_client",
    "rpc",
    "websocket_rpc",
]

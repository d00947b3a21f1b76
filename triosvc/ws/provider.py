"""``WebSocketHubProvider``: the hub, injected into workers of every kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.extensions import DependencyProvider
from ..web.server import WebServer

if TYPE_CHECKING:
    from ..core.context import WorkerContext
    from .hub import WebSocketHub

__all__ = ["WebSocketHubProvider"]


class WebSocketHubProvider(DependencyProvider):
    """Injects the runner's :class:`~triosvc.ws.hub.WebSocketHub`.

    The hub's methods are plain calls that never block, safe from async workers and
    from blocking ones (threads) alike, and from HTTP workers as well as WebSocket ones.
    A service with this provider opens the WebSocket endpoint even without ``@rpc``
    methods, so that HTTP handlers can push events to sockets.
    """

    shared_extension = WebServer
    hub: WebSocketHub

    def attach(self, server: WebServer) -> None:
        from .endpoint import WebSocketEndpoint

        self.hub = server.companion(WebSocketEndpoint).hub

    async def get_dependency(self, worker_ctx: WorkerContext) -> WebSocketHub:
        return self.hub

    def dependency_spec(self, blocking: bool) -> type[WebSocketHub]:
        # The annotation above is for type checkers only: name the type for mocks here.
        from .hub import WebSocketHub

        return WebSocketHub

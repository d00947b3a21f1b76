"""The WebSocket entrypoints: ``@rpc`` methods, and connect/disconnect hooks.

::

    class ChatService:
        name = "chat"
        hub = WebSocketHubProvider()

        @on_connect
        async def authenticate(self, socket_id, request):
            if request.args.get("token") != "secret":
                raise Unauthorized("a token is required")

        @rpc
        async def join(self, socket_id, room):
            self.hub.subscribe(socket_id, room)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Self, TypeVar

from ..core.extensions import Entrypoint
from ..core.options import method_decorator
from ..exceptions import ConfigurationError, IncorrectSignature
from ..web.server import WebServer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.container import ServiceContainer

__all__ = ["ConnectionHook", "WebSocketRpc", "on_connect", "on_disconnect", "rpc"]

F = TypeVar("F", bound=Callable[..., object])


class _WebSocketEntrypoint(Entrypoint):
    shared_extension = WebServer
    #: What the method is called with after ``self``, for signature checks.
    leading_arguments: tuple[str, ...] = ("socket_id",)

    def __init__(
        self,
        *,
        expected_exceptions: tuple[type[BaseException], ...] = (),
        timeout: float | None = None,
    ) -> None:
        super().__init__(expected_exceptions=expected_exceptions)
        self.timeout = timeout
        self.debug = False

    def bind(self, container: ServiceContainer, method_name: str) -> Self:
        bound = super().bind(container, method_name)
        settings = container.config.settings
        bound.timeout = self.timeout if self.timeout is not None else settings.timeout
        bound.debug = settings.debug
        bound.signature = inspect.signature(bound.method)
        return bound

    signature: inspect.Signature

    def check(self, service_cls: type, method_name: str) -> None:
        try:
            inspect.signature(getattr(service_cls, method_name)).bind_partial(
                None, *(None for _ in self.leading_arguments)
            )
        except TypeError:
            raise ConfigurationError(
                f"{service_cls.__qualname__}.{method_name} must take "
                f"(self, {', '.join(self.leading_arguments)}, ...)"
            ) from None

    def endpoint(self, server: WebServer) -> WebSocketEndpoint:
        from .endpoint import WebSocketEndpoint  # the endpoint names these classes

        return server.companion(WebSocketEndpoint)


class WebSocketRpc(_WebSocketEntrypoint):
    """A ``@rpc`` method: called as ``method(self, socket_id, **data)``."""

    def attach(self, server: WebServer) -> None:
        self.endpoint(server).add_method(self)

    def check_arguments(self, socket_id: str, data: Mapping[str, object]) -> None:
        """Raise IncorrectSignature when ``data`` does not fit the method."""
        try:
            self.signature.bind(None, socket_id, **data)
        except TypeError as exc:
            raise IncorrectSignature(f"{self.method_name}: {exc}") from None


class ConnectionHook(_WebSocketEntrypoint):
    """``@on_connect`` (``method(self, socket_id, request)``) or ``@on_disconnect``."""

    def __init__(self, event: str, *, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self.event = event
        self.leading_arguments = ("socket_id", "request") if event == "connect" else ("socket_id",)

    def attach(self, server: WebServer) -> None:
        self.endpoint(server).add_hook(self)


rpc = method_decorator(
    "rpc",
    WebSocketRpc,
    """Expose a method to WebSocket clients: ``{"method": "<name>", "data": {...}}``.

    Bare (``@rpc``) or with options: ``expected_exceptions`` reach the client as
    themselves (``exc_type`` their class name); ``timeout`` replaces
    ``WEB_SERVER_TIMEOUT`` for this method.
    """,
)


def on_connect(method: F) -> F:
    """Run ``method(self, socket_id, request)`` when a socket connects, before it is accepted.

    ``request`` is the handshake as a werkzeug Request (headers, query args, cookies).
    Raise to refuse the socket: an HttpError gives its status (Unauthorized: 401), any
    other exception a 500; the handshake is answered with the usual JSON error body.
    """
    return ConnectionHook("connect").decorate(method)


def on_disconnect(method: F) -> F:
    """Run ``method(self, socket_id)`` once a socket has gone (its subscriptions gone too)."""
    return ConnectionHook("disconnect").decorate(method)


if TYPE_CHECKING:
    from .endpoint import WebSocketEndpoint

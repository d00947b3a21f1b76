"""The WebSocket endpoint of a runner: its methods, its hub, its connections.

One per web server (``WEBSOCKET_PATH`` on the HTTP port), shared by every service of
the runner: method names are unique across them. It rides on the web server as a
companion: on stop it refuses new sockets and calls, lets the calls in flight finish
within the grace period, then closes every socket with 1001. With a Redis broker its
lifespan links the hub to the other nodes (:mod:`triosvc.ws.cluster`), from before the
server accepts until after it has stopped.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio
from werkzeug.wrappers import Request, Response

from ..core.gauge import Gauge
from ..core.groups import sole_exception
from ..exceptions import (
    ConfigurationError,
    MethodNotFound,
    ServiceUnavailable,
    Timeout,
    TriosvcError,
)
from ..web.asgi import build_environ
from ..web.responses import error_response
from .cluster import open_cluster_link
from .connection import CLOSE_TIMEOUT, serve_connection
from .hub import GOING_AWAY, WebSocketHub
from .protocol import Call, UnencodableValue, encode_error, encode_result, error_fields

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextlib import AbstractAsyncContextManager

    from ..web.asgi import Receive, Scope, Send
    from ..web.server import WebServer
    from .entrypoints import ConnectionHook, WebSocketRpc

__all__ = ["EndpointStatistics", "WebSocketEndpoint"]

LOGGER = logging.getLogger("triosvc.ws")


@attrs.frozen
class EndpointStatistics:
    connections: int
    calls_in_flight: int


class WebSocketEndpoint:
    """Serves ``WEBSOCKET_PATH``: handshakes, calls to ``@rpc`` methods, hub delivery."""

    def __init__(self, server: WebServer) -> None:
        settings = server.settings
        self.settings = settings
        self.hub = WebSocketHub(send_buffer=settings.hub.send_buffer)
        self.max_connections = settings.hub.max_connections
        self.methods: dict[str, WebSocketRpc] = {}
        self.connect_hooks: list[ConnectionHook] = []
        self.disconnect_hooks: list[ConnectionHook] = []
        self.draining = False
        self.connections = Gauge()
        self.calls = Gauge()
        self._app = server.app
        server.app.websocket = self

    # -- declaration ---------------------------------------------------------------------

    def add_method(self, entrypoint: WebSocketRpc) -> None:
        name = entrypoint.method_name
        other = self.methods.get(name)
        if other is not None:
            raise ConfigurationError(
                f"{entrypoint.container.service_cls.__qualname__}.{name}: the WebSocket "
                f"method {name!r} is already {other.container.service_cls.__qualname__}.{name}; "
                "services of one runner share one WebSocket endpoint, so names must differ"
            )
        self.methods[name] = entrypoint

    def add_hook(self, hook: ConnectionHook) -> None:
        (self.connect_hooks if hook.event == "connect" else self.disconnect_hooks).append(hook)

    def routes(self) -> list[tuple[str, str, str]]:
        path = self.settings.websocket_path
        return [("WS", f"{path} {name}", e.qualified_name) for name, e in self.methods.items()]

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            connections=self.connections.value, calls_in_flight=self.calls.value
        )

    # -- serving ---------------------------------------------------------------------------

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The hub's link to the other nodes for as long as the server serves (Redis only)."""
        return open_cluster_link(self.settings.broker_url, self.hub)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_connection(self, scope, receive, send)

    def context_data(self, scope: Scope) -> dict[str, object]:
        return self._app.context_data(scope)

    def refusal(self) -> Response | None:
        """Why a new socket is refused now (503), or None."""
        if self.draining:
            reason = "the service is shutting down; try another instance"
        elif self.connections.value >= self.max_connections:
            reason = f"all {self.max_connections} WebSocket connections are taken; try again later"
        else:
            return None
        return error_response(ServiceUnavailable(reason), handler="WebSocket handshake")

    async def connect(self, socket_id: str, scope: Scope) -> Response | None:
        """Run the ``@on_connect`` hooks; the answer that refuses the socket, or None."""
        if not self.connect_hooks:
            return None
        request = Request(build_environ({**scope, "method": "GET"}, b""))
        for hook in self.connect_hooks:
            try:
                await self._run(hook, (socket_id, request), {}, self.context_data(scope))
            except Exception as exc:
                return error_response(exc, handler=hook.qualified_name, debug=hook.debug)
        return None

    async def disconnected(self, socket_id: str, data: Mapping[str, object]) -> None:
        """Run the ``@on_disconnect`` hooks; failures are logged."""
        for hook in self.disconnect_hooks:
            try:
                await self._run(hook, (socket_id,), {}, data)
            except Exception:
                LOGGER.exception("%s failed for socket %s", hook.qualified_name, socket_id)

    async def call(self, socket_id: str, call: Call, data: Mapping[str, object]) -> str:
        """Run one call; the frame that answers it (a result, or an error)."""
        entrypoint = self.methods.get(call.method)
        self.calls.up()
        try:
            if entrypoint is None:
                raise MethodNotFound(f"no WebSocket method is called {call.method!r}")
            if self.draining:
                raise ServiceUnavailable("the service is shutting down; try another instance")
            entrypoint.check_arguments(socket_id, call.data)
            result = await self._run(entrypoint, (socket_id,), call.data, data)
            return encode_result(call.correlation_id, result)
        except Exception as exc:
            return self._error_frame(call.correlation_id, exc, entrypoint)
        finally:
            self.calls.down()

    async def _run(
        self,
        entrypoint: WebSocketRpc | ConnectionHook,
        args: tuple[object, ...],
        kwargs: Mapping[str, object],
        data: Mapping[str, object],
    ) -> object:
        container = entrypoint.container
        deadline = trio.current_time() + (entrypoint.timeout or math.inf)
        result: object = None
        async with container.worker_slot(deadline) as slot:
            with trio.CancelScope(deadline=deadline) as scope:
                result = await container.run_worker(entrypoint, args, kwargs, slot=slot, data=data)
        if scope.cancelled_caught:
            raise Timeout(f"{entrypoint.qualified_name} did not finish within its deadline")
        return result

    def _error_frame(
        self, correlation_id: object, exc: Exception, entrypoint: WebSocketRpc | None
    ) -> str:
        """SPEC §5.1: triosvc's own and expected exceptions as themselves, others hidden."""
        error = sole_exception(exc)
        where = entrypoint.qualified_name if entrypoint is not None else "WebSocket call"
        expected = entrypoint.expected_exceptions if entrypoint is not None else ()
        debug = entrypoint.debug if entrypoint is not None else self.settings.debug
        if isinstance(error, UnencodableValue):
            LOGGER.error("%s returned a value JSON cannot encode: %s", where, error)
            message = f"the result of {where} cannot be encoded as JSON"
            return encode_error(correlation_id, "InternalServerError", message, [message])
        if isinstance(error, TriosvcError):
            LOGGER.info("%s: %s: %s", where, type(error).__name__, error)
            return encode_error(correlation_id, *error_fields(error))
        if expected and isinstance(error, expected):
            LOGGER.warning("%s raised %s: %s", where, type(error).__name__, error)
            return encode_error(correlation_id, *error_fields(error))
        LOGGER.error("%s failed", where, exc_info=error)
        if debug:
            return encode_error(correlation_id, *error_fields(error))
        return encode_error(correlation_id, "InternalServerError", "internal server error", [])

    # -- stopping --------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        self.draining = True

    async def drain(self, deadline: float) -> None:
        """Let calls in flight finish by ``deadline``, then close every socket with 1001."""
        with trio.move_on_at(deadline):
            await self.calls.wait_zero()
        self.hub.close_all(GOING_AWAY)
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.connections.wait_zero()

"""The services' HTTP and WebSocket side as an ASGI app, for another server (SPEC §4.6).

::

    # app.py
    from triosvc.web import asgi_app
    from inventory_service import InventoryService

    app = asgi_app({"SHUTDOWN_GRACE_PERIOD": 5}, InventoryService)

    $ hypercorn -k trio --bind 127.0.0.1:8000 app:app

The app's ASGI lifespan runs the services: its startup sets their dependency providers
up and starts mounted apps, its shutdown stops them. Nothing binds a socket or speaks
HTTP here: the outside server does, with its own options (its timeouts, TLS, WebSocket
pings). It runs on trio only: ``hypercorn -k trio``, or any trio-based ASGI host.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..config import Config
from ..core.groups import sole_exception
from ..core.runner import ServiceRunner
from .asgi import refuse_websocket, send_response
from .responses import json_error
from .server import WebServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from werkzeug.wrappers import Response

    from .asgi import Receive, Scope, Send

__all__ = ["ServicesASGIApp", "asgi_app"]

LOGGER = logging.getLogger("triosvc.web")


def asgi_app(config: Config | Mapping[str, object] | None, *services: type) -> ServicesASGIApp:
    """The ASGI app serving ``services``' routes, WebSocket endpoint and mounts.

    Definition errors (a route clash, a bad config value) are raised here, when the
    module defining the app is imported. ``WEB_SERVER_ADDRESS`` and the engine settings
    are not used: the server running the app decides where and how it listens.
    """
    return ServicesASGIApp(config, services)


class ServicesASGIApp:
    """An ASGI 3 app whose lifespan runs a :class:`~triosvc.runners.ServiceRunner`.

    ``runner`` is the runner its next (or current) lifespan runs: replace dependencies
    or restrict entrypoints on it before the server starts. Without a lifespan (a host
    that does not run it), use ``async with app.running():`` around the serving.
    """

    def __init__(self, config: Config | Mapping[str, object] | None, services: tuple[type, ...]):
        self.config = config if isinstance(config, Config) else Config(config)
        self.services = services
        self.runner = self._new_runner()
        self._server: WebServer | None = None
        self._running = False

    def _new_runner(self) -> ServiceRunner:
        runner = ServiceRunner(self.config)
        for service_cls in self.services:
            runner.add_service(service_cls)
        return runner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        server = self._server
        if server is not None:
            await server.served_app(scope, receive, send)
            return
        if self._running:  # services without HTTP, WebSocket or mounts
            response = json_error(404, "NotFound", f"no route matches {scope.get('path')}")
        else:
            LOGGER.warning("a request arrived while the services are not running")
            response = json_error(
                503,
                "ServiceUnavailable",
                "the services are not running: the ASGI server must run this app's "
                "lifespan (or the host wrap the serving in app.running())",
                [("Retry-After", "1")],
            )
        await _refuse(scope, receive, send, response)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ServiceRunner]:
        """Run the services for the block: set up before it, stopped gracefully after it.

        What the app's lifespan does; for hosts that do not run a mounted app's
        lifespan (run it in theirs). A failure to start is raised as itself.
        """
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            raise RuntimeError(
                "triosvc's services run on trio: serve this app with a trio worker "
                "(hypercorn -k trio) or another trio-based host"
            ) from None
        if self._running:
            raise RuntimeError("this app's services are running already")
        if self.runner.started:  # a second lifespan (a test, a restarted host)
            self.runner = self._new_runner()
        runner = self.runner
        server = runner.shared_extension(WebServer)
        if isinstance(server, WebServer):
            server.listen = False  # the host's server speaks HTTP
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.serve)
                self._server = server if isinstance(server, WebServer) else None
                try:
                    yield runner
                finally:
                    # The runner drains (new requests get 503 meanwhile) and stops.
                    runner.request_stop()
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
        finally:
            self._server = None
            self._running = False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with self.running():
                started = True
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
        except Exception as exc:
            phase = "shutdown" if started else "startup"
            LOGGER.error("the services failed at %s", phase, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
            await send({"type": f"lifespan.{phase}.failed", "message": reason})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    if scope["type"] == "http":
        await send_response(send, response, str(scope["method"]))
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await refuse_websocket(scope, send, response)

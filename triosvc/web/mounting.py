"""Other ASGI apps under a URL prefix, beside the services' own routes (SPEC §4.6).

::

    from quart_trio import QuartTrio
    from triosvc.web import mount

    admin_app = QuartTrio(__name__)

    class InventoryService:
        name = "inventory"
        admin = mount("/admin", admin_app)

Requests under ``/admin/`` (HTTP and WebSocket) go to ``admin_app`` with ``root_path``
``/admin`` and the full path (as Starlette's ``Mount`` passes them, and Quart expects);
``/admin`` itself is redirected to ``/admin/``. The app's ASGI lifespan runs in the
web server's nursery: its startup completes before the server accepts connections, its
shutdown runs once HTTP has drained, and it stays alive in between, so that a QuartTrio
app's ``app.nursery`` and ``add_background_task`` work.

The services' limits are not the mounted app's: no worker slots, deadline, body limit,
CORS or middleware of the services apply to it (it has its own). What it shares with
them is the drain: its requests count as in flight, new ones get the 503 the services
give while stopping, and its WebSockets are closed with 1001.
"""

from __future__ import annotations

import logging
import math
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio
from werkzeug.wrappers import Response

from ..core.extensions import DependencyProvider
from ..core.gauge import Gauge
from ..exceptions import ConfigurationError, TriosvcError
from .asgi import refuse_websocket, send_response
from .responses import error_response, json_error
from .server import CLOSING_TIME, WebServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.context import WorkerContext
    from .asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Mount", "MountStartupError", "MountTable", "mount"]

LOGGER = logging.getLogger("triosvc.web.mount")

#: Seconds a mounted app's lifespan startup may take (hypercorn's default, too).
STARTUP_TIMEOUT = 60.0

#: Seconds the close frames of mounted WebSockets may take at shutdown.
CLOSE_TIMEOUT = 1.0

GOING_AWAY = 1001
INTERNAL_ERROR = 1011

#: ``/a/b``: segments without ``<``/``>`` (no converters), ``?``, ``#`` or whitespace.
_PREFIX = re.compile(r"(/[^/<>?#\s]+)+")


class MountStartupError(TriosvcError, RuntimeError):
    """A mounted app's lifespan startup failed, or did not finish in time."""


class Mount(DependencyProvider):
    """An ASGI app served under ``prefix``: a class attribute of a service.

    As a dependency, workers get the app itself (``self.admin`` is the Quart app).
    """

    shared_extension = WebServer

    def __init__(self, prefix: str, app: ASGIApp) -> None:
        self.prefix = prefix
        self.app = app
        #: ``prefix + "/"``: what the paths under the mount start with.
        self.under = prefix + "/"

    @property
    def where(self) -> str:
        """``Service.attribute`` for messages (``mount(...)`` before binding)."""
        container = getattr(self, "container", None)
        if container is None:
            return f"mount({self.prefix!r})"
        return f"{container.service_cls.__qualname__}.{self.attr_name}"

    def attach(self, server: WebServer) -> None:
        server.companion(MountTable).add(self)

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        return self.app

    def dependency_spec(self, blocking: bool) -> type:
        return type(self.app)

    def __repr__(self) -> str:
        return f"<Mount {self.prefix} {_describe(self.app)}>"


def mount(prefix: str, app: ASGIApp) -> Mount:
    """Serve the ASGI 3 ``app`` under ``prefix``, beside the service's routes.

    Args:
        prefix: a static path such as ``"/admin"`` (a trailing ``/`` is ignored);
            ``"/"`` is refused, and so are converters (``<...>``).
        app: an ASGI 3 application, e.g. a ``quart_trio.QuartTrio`` app: its lifespan
            runs in the web server's nursery, on trio.
    """
    where = f"mount({prefix!r}, ...)"
    if not isinstance(prefix, str):
        raise ConfigurationError(f"{where}: the prefix must be a string such as '/admin'")
    normal = prefix.rstrip("/")
    if not normal:
        raise ConfigurationError(
            f"{where}: mounting at the root would take every path from the services; "
            "mount under a prefix such as '/admin'"
        )
    segments = normal.split("/")[1:]
    if _PREFIX.fullmatch(normal) is None or any(s in (".", "..") for s in segments):
        raise ConfigurationError(
            f"{where}: the prefix must be a static path such as '/admin' or '/tools/admin' "
            "(starting with '/', no converters, '?', '#', '.' or '..' segments, or spaces)"
        )
    if isinstance(app, type) or not callable(app):
        raise ConfigurationError(
            f"{where}: expected an ASGI 3 application (an app instance or an async "
            f"function of scope, receive, send), got {app!r}"
        )
    return Mount(normal, app)


def _describe(app: object) -> str:
    """``QuartTrio 'admin'`` for an app instance, the name of a plain function."""
    if hasattr(app, "__qualname__"):  # functions have one, instances do not
        return str(app.__qualname__)
    name = getattr(app, "name", None)
    kind = type(app).__qualname__
    return f"{kind} {name!r}" if isinstance(name, str) else kind


class MountTable:
    """The mounts of one web server: a companion of :class:`WebServer`."""

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.debug = server.settings.debug
        self.mounts: list[Mount] = []
        #: One lifespan per distinct app (an app mounted twice starts once).
        self.lifespans: dict[int, _Lifespan] = {}
        self.grace_period = server.settings.shutdown_grace_period
        self.draining = False
        #: The mounted apps' open WebSockets, closed with 1001 on stop.
        self.sockets: set[_MountedSocket] = set()
        self.connections = Gauge()
        self._deadline = math.inf
        server.app.mounts = self

    # -- declaration ---------------------------------------------------------------------

    def add(self, mounted: Mount) -> None:
        """Add a mount; ConfigurationError if its prefix clashes with anything served."""
        prefix = mounted.prefix
        for other in self.mounts:
            if other.prefix == prefix:
                raise ConfigurationError(
                    f"{mounted.where}: {prefix} is already mounted by {other.where}; "
                    "one prefix serves one app"
                )
            if prefix.startswith(other.under) or other.prefix.startswith(mounted.under):
                raise ConfigurationError(
                    f"{mounted.where}: the mount at {prefix} and {other.where}'s at "
                    f"{other.prefix} nest; mounts may not nest (one app would hide the other)"
                )
        self.server.router.reserve(prefix, f"{mounted.where} mounts {_describe(mounted.app)}")
        if self.server.app.websocket is not None:
            self.check_path(self.server.settings.websocket_path, "WEBSOCKET_PATH", mounted)
        self.mounts.append(mounted)
        where = f"{prefix} ({mounted.where})"
        self.lifespans.setdefault(id(mounted.app), _Lifespan(mounted.app, where))

    def check_path(self, path: str, what: str, only: Mount | None = None) -> None:
        """ConfigurationError if ``path`` (the WebSocket endpoint's) lies under a mount."""
        for mounted in [only] if only is not None else self.mounts:
            if path == mounted.prefix or path.startswith(mounted.under):
                raise ConfigurationError(
                    f"{mounted.where}: {what} {path} lies under the mount at "
                    f"{mounted.prefix}; change one of them"
                )

    def routes(self) -> list[tuple[str, str, str]]:
        return [
            ("MOUNT", m.under, f"{m.container.name}.{m.attr_name} ({_describe(m.app)})")
            for m in self.mounts
        ]

    # -- serving -------------------------------------------------------------------------

    def find(self, path: str) -> Mount | None:
        """The mount serving ``path`` (a route path), if any."""
        for mounted in self.mounts:
            if path.startswith(mounted.under) or path == mounted.prefix:
                return mounted
        return None

    def _scope(self, mounted: Mount, scope: Scope, path: str) -> Scope:
        # ASGI (and Starlette, and Quart): root_path is where the app is mounted, and path
        # the full path, root_path included.
        root_path = str(scope.get("root_path", "")) + mounted.prefix
        child = {**scope, "root_path": root_path, "path": root_path + path[len(mounted.prefix) :]}
        lifespan = self.lifespans[id(mounted.app)]
        if lifespan.supported:  # ASGI's lifespan state: a shallow copy per request
            child["state"] = dict(lifespan.state)
        return child

    async def http(
        self, mounted: Mount, scope: Scope, path: str, receive: Receive, send: Send
    ) -> None:
        """Serve one HTTP request under ``mounted`` (the services' draining check is done)."""
        method = str(scope["method"])
        if path == mounted.prefix:
            # Apps route "/" under their root, not "": redirect as Starlette does (308,
            # as the services' own missing-slash redirects), the query string kept.
            location = quote(str(scope.get("root_path", "")) + mounted.under)
            query = scope.get("query_string")
            if isinstance(query, bytes) and query:
                location += "?" + query.decode("latin-1")
            response = Response(None, status=308, headers={"Location": location})
            response.headers.remove("Content-Type")
            await send_response(send, response, method)
            return
        exchange = _Exchange(receive, send)
        try:
            await mounted.app(self._scope(mounted, scope, path), exchange.receive, exchange.send)
        except Exception as exc:
            where = f"the app mounted at {mounted.prefix} ({mounted.where})"
            if exchange.started:
                # Too late for an error answer: ending short makes the engine close the
                # connection, so that the client sees the body is incomplete.
                LOGGER.error("%s failed after its response began", where, exc_info=exc)
                return
            await send_response(send, error_response(exc, handler=where, debug=self.debug), method)
            return
        if not exchange.started and not exchange.disconnected:
            LOGGER.error(
                "the app mounted at %s (%s) sent no answer to %s %s",
                mounted.prefix,
                mounted.where,
                method,
                path,
            )
            response = json_error(500, "InternalServerError", "internal server error")
            await send_response(send, response, method)

    async def websocket(
        self, mounted: Mount, scope: Scope, path: str, receive: Receive, send: Send
    ) -> None:
        """Serve one WebSocket under ``mounted``."""
        refusal: Response | None = None
        if self.draining:
            refusal = json_error(
                503,
                "ServiceUnavailable",
                "the service is shutting down; try another instance",
                [("Retry-After", "1")],
            )
        elif path == mounted.prefix:  # no redirect for a handshake: as Starlette, 404
            refusal = json_error(404, "NotFound", f"no WebSocket endpoint at {path}")
        if refusal is not None:
            await receive()  # websocket.connect
            await refuse_websocket(scope, send, refusal)
            return
        socket = _MountedSocket(scope, receive, send)
        self.sockets.add(socket)
        self.connections.up()
        try:
            await mounted.app(self._scope(mounted, scope, path), socket.receive, socket.send)
        except Exception as exc:
            LOGGER.error(
                "the app mounted at %s (%s) failed on a WebSocket",
                mounted.prefix,
                mounted.where,
                exc_info=exc,
            )
            await socket.fail()
        finally:
            self.sockets.discard(socket)
            self.connections.down()

    # -- lifecycle -----------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Start every mounted app's lifespan for the block; shut them down after it.

        The web server enters it before its engine accepts connections and leaves it
        once HTTP has drained. A startup that fails raises :class:`MountStartupError`.
        """
        started: list[_Lifespan] = []
        async with trio.open_nursery() as nursery:
            try:
                for lifespan in self.lifespans.values():
                    await nursery.start(lifespan.run)
                    await lifespan.startup()
                    started.append(lifespan)  # a failed startup gets no shutdown (ASGI)
                yield
            finally:
                # Last started, first stopped; within what is left of the grace period
                # (all of it when the server stops without a drain: a failed start).
                deadline = min(self._deadline, trio.current_time() + self.grace_period)
                with trio.move_on_at(deadline + CLOSING_TIME) as waiting:
                    for lifespan in reversed(started):
                        await lifespan.shutdown()
                if waiting.cancelled_caught:
                    LOGGER.error(
                        "mounted apps did not finish shutting down within the grace "
                        "period; cancelled"
                    )
                nursery.cancel_scope.cancel()

    def stop_accepting(self) -> None:
        self.draining = True

    async def drain(self, deadline: float) -> None:
        """Close the mounted apps' WebSockets with 1001 (their HTTP drains with the services')."""
        self._deadline = deadline
        with trio.move_on_after(CLOSE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for socket in list(self.sockets):
                    nursery.start_soon(socket.close, GOING_AWAY)
            await self.connections.wait_zero()  # the apps saw the disconnect and returned


class _Exchange:
    """One HTTP request to a mounted app: whether its answer began, whether the client left."""

    __slots__ = ("_receive", "_send", "disconnected", "started")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.started = False
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _MountedSocket:
    """One WebSocket of a mounted app, which the server can close with 1001 on stop.

    Closing sends the close frame and makes the app's pending (and next) ``receive()``
    give ``websocket.disconnect``; what the app sends afterwards goes nowhere. A lock
    keeps the app's sends and the server's close from interleaving.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._lock = trio.Lock()
        self._receiving: trio.CancelScope | None = None
        self.answered = False  # the handshake was accepted or refused
        self.accepted = False
        self.closed = False  # a close went out: nothing more does
        self.closing = False

    async def receive(self) -> Message:
        if not self.closing:
            with trio.CancelScope() as self._receiving:
                try:
                    return await self._receive()
                finally:
                    self._receiving = None
        return {"type": "websocket.disconnect", "code": GOING_AWAY}

    async def send(self, message: Message) -> None:
        async with self._lock:
            kind = message["type"]
            if self.closed and kind != "websocket.http.response.body":
                return
            if self.closing and kind == "websocket.accept":
                message = {"type": "websocket.close", "code": GOING_AWAY}  # refuse instead
                kind = "websocket.close"
            await self._send(message)
            if kind == "websocket.accept":
                self.answered = self.accepted = True
            elif kind in ("websocket.close", "websocket.http.response.start"):
                self.answered = self.closed = True

    async def close(self, code: int) -> None:
        """Close from the server's side (shutdown, or the app failed)."""
        self.closing = True
        async with self._lock:
            if self.accepted and not self.closed:
                self.closed = True
                await self._server_send({"type": "websocket.close", "code": code})
        # Only now: an app that returned before the close frame went out would have
        # the server drop the connection without one.
        if self._receiving is not None:
            self._receiving.cancel()

    async def fail(self) -> None:
        """The app raised: refuse the handshake with a 500, or close with 1011."""
        if not self.answered:
            error = json_error(500, "InternalServerError", "internal server error")
            async with self._lock:
                self.answered = self.closed = True
                await refuse_websocket(self._scope, self._server_send, error)
        elif not self.closed:
            await self.close(INTERNAL_ERROR)

    async def _server_send(self, message: Message) -> None:
        # The connection may be gone already; what the server sends on its own is
        # best effort and must not fail the drain (or the request's task).
        try:
            await self._send(message)
        except Exception as exc:
            LOGGER.debug("could not send %s on a mounted WebSocket: %r", message["type"], exc)


class _Lifespan:
    """One mounted app's ASGI lifespan, run as a server runs it, in a task of its own."""

    def __init__(self, app: ASGIApp, where: str) -> None:
        self.app = app
        #: ``/admin (Service.admin)``, for messages.
        self.where = where
        #: ASGI's lifespan state: what the app keeps there reaches its requests' scopes.
        self.state: dict[str, object] = {}
        #: False once the app showed it has no lifespan (it raised or returned at once).
        self.supported = True
        self._to_app, self._inbox = trio.open_memory_channel[dict[str, object]](2)
        self._answer: Message | None = None
        self._answered = trio.Event()
        self._ended = trio.Event()
        self._serving = False
        self._error: Exception | None = None

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await self.app({**scope, "state": self.state}, self._inbox.receive, self._send)
        except Exception as exc:
            self._error = exc
            if self._serving:
                LOGGER.error(
                    "the lifespan of the app mounted at %s failed while serving; its "
                    "background tasks have ended",
                    self.where,
                    exc_info=exc,
                )
        finally:
            self._ended.set()
            self._answered.set()

    async def _send(self, message: Message) -> None:
        if message["type"] not in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            raise RuntimeError(f"unexpected ASGI lifespan message {message['type']!r}")
        self._answer = message
        self._answered.set()

    async def _ask(self, kind: str) -> None:
        self._answer = None
        self._answered = trio.Event()
        if not self._ended.is_set():
            self._to_app.send_nowait({"type": f"lifespan.{kind}"})
            await self._answered.wait()

    async def startup(self) -> None:
        with trio.move_on_after(STARTUP_TIMEOUT) as waiting:
            await self._ask("startup")
        where = f"the app mounted at {self.where}"
        if waiting.cancelled_caught:
            raise MountStartupError(f"{where} did not finish starting within {STARTUP_TIMEOUT:g}s")
        answer = self._answer
        if answer is None:
            # Raising or returning before answering: no lifespan support (ASGI's rule;
            # hypercorn and uvicorn do the same). Its requests are served all the same.
            self.supported = False
            if self._error is not None:
                LOGGER.warning(
                    "%s does not support the ASGI lifespan (%s: %s); serving it without",
                    where,
                    type(self._error).__name__,
                    self._error,
                )
                LOGGER.debug("the lifespan error of %s", where, exc_info=self._error)
            return
        if answer["type"] == "lifespan.startup.failed":
            reason = str(answer.get("message") or "no reason given")
            raise MountStartupError(f"{where} failed to start: {reason}")
        self._serving = True

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._serving = False
        await self._ask("shutdown")
        # A QuartTrio app answers, then closes its nursery (its background tasks).
        await self._ended.wait()
        answer = self._answer
        if answer is not None and answer["type"] == "lifespan.shutdown.failed":
            LOGGER.error(
                "the app mounted at %s failed to shut down: %s",
                self.where,
                answer.get("message") or "no reason given",
            )
        elif answer is None and self._error is not None:
            LOGGER.error(
                "the app mounted at %s failed to shut down",
                self.where,
                exc_info=self._error,
            )

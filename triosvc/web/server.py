"""The HTTP server of a runner: one listening socket for every service's routes.

:class:`WebServer` is the shared extension the ``@http`` entrypoint names. It binds
the socket itself (so that a port in use is a clear configuration error and port 0
gives a real port before anything is served), then hands it to the configured
engine, behind the small seam of :mod:`triosvc.web.engines`.
"""

from __future__ import annotations

import errno
import socket
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from ..core.extensions import DependencyProvider, Entrypoint, SharedExtension
from ..exceptions import ConfigurationError
from .asgi import ServicesApp
from .engines import EngineOptions, get_engine
from .observability import Observability
from .routing import Router

if TYPE_CHECKING:
    from ..config import Address, Config
    from ..core.container import ServiceContainer
    from .asgi import ASGIApp

__all__ = ["WebAttachment", "WebCompanion", "WebServer", "bind_socket", "url_of"]

#: A connection silent this long while a request is due is dropped (SPEC §8).
SILENCE_TIMEOUT = 30.0

#: A peer that accepts none of the data sent to it for this long is dropped.
STALL_TIMEOUT = 30.0

BACKLOG = 1024


class WebAttachment(Protocol):
    """An entrypoint or provider that the web server serves (``@http``, the WebSocket layer)."""

    def attach(self, server: WebServer) -> None: ...


class WebCompanion(Protocol):
    """A component riding on the web server, such as the WebSocket endpoint.

    On stop it refuses new work at once, then drains: finishes what is in flight by
    ``deadline`` and closes its connections politely, before the engine stops.

    A companion may also have a ``lifespan()`` method returning an async context
    manager: the server enters it before the engine accepts connections and leaves it
    once the engine has stopped (the mounted apps' ASGI lifespans).
    """

    def stop_accepting(self) -> None: ...

    async def drain(self, deadline: float) -> None: ...

    def routes(self) -> list[tuple[str, str, str]]:
        """(kind, where, handler) rows for ``triosvc routes``."""
        ...


C = TypeVar("C", bound=WebCompanion)

#: Seconds past the grace period the engine keeps connections, so that companions can
#: still close theirs politely (WebSockets with 1001) once in-flight calls are done.
CLOSING_TIME = 1.0


class WebServer(SharedExtension):
    """Serves the routes of every service of one runner on one address."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings = config.settings
        self.router = Router()
        self.app = ServicesApp(self.router, self.settings)
        #: The access log, health answers and metrics, when any is on (None: all off).
        self.observability = Observability.of(self)
        #: What the engine serves: ``app``, behind the observability layer if there is one.
        self.served_app: ASGIApp = self.app if self.observability is None else self.observability
        #: The services this server serves something of, by name (for the metrics).
        self.containers: dict[str, ServiceContainer] = {}
        self.companions: dict[type[WebCompanion], WebCompanion] = {}
        self._stop = trio.Event()
        self._url: str | None = None
        #: False: another ASGI server serves ``app`` (``triosvc.web.asgi_app``); serve()
        #: binds nothing and runs no engine, only the lifespans and the drain.
        self.listen = True

    def add_entrypoint(self, entrypoint: Entrypoint) -> None:
        self._check_paths(entrypoint)
        _attachment(entrypoint).attach(self)
        self.containers[entrypoint.container.name] = entrypoint.container

    def add_provider(self, provider: DependencyProvider) -> None:
        self._check_paths(provider)
        _attachment(provider).attach(self)
        self.containers[provider.container.name] = provider.container

    def _check_paths(self, extension: Entrypoint | DependencyProvider) -> None:
        """ConfigurationError if a route or a mount would hide what observability answers."""
        if self.observability is None or not self.observability.paths:
            return
        from .handlers import HttpEntrypoint  # both import this module
        from .mounting import Mount

        where = f"{extension.container.service_cls.__qualname__}"
        if isinstance(extension, HttpEntrypoint):
            self.observability.check_route(extension.url, f"{where}.{extension.method_name}")
        elif isinstance(extension, Mount):
            self.observability.check_mount(extension.prefix, f"{where}.{extension.attr_name}")

    def companion(self, companion_cls: type[C]) -> C:
        """The server's one instance of ``companion_cls``, created on first use."""
        companion = self.companions.get(companion_cls)
        if companion is None:
            companion = self.companions[companion_cls] = companion_cls(self)  # type: ignore[call-arg]
        return companion  # type: ignore[return-value]

    @property
    def url(self) -> str | None:
        return self._url

    def routes(self) -> list[tuple[str, str, str]]:
        """Every HTTP route, the health and metrics paths, then what the companions serve
        (WebSocket methods)."""
        rows = self.router.routes()
        if self.observability is not None:
            rows.extend(self.observability.routes())
        for companion in self.companions.values():
            rows.extend(companion.routes())
        return rows

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        settings = self.settings
        sock = bind_socket(settings.address) if self.listen else None
        engine_stop = trio.Event()
        try:
            if sock is not None:
                self._url = url_of(sock, tls=settings.tls)
            async with AsyncExitStack() as lifespans:
                # Mounted apps start before the engine accepts (connections wait in the
                # backlog meanwhile) and stop after it has stopped.
                for companion in list(self.companions.values()):
                    lifespan = getattr(companion, "lifespan", None)
                    if lifespan is not None:
                        await lifespans.enter_async_context(lifespan())
                async with trio.open_nursery() as nursery:
                    if sock is not None:
                        await nursery.start(
                            partial(
                                get_engine(settings.engine),
                                self.served_app,
                                sock,
                                self._engine_options(),
                                shutdown_trigger=engine_stop.wait,
                            )
                        )
                    if self.observability is not None:
                        self.observability.serving = True  # readiness: 200 from now on
                    task_status.started()
                    await self._stop.wait()
                    deadline = trio.current_time() + settings.shutdown_grace_period
                    # The engine closes its listener and drains HTTP; companions drain
                    # beside it.
                    engine_stop.set()
                    async with trio.open_nursery() as draining:
                        for companion in self.companions.values():
                            draining.start_soon(companion.drain, deadline)
                    with trio.move_on_at(deadline + CLOSING_TIME):
                        await self.app.in_flight.wait_zero()
                    # Every answer is written and every WebSocket closed: what the engine
                    # may still wait for is idle connections and timers (hypercorn's pings
                    # outlive their sockets by up to an interval). Nothing is lost there.
                    nursery.cancel_scope.cancel()
        finally:
            if sock is not None:
                sock.close()  # a no-op once the engine has adopted and closed it
            self._url = None

    def _engine_options(self) -> EngineOptions:
        settings = self.settings
        timeouts = [float(e.timeout or 0) for e in self.router.entrypoints]
        read_timeout = max([SILENCE_TIMEOUT, *(t + 1 for t in timeouts)])
        heartbeat = settings.hub.heartbeat_interval if self.app.websocket else 0
        if heartbeat:
            # A WebSocket peer is dropped after two silent heartbeats; pongs count.
            read_timeout = max(read_timeout, 2 * heartbeat)
        return EngineOptions(
            graceful_timeout=settings.shutdown_grace_period + CLOSING_TIME,
            # A silent client is dropped after SILENCE_TIMEOUT, unless a handler may
            # legitimately keep it waiting for longer.
            read_timeout=read_timeout,
            max_header_size=16 * 1024,
            websocket_ping_interval=heartbeat or None,
            websocket_max_message_size=settings.hub.max_message_size,
            certfile=settings.certfile,
            keyfile=settings.keyfile,
        )

    def stop_accepting(self) -> None:
        self.app.draining = True
        for companion in self.companions.values():
            companion.stop_accepting()
        self._stop.set()


def _attachment(extension: object) -> WebAttachment:
    if not callable(getattr(extension, "attach", None)):
        raise TypeError(f"{extension!r} names WebServer but has no attach(server) method")
    return extension  # type: ignore[return-value]


def bind_socket(address: Address) -> socket.socket:
    """A listening TCP socket on ``address``; ConfigurationError if that cannot be."""
    where = f"WEB_SERVER_ADDRESS={address}"
    if address.fd is not None:
        return _inherited_socket(address.fd, where)
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"{where}: cannot resolve host {address.host!r}: {exc.strerror}"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; accepted sockets inherit it
            # A peer that takes nothing we send (a zero window) for this long is cut off:
            # a write to it would otherwise block forever, and a server that awaits its
            # connections at shutdown (hypercorn's writes are shielded) with it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(STALL_TIMEOUT * 1000))
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"{where}: address already in use (another process listens on port "
                f"{address.port}; choose another port, or 0 for a free one)"
            ) from None
        raise ConfigurationError(f"{where}: cannot listen there: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, *, tls: bool) -> str:
    """The URL clients reach the listening ``sock`` at."""
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


def _inherited_socket(fd: int, where: str) -> socket.socket:
    """The listening TCP socket a parent process handed down as file descriptor ``fd``."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigurationError(f"{where}: not an open socket: {exc.strerror}") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()  # not ours to close
        raise ConfigurationError(f"{where}: expected a TCP socket, got {sock.family.name}")
    if not listening:
        sock.detach()
        raise ConfigurationError(f"{where}: the socket is not listening")
    sock.setblocking(False)
    return sock

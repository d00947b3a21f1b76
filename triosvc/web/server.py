"""The HTTP server of a runner: one listening socket for every service's routes.

:class:`WebServer` is the shared extension the ``@http`` entrypoint names. It binds
the socket itself (so that a port in use is a clear configuration error and port 0
gives a real port before anything is served), then hands it to the configured
engine, behind the small seam of :mod:`triosvc.web.engines`.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

import trio

from ..core.extensions import Entrypoint, SharedExtension
from ..exceptions import ConfigurationError
from .asgi import ServicesApp
from .engines import EngineOptions, get_engine
from .routing import Router

if TYPE_CHECKING:
    from ..config import Address, Config

__all__ = ["WebServer", "bind_socket"]

#: A connection silent this long while a request is due is dropped (SPEC §8).
SILENCE_TIMEOUT = 30.0

BACKLOG = 1024


class WebServer(SharedExtension):
    """Serves the routes of every service of one runner on one address."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings = config.settings
        self.router = Router()
        self.app = ServicesApp(self.router, self.settings)
        self._shutdown = trio.Event()
        self._url: str | None = None

    def add_entrypoint(self, entrypoint: Entrypoint) -> None:
        from .handlers import HttpEntrypoint  # handlers name this class: import late

        if isinstance(entrypoint, HttpEntrypoint):
            self.router.add(entrypoint)

    @property
    def url(self) -> str | None:
        return self._url

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        settings = self.settings
        sock = bind_socket(settings.address)
        host, port = sock.getsockname()[:2]
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        timeouts = [float(e.timeout or 0) for e in self.router.entrypoints]
        options = EngineOptions(
            graceful_timeout=settings.shutdown_grace_period,
            # A silent client is dropped after SILENCE_TIMEOUT, unless a handler may
            # legitimately keep it waiting for longer.
            read_timeout=max([SILENCE_TIMEOUT, *(t + 1 for t in timeouts)]),
            max_header_size=16 * 1024,
        )
        serve = get_engine(settings.engine)
        try:
            await serve(
                self.app,
                sock,
                options,
                shutdown_trigger=self._shutdown.wait,
                task_status=task_status,
            )
        finally:
            self._url = None

    def stop_accepting(self) -> None:
        self.app.draining = True
        self._shutdown.set()


def bind_socket(address: Address) -> socket.socket:
    """A listening TCP socket on ``address``; ConfigurationError if that cannot be."""
    where = f"WEB_SERVER_ADDRESS={address}"
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

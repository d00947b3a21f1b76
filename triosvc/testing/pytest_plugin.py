"""The triosvc pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, for tests running under pytest-trio:

- ``web_config``: a config dict whose ``WEB_SERVER_ADDRESS`` is ``127.0.0.1:<free port>``;
  add keys to it before starting services;
- ``runner_factory``: ``runner = await runner_factory(config, ServiceA, ...)`` starts the
  services in the test's nursery; they are stopped after the test.
  ``await runner_factory(runner)`` starts a :class:`~triosvc.runners.ServiceRunner` built
  by hand (to replace dependencies or restrict entrypoints first: see
  :mod:`triosvc.testing.services`);
- ``web_session``: an ``httpx.AsyncClient`` whose base URL is the ``web_config`` server;
- ``websocket``: ``ws = await websocket()`` opens a WebSocket RPC client
  (:class:`triosvc.ws.client.WebSocketClient`) to that server's endpoint:
  ``await ws.rpc(method, **data)``, ``await ws.wait_for_event(name)``. Closed after the test;
- ``asgi_session``: an ``httpx.AsyncClient`` on ``httpx.ASGITransport`` over the app of the
  last runner ``runner_factory`` started (its web server's ``served_app``), in memory;
- ``memory_websocket``: ``ws = await memory_websocket()`` opens the same WebSocket client to
  that app in memory (:func:`triosvc.testing.memory.open_asgi_websocket_client`);
  ``memory_websocket(runner=...)`` picks another runner.

The in-memory two use no socket, so they work under ``autojump_clock`` (timeouts and worker
limits without real waiting); what the engine does (pings, frame size limits, TLS) is not
there.

After each test, ``replace_dependencies(ServiceClass, ...)`` is undone
(:func:`~triosvc.testing.services.restore_dependencies`), so that no test sees another's mocks.

With ``WEB_SERVER_CERTFILE`` in ``web_config`` they speak ``https://`` and ``wss://``
(``web_session`` does not check the certificate; give ``websocket(ssl_context=...)`` one
that trusts it).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest
import trio

from ..runners import ServiceRunner, run_services
from .services import restore_dependencies

if TYPE_CHECKING:
    from ..web.asgi import ASGIApp, Receive, Scope, Send
    from ..ws.client import WebSocketClient

RunnerFactory = Callable[..., Awaitable[ServiceRunner]]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (it may be taken again by the time it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def web_config() -> dict[str, object]:
    return {"WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}"}


@pytest.fixture
def _triosvc_runners() -> list[ServiceRunner]:
    """The runners runner_factory started in this test, in order (the in-memory clients')."""
    return []


@pytest.fixture
async def runner_factory(
    nursery: trio.Nursery, _triosvc_runners: list[ServiceRunner]
) -> AsyncIterator[RunnerFactory]:
    runners = _triosvc_runners

    async def start(
        config: Mapping[str, object] | ServiceRunner | None, *services: type
    ) -> ServiceRunner:
        runner: ServiceRunner
        if isinstance(config, ServiceRunner):
            if services:
                raise TypeError(
                    "runner_factory(runner) starts a runner built by hand: add its services "
                    "with runner.add_service() first"
                )
            runner = await nursery.start(config.serve)
        else:
            runner = await nursery.start(run_services, config, *services)
        runners.append(runner)
        return runner

    yield start
    for runner in reversed(runners):
        await runner.stop()
    runners.clear()


@pytest.fixture(autouse=True)
def _triosvc_restore_dependencies() -> Iterator[None]:
    yield
    restore_dependencies()


def _secure(config: Mapping[str, object]) -> bool:
    return config.get("WEB_SERVER_CERTFILE") is not None


@pytest.fixture
async def web_session(web_config: dict[str, object]) -> AsyncIterator[object]:
    import httpx

    address = str(web_config["WEB_SERVER_ADDRESS"])
    # verify=False: loopback, a test certificate is self-signed, and building a default
    # TLS context per client is slow.
    scheme = "https" if _secure(web_config) else "http"
    async with httpx.AsyncClient(base_url=f"{scheme}://{address}", verify=False) as session:
        yield session


@pytest.fixture
async def websocket(
    web_config: dict[str, object], nursery: trio.Nursery
) -> AsyncIterator[Callable[..., Awaitable[WebSocketClient]]]:
    from ..ws.client import open_websocket_client

    address = str(web_config["WEB_SERVER_ADDRESS"])
    path = str(web_config.get("WEBSOCKET_PATH", "/ws"))
    scheme = "wss" if _secure(web_config) else "ws"
    done = trio.Event()

    # Each client lives in a task of the test's nursery: its own nursery cannot be entered
    # in the fixture's task and left in the test's.
    async def hold(options: dict[str, object], *, task_status: trio.TaskStatus[object]) -> None:
        async with open_websocket_client(f"{scheme}://{address}{path}", **options) as client:  # type: ignore[arg-type]
            task_status.started(client)
            await done.wait()

    async def open_client(**options: object) -> WebSocketClient:
        client: WebSocketClient = await nursery.start(hold, options)
        return client

    yield open_client
    done.set()


def _last_web_runner(runners: list[ServiceRunner]) -> ServiceRunner:
    from ..web.server import WebServer

    for runner in reversed(runners):
        if runner.shared_extension(WebServer) is not None:
            return runner
    raise RuntimeError(
        "no runner with a web server started yet: start one with runner_factory first "
        "(or pass runner= to memory_websocket)"
    )


@pytest.fixture
async def asgi_session(_triosvc_runners: list[ServiceRunner]) -> AsyncIterator[object]:
    import httpx

    from .memory import HOST, served_app

    # The runner starts in the test, after this fixture: the app is looked up per request.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await served_app(_last_web_runner(_triosvc_runners))(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as session:
        yield session


@pytest.fixture
async def memory_websocket(
    _triosvc_runners: list[ServiceRunner], nursery: trio.Nursery
) -> AsyncIterator[Callable[..., Awaitable[WebSocketClient]]]:
    from ..web.server import WebServer
    from .memory import open_asgi_websocket_client

    done = trio.Event()

    async def hold(
        app: ASGIApp, path: str, options: dict[str, object], *, task_status: trio.TaskStatus[object]
    ) -> None:
        async with open_asgi_websocket_client(app, path, **options) as client:  # type: ignore[arg-type]
            task_status.started(client)
            await done.wait()

    async def open_client(
        *, runner: ServiceRunner | None = None, path: str | None = None, **options: object
    ) -> WebSocketClient:
        server = (runner or _last_web_runner(_triosvc_runners)).shared_extension(WebServer)
        if not isinstance(server, WebServer):
            raise ValueError(f"{runner!r} runs no web server")
        client: WebSocketClient = await nursery.start(
            hold, server.served_app, path or server.app.websocket_path, options
        )
        return client

    yield open_client
    done.set()

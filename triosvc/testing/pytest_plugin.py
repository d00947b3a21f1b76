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
  ``await ws.rpc(method, **data)``, ``await ws.wait_for_event(name)``. Closed after the test.

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
async def runner_factory(nursery: trio.Nursery) -> AsyncIterator[RunnerFactory]:
    runners: list[ServiceRunner] = []

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

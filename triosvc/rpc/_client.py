"""Standalone clients: calling services from code that is not a service.

::

    async with open_rpc_client("memory://") as client:          # trio code
        user = await client.users.get_user(1)
        user = await client.call("users", "get_user", 1)

    with rpc_client("memory://") as client:                     # a script, or any thread
        user = client.users.get_user(1)

The blocking form runs trio in a background thread that it starts on entry and joins on
exit; each call blocks the calling thread until the reply (``trio.from_thread.run``).
With the memory transport, the services must run in the same process (in another
thread's trio run, say): a broker is only shared within a process.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Final

import attrs
import trio

from ..config import Config
from ..core.context import CALL_ID_STACK_KEY, CALL_ID_STACK_LIMIT
from ..core.options import timeout_seconds
from ..exceptions import ServiceUnavailable
from ._proxy import BlockingServiceProxy, Caller, ServiceProxy
from .transport import Transport, open_transport

__all__ = ["BlockingRpcClient", "RpcClient", "open_rpc_client", "rpc_client"]

#: How a standalone client's calls start the call-id stack: ``rpc_client.<uuid>``.
CLIENT_CALL_ID_PREFIX: Final = "rpc_client"

ConfigLike = Config | Mapping[str, object] | str | None


def _config(config: ConfigLike) -> Config:
    """A validated config from a Config, a mapping, a broker URL, or None (defaults)."""
    if isinstance(config, str):
        return Config({"BROKER_URL": config})
    return config if isinstance(config, Config) else Config(config)


class RpcClient:
    """Calls services from trio code outside any service; see :func:`open_rpc_client`.

    ``await client.<service>.<method>(*args, **kwargs)``, or
    ``await client.call(service, method, *args, **kwargs)``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float,
        context_data: Mapping[str, object] | None = None,
    ) -> None:
        self._transport: Transport | None = transport
        self._context_data = dict(context_data or {})
        self.caller = Caller(self._connect, timeout, self._context)

    async def _connect(self, deadline: float) -> Transport:
        if self._transport is None:
            raise ServiceUnavailable("this RPC client is closed")
        return self._transport

    def _context(self) -> dict[str, object]:
        """The client's context data, with a call-id stack that starts with this call."""
        data = dict(self._context_data)
        parents = data.get(CALL_ID_STACK_KEY)
        stack = [str(p) for p in parents] if isinstance(parents, list | tuple) else []
        stack.append(f"{CLIENT_CALL_ID_PREFIX}.{uuid.uuid4()}")
        data[CALL_ID_STACK_KEY] = stack[-CALL_ID_STACK_LIMIT:]
        return data

    def close(self) -> None:
        self._transport = None

    def __getattr__(self, service: str) -> ServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self.caller, service)

    async def call(self, service: str, method: str, /, *args: object, **kwargs: object) -> Any:
        """Call ``service.method(*args, **kwargs)`` and return its result."""
        return await self.caller.call(service, method, args, kwargs)


@asynccontextmanager
async def open_rpc_client(
    config: ConfigLike = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - each call's timeout, not this function's
    context_data: Mapping[str, object] | None = None,
) -> AsyncIterator[RpcClient]:
    """``async with open_rpc_client(config_or_broker_url) as client``: call services.

    Args:
        config: a config (mapping or :class:`~triosvc.config.Config`) whose
            ``BROKER_URL`` and ``RPC_TIMEOUT`` to use, or a broker URL; None: the
            defaults (``memory://``, 30 s).
        timeout: seconds to wait for each reply, instead of ``RPC_TIMEOUT``.
        context_data: context data sent with every call (each call adds its own id to
            its call-id stack).

    Raises:
        ConfigurationError: a bad config or broker URL.
    """
    settings = _config(config).settings
    seconds = timeout_seconds(timeout, "open_rpc_client(timeout=)") or settings.rpc_timeout
    async with open_transport(settings.broker_url) as transport:
        client = RpcClient(transport, timeout=seconds, context_data=context_data)
        try:
            yield client
        finally:
            client.close()


class BlockingRpcClient:
    """Calls services from plain (non-trio) code; see :func:`rpc_client`.

    ``client.<service>.<method>(*args, **kwargs)`` returns the result, as does
    ``client.call(service, method, *args, **kwargs)``. Safe to use from several threads.
    """

    def __init__(self, client: RpcClient, trio_token: trio.lowlevel.TrioToken) -> None:
        self._client = client
        self._token = trio_token

    def __getattr__(self, service: str) -> BlockingServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return BlockingServiceProxy(self._client.caller, service, self._token)

    def call(self, service: str, method: str, /, *args: object, **kwargs: object) -> Any:
        """Call ``service.method(*args, **kwargs)`` and return its result."""
        return getattr(BlockingServiceProxy(self._client.caller, service, self._token), method)(
            *args, **kwargs
        )


@attrs.define
class _Host:
    """The background thread's side of a blocking client."""

    started: queue.SimpleQueue[BaseException | None] = attrs.Factory(queue.SimpleQueue)
    client: RpcClient | None = None
    token: trio.lowlevel.TrioToken | None = None
    stop: trio.Event | None = None
    failure: BaseException | None = None


@contextmanager
def rpc_client(
    config: ConfigLike = None,
    *,
    timeout: float | None = None,
    context_data: Mapping[str, object] | None = None,
) -> Iterator[BlockingRpcClient]:
    """``with rpc_client(config_or_broker_url) as client``: call services from a script.

    Takes the arguments of :func:`open_rpc_client`. Runs trio in a background thread,
    started here and joined on leaving the block. Not for trio code: it would block the
    event loop (use :func:`open_rpc_client` there).

    Raises:
        RuntimeError: called from inside a trio run.
        ConfigurationError: a bad config or broker URL.
    """
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "rpc_client() blocks its thread; in trio code use `async with open_rpc_client()`"
        )
    settings_config = _config(config)  # a bad config fails here, before any thread starts
    host = _Host()

    async def serve() -> None:
        async with open_rpc_client(
            settings_config, timeout=timeout, context_data=context_data
        ) as client:
            host.client = client
            host.token = trio.lowlevel.current_trio_token()
            host.stop = trio.Event()
            host.started.put(None)
            await host.stop.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:
            host.failure = exc
        finally:
            host.started.put(host.failure)  # unblocks the caller if serve() never started

    thread = threading.Thread(target=run, name="triosvc-rpc-client", daemon=True)
    thread.start()
    failure = host.started.get()
    if failure is not None or host.client is None or host.token is None:
        thread.join()
        raise failure or RuntimeError("the RPC client's thread ended before it started")
    try:
        yield BlockingRpcClient(host.client, host.token)
    finally:
        stop = host.stop
        assert stop is not None
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(stop.set, trio_token=host.token)
        thread.join()
    if host.failure is not None:
        raise host.failure

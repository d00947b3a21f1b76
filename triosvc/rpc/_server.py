"""The RPC server of a runner: its ``@rpc`` services on the broker, and its connection.

One :class:`RpcServer` per runner (the shared extension that ``@rpc`` and ``RpcProxy``
name) opens the transport of ``BROKER_URL`` once. It registers each service that has
``@rpc`` methods as a live instance, and pulls that service's calls whenever the service
has fewer than ``WEB_SERVER_MAX_WORKERS`` of them running: each call is a worker under the
service's worker slots, with the deadline ``min(the caller's deadline, now + timeout)``
(``timeout``: the method's ``timeout=`` or ``WEB_SERVER_TIMEOUT``).

Stopping: :meth:`RpcServer.stop_accepting` closes every inbox at once (new calls go to
other instances, or fail with ``UnknownService``); calls in flight finish within
``SHUTDOWN_GRACE_PERIOD``, and those still running then are cancelled (their callers get
``ServiceUnavailable``). The connection itself stays open until the runner's workers that
hold an ``RpcProxy`` have ended (within the same grace period), since an HTTP request
still draining may call another service.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio

from ..core.extensions import SharedExtension
from ..core.gauge import Gauge
from ..core.groups import sole_exception
from ..exceptions import (
    ConfigurationError,
    MethodNotFound,
    RpcTimeout,
    ServiceUnavailable,
    TriosvcError,
)
from ._codec import UnencodableValue, decode_call, encode_error, encode_result
from .transport import open_transport

if TYPE_CHECKING:
    from ..config import Config
    from ..core.container import ServiceContainer
    from ..core.extensions import DependencyProvider, Entrypoint
    from ._entrypoint import RpcEntrypoint
    from .transport import Delivery, Inbox, Transport

__all__ = ["RpcServer", "RpcServerStatistics"]

LOGGER = logging.getLogger("triosvc.rpc")

#: How long answering a call may take once the server has given up on it (shielded).
REPLY_TIMEOUT = 5.0


@attrs.frozen
class RpcServerStatistics:
    """A snapshot of a runner's RPC server."""

    services: tuple[str, ...]
    calls_in_flight: int


@attrs.define(eq=False)
class _Served:
    """A service with ``@rpc`` methods, as this runner serves it."""

    name: str
    container: ServiceContainer
    methods: dict[str, RpcEntrypoint] = attrs.Factory(dict)


class RpcServer(SharedExtension):
    """Serves the runner's ``@rpc`` methods and connects its ``RpcProxy`` dependencies."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings = config.settings
        self.broker_url = self.settings.broker_url
        self.services: dict[str, _Served] = {}
        #: Containers with an RpcProxy; the connection outlives their workers.
        self.proxy_containers: list[ServiceContainer] = []
        #: The connection to the broker while the server serves; None before and after.
        self.transport: Transport | None = None
        self.calls = Gauge()
        self._connected = trio.Event()
        self._closed = False
        self._stopping = False
        self._stop = trio.Event()
        self._inboxes: list[Inbox] = []
        self._deadline = math.inf

    # -- declaration --------------------------------------------------------------------

    def add_entrypoint(self, entrypoint: Entrypoint) -> None:
        from ._entrypoint import RpcEntrypoint

        if not isinstance(entrypoint, RpcEntrypoint):
            raise TypeError(f"RpcServer serves @rpc methods, not {entrypoint!r}")
        container = entrypoint.container
        served = self.services.get(container.name)
        if served is None:
            served = self.services[container.name] = _Served(container.name, container)
        if entrypoint.method_name in served.methods:
            raise ConfigurationError(
                f"{container.service_cls.__qualname__}.{entrypoint.method_name}: @rpc is "
                "applied twice; use it once per method"
            )
        served.methods[entrypoint.method_name] = entrypoint

    def add_provider(self, provider: DependencyProvider) -> None:
        from ._proxy import RpcProxy

        if not isinstance(provider, RpcProxy):
            raise TypeError(f"RpcServer connects RpcProxy dependencies, not {provider!r}")
        provider.attach(self)
        if provider.container not in self.proxy_containers:
            self.proxy_containers.append(provider.container)

    def routes(self) -> list[tuple[str, str, str]]:
        """("RPC", "<service>.<method>", handler) rows for ``triosvc routes``."""
        return [
            ("RPC", f"{served.name}.{name}", entrypoint.qualified_name)
            for served in self.services.values()
            for name, entrypoint in served.methods.items()
        ]

    def statistics(self) -> RpcServerStatistics:
        return RpcServerStatistics(services=tuple(self.services), calls_in_flight=self.calls.value)

    # -- the connection -----------------------------------------------------------------

    async def connection(self, deadline: float) -> Transport:
        """The runner's connection to the broker, waiting until ``deadline`` for it.

        Raises:
            ServiceUnavailable: the runner is not connected (yet, or any more).
        """
        if self.transport is None and not self._closed:
            with trio.move_on_at(deadline):
                await self._connected.wait()
        if self.transport is None:
            state = "has stopped" if self._closed else "is not connected yet"
            raise ServiceUnavailable(f"the runner's connection to {self.broker_url} {state}")
        return self.transport

    # -- serving ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with open_transport(self.broker_url) as transport:
                self.transport = transport
                self._connected.set()
                async with trio.open_nursery() as calls:
                    for served in self.services.values():
                        await calls.start(self._consume, transport, served, calls)
                    task_status.started()
                    await self._stop.wait()
                    # Consumers end as their inboxes close; calls in flight get the
                    # grace period.
                    calls.cancel_scope.deadline = self._deadline
                # Workers that may still call other services (HTTP requests draining,
                # threads of timed-out calls) keep the connection until they end.
                with trio.move_on_at(self._deadline):
                    for container in self.proxy_containers:
                        await container.wait_idle()
        finally:
            self.transport = None
            self._closed = True
            self._connected.set()  # callers waiting for a connection fail at once

    async def _consume(
        self,
        transport: Transport,
        served: _Served,
        calls: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Take ``served``'s calls, at most as many at once as it has worker slots."""
        capacity = served.container.max_workers
        async with transport.register(served.name, capacity=capacity) as inbox:
            self._inboxes.append(inbox)
            if self._stopping:
                inbox.close()
            task_status.started()
            free = trio.Semaphore(capacity)
            while True:
                await free.acquire()
                try:
                    delivery = await inbox.receive()
                except trio.EndOfChannel:
                    return
                self.calls.up()
                calls.start_soon(self._handle, served, delivery, free)

    async def _handle(self, served: _Served, delivery: Delivery, free: trio.Semaphore) -> None:
        try:
            try:
                reply = await self._run(served, delivery)
            except trio.Cancelled:
                # The server gave up on the call (grace period over, or killed).
                error = ServiceUnavailable(f"{served.name!r} stopped before the call finished")
                with trio.CancelScope(shield=True) as shielded:
                    shielded.deadline = trio.current_time() + REPLY_TIMEOUT
                    await self._reply(delivery, encode_error(error))
                raise
            await self._reply(delivery, reply)
        finally:
            free.release()
            self.calls.down()

    async def _reply(self, delivery: Delivery, payload: str) -> None:
        try:
            await delivery.reply(payload)
        except Exception:
            LOGGER.exception("could not send an RPC reply")

    async def _run(self, served: _Served, delivery: Delivery) -> str:
        """Run one call; the payload that answers it (a result, or an error)."""
        now = trio.current_time()
        entrypoint: RpcEntrypoint | None = None
        where = f"{served.name}.<unknown>"
        try:
            call = decode_call(delivery.payload)
            where = f"{served.name}.{call.method}"
            entrypoint = served.methods.get(call.method)
            if entrypoint is None:
                raise MethodNotFound(f"service {served.name!r} has no @rpc method {call.method!r}")
            entrypoint.check_arguments(call.args, call.kwargs)
            timeout = entrypoint.timeout if entrypoint.timeout is not None else math.inf
            deadline = min(delivery.deadline, now + timeout)
            if deadline <= now:
                raise RpcTimeout(f"{where}: the caller's deadline passed before the call began")
            container = served.container
            async with container.worker_slot(deadline) as slot:
                with trio.CancelScope(deadline=deadline) as scope:
                    result = await container.run_worker(
                        entrypoint, call.args, call.kwargs, slot=slot, data=call.context
                    )
            if scope.cancelled_caught:
                reason = (
                    "the caller's RPC timeout"
                    if deadline == delivery.deadline
                    else f"its timeout of {timeout:g}s"
                )
                raise RpcTimeout(f"{where} was cancelled at {reason}")
            return encode_result(where, result)
        except Exception as exc:
            return self._error_reply(exc, entrypoint, where)

    def _error_reply(self, exc: Exception, entrypoint: RpcEntrypoint | None, where: str) -> str:
        """Log the failure as it deserves, and encode it for the caller."""
        error = sole_exception(exc)
        expected = entrypoint.expected_exceptions if entrypoint is not None else ()
        if isinstance(error, UnencodableValue):
            LOGGER.error("%s returned a value JSON cannot hold: %s", where, error)
            return encode_error(TypeError(str(error)))
        if isinstance(error, TriosvcError):
            LOGGER.info("%s: %s: %s", where, type(error).__name__, error)
        elif expected and isinstance(error, expected):
            LOGGER.warning("%s raised %s: %s", where, type(error).__name__, error)
        else:
            LOGGER.error("%s failed", where, exc_info=error)
        return encode_error(error)

    def stop_accepting(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._deadline = trio.current_time() + self.settings.shutdown_grace_period
        for inbox in self._inboxes:
            inbox.close()
        self._stop.set()

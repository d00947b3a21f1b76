"""Calling services: ``RpcProxy`` for workers, and the proxies both it and clients hand out.

A :class:`Caller` makes every call, for a worker and for a standalone client alike:

1. it encodes the call (a TypeError naming the argument JSON cannot hold, before anything
   is sent);
2. it sends it through the transport, giving up at ``now + timeout`` (``RpcTimeout``); the
   deadline that travels with the call is that, or the calling worker's own deadline if
   it comes first, so that the callee stops when nobody waits for its answer;
3. it decodes the reply: the result, or the remote exception rebuilt (as its own class if
   registered, else as ``RemoteError``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..core.extensions import DependencyProvider
from ..core.options import timeout_seconds
from ..exceptions import ConfigurationError, RpcTimeout, ServiceUnavailable
from ._codec import decode_reply, encode_call
from ._errors import rebuild_error
from ._server import RpcServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..core.context import WorkerContext
    from .transport import Transport

#: Seconds past a call's deadline after which the caller stops waiting for a transport
#: that failed to honour it.
BACKSTOP = 1.0

__all__ = [
    "BlockingMethodProxy",
    "BlockingServiceProxy",
    "Caller",
    "MethodProxy",
    "RpcProxy",
    "ServiceProxy",
]


class Caller:
    """Makes RPC calls for one worker, or for one standalone client.

    Args:
        connect: ``await connect(deadline)`` gives the transport (waiting for it to
            connect no later than ``deadline``).
        timeout: seconds to wait for each reply (``RPC_TIMEOUT`` by default).
        context: gives the context data to send with each call (with the call-id stack).
        worker_deadline: the calling worker's deadline, for callers whose calls run
            outside the worker's cancel scope (blocking workers: their calls run in
            trio through ``trio.from_thread``).
    """

    __slots__ = ("_connect", "_context", "timeout", "worker_deadline")

    def __init__(
        self,
        connect: Callable[[float], Awaitable[Transport]],
        timeout: float,
        context: Callable[[], Mapping[str, object]],
        worker_deadline: float = math.inf,
    ) -> None:
        self._connect = connect
        self._context = context
        self.timeout = timeout
        self.worker_deadline = worker_deadline

    async def call(
        self, service: str, method: str, args: tuple[object, ...], kwargs: Mapping[str, object]
    ) -> Any:
        """Call ``service.method(*args, **kwargs)``; its result, or its exception.

        Raises:
            TypeError: an argument JSON cannot hold (nothing was sent).
            UnknownService: the service has no live instance.
            ServiceUnavailable: the call could not be delivered in time, or the
                instance that had it stopped before finishing it.
            RpcTimeout: no reply within the timeout.
            RemoteError: the remote method raised (or a registered class, rebuilt).
        """
        where = f"{service}.{method}"
        payload = encode_call(where, method, args, kwargs, self._context())
        now = trio.current_time()
        give_up = min(now + self.timeout, self.worker_deadline)
        deadline = min(give_up, trio.current_effective_deadline())
        # The transport honours the deadline (its error says how far the call got); this
        # scope is a backstop should it not.
        timed_out = False
        with trio.move_on_at(give_up + BACKSTOP) as backstop:
            try:
                transport = await self._connect(deadline)
                reply = await transport.call(service, payload, deadline)
            except RpcTimeout:
                timed_out = True
        if timed_out or backstop.cancelled_caught:
            if give_up == self.worker_deadline:
                raise RpcTimeout(f"{where}: the calling worker's deadline passed")
            raise RpcTimeout(f"{where} did not answer within {self.timeout:g}s (RPC_TIMEOUT)")
        success, value = decode_reply(reply)
        if success:
            return value
        error = rebuild_error(value)
        error.add_note(f"raised remotely, by {where}")
        raise error


class MethodProxy:
    """``await proxy.method(*args, **kwargs)``: one remote method, for async code."""

    __slots__ = ("_caller", "_method", "_service")

    def __init__(self, caller: Caller, service: str, method: str) -> None:
        self._caller = caller
        self._service = service
        self._method = method

    async def __call__(self, *args: object, **kwargs: object) -> Any:
        return await self._caller.call(self._service, self._method, args, kwargs)

    def __repr__(self) -> str:
        return f"<MethodProxy {self._service}.{self._method}>"


class BlockingMethodProxy:
    """``proxy.method(*args, **kwargs)``: one remote method, for code in a thread.

    The call runs in trio through ``trio.from_thread.run``: in the trio run that started
    the thread (a blocking worker's), or in the one ``trio_token`` names (a client's).
    """

    __slots__ = ("_caller", "_method", "_service", "_token")

    def __init__(
        self,
        caller: Caller,
        service: str,
        method: str,
        trio_token: trio.lowlevel.TrioToken | None = None,
    ) -> None:
        self._caller = caller
        self._service = service
        self._method = method
        self._token = trio_token

    def __call__(self, *args: object, **kwargs: object) -> Any:
        call = partial(self._caller.call, self._service, self._method, args, kwargs)
        try:
            if self._token is None:
                return trio.from_thread.run(call)
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise ServiceUnavailable(
                f"{self._service}.{self._method}: the trio run this proxy calls through has "
                "ended (a closed client, or a stopped runner)"
            ) from None

    def __repr__(self) -> str:
        return f"<BlockingMethodProxy {self._service}.{self._method}>"


def _method_name(name: str) -> str:
    # Private names are not a service's API, and probes (copy, pickle, mocks) ask for
    # dunder names: neither may turn into a remote call.
    if name.startswith("_"):
        raise AttributeError(f"{name!r}: remote methods are public names; use .call() otherwise")
    return name


class ServiceProxy:
    """``await proxy.<method>(...)`` calls a method of the service ``service_name``."""

    __slots__ = ("_caller", "service_name")

    def __init__(self, caller: Caller, service_name: str) -> None:
        self._caller = caller
        self.service_name = service_name

    def __getattr__(self, name: str) -> MethodProxy:
        return MethodProxy(self._caller, self.service_name, _method_name(name))

    def __repr__(self) -> str:
        return f"<ServiceProxy {self.service_name}>"


class BlockingServiceProxy:
    """``proxy.<method>(...)`` returns the result: for blocking workers and scripts."""

    __slots__ = ("_caller", "_token", "service_name")

    def __init__(
        self,
        caller: Caller,
        service_name: str,
        trio_token: trio.lowlevel.TrioToken | None = None,
    ) -> None:
        self._caller = caller
        self._token = trio_token
        self.service_name = service_name

    def __getattr__(self, name: str) -> BlockingMethodProxy:
        method = _method_name(name)
        return BlockingMethodProxy(self._caller, self.service_name, method, self._token)

    def __repr__(self) -> str:
        return f"<BlockingServiceProxy {self.service_name}>"


class RpcProxy(DependencyProvider):
    """Injects a proxy to the service ``service_name``: ``self.users.get_user(1)``.

    In an ``async def`` worker, ``await self.users.get_user(1, verbose=True)``; in a
    blocking (``def``) one, ``self.users.get_user(1)`` returns the value. Each call
    carries the worker's context data and call-id stack, and waits ``timeout`` seconds
    for its reply (``RPC_TIMEOUT`` by default) before raising ``RpcTimeout``.
    """

    shared_extension = RpcServer

    server: RpcServer
    #: The timeout in force once bound (``timeout=``, or RPC_TIMEOUT).
    call_timeout: float

    def __init__(self, service_name: str, *, timeout: float | None = None) -> None:
        candidate: object = service_name
        if not isinstance(candidate, str) or not candidate:
            raise ConfigurationError(
                f"RpcProxy(service_name): expected the name of a service, got {candidate!r}"
            )
        self.service_name = service_name
        self.timeout = timeout_seconds(timeout, f"RpcProxy({service_name!r})")

    def attach(self, server: RpcServer) -> None:
        """Called by the runner's RpcServer, which connects to the broker for all proxies."""
        self.server = server
        self.call_timeout = (
            self.timeout if self.timeout is not None else server.settings.rpc_timeout
        )

    async def get_dependency(
        self, worker_ctx: WorkerContext
    ) -> ServiceProxy | BlockingServiceProxy:
        if worker_ctx.blocking:
            # The worker's calls run outside its cancel scope: they carry its deadline.
            caller = Caller(
                self.server.connection,
                self.call_timeout,
                lambda: worker_ctx.context_data,
                worker_deadline=trio.current_effective_deadline(),
            )
            return BlockingServiceProxy(caller, self.service_name)
        caller = Caller(self.server.connection, self.call_timeout, lambda: worker_ctx.context_data)
        return ServiceProxy(caller, self.service_name)

    def __repr__(self) -> str:
        where = getattr(self, "attr_name", "<unbound>")
        return f"<RpcProxy {where} -> {self.service_name}>"

"""The ``@rpc`` entrypoint: a service method other services call through ``RpcProxy``.

::

    class UserService:
        name = "users"

        @rpc
        async def get_user(self, user_id, verbose=False):
            ...

        @rpc(expected_exceptions=KeyError, timeout=5)
        def lookup(self, key):  # a blocking method runs in a thread
            ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Self, TypeVar

from ..core.extensions import Entrypoint
from ..core.options import method_decorator
from ..exceptions import IncorrectSignature
from ._server import RpcServer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.container import ServiceContainer

__all__ = ["RpcEntrypoint", "rpc"]

F = TypeVar("F", bound=Callable[..., object])


class RpcEntrypoint(Entrypoint):
    """An ``@rpc`` method, served by the runner's :class:`RpcServer`."""

    shared_extension = RpcServer

    def __init__(
        self,
        *,
        expected_exceptions: tuple[type[BaseException], ...] = (),
        timeout: float | None = None,
    ) -> None:
        super().__init__(expected_exceptions=expected_exceptions)
        #: Seconds a call may run; None until bound: then ``WEB_SERVER_TIMEOUT`` by default.
        self.timeout = timeout

    signature: inspect.Signature

    def bind(self, container: ServiceContainer, method_name: str) -> Self:
        bound = super().bind(container, method_name)
        if self.timeout is None:
            bound.timeout = container.config.settings.timeout
        bound.signature = inspect.signature(bound.method)
        return bound

    def check_arguments(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> None:
        """Raise IncorrectSignature when the arguments do not fit the method."""
        try:
            self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(f"{self.qualified_name}: {exc}") from None


rpc = method_decorator(
    "rpc",
    RpcEntrypoint,
    """Expose a method to other services: ``await self.<proxy>.<method>(*args, **kwargs)``.

    Bare (``@rpc``) or with options. Every exception a call raises reaches the caller
    (as itself if its class is registered there, else as RemoteError);
    ``expected_exceptions`` are the ones that are part of the method's contract: they
    are logged as a warning, without a traceback, instead of as an error. ``timeout``
    replaces ``WEB_SERVER_TIMEOUT`` for this method; a call also ends at its caller's
    deadline (``RPC_TIMEOUT``), whichever comes first.
    """,
)

"""The extension points: entrypoints, dependency providers and shared extensions.

These are nameko's three kinds of extension, reshaped for trio:

- an :class:`Entrypoint` is declared by a decorator on a service method and tells
  a :class:`SharedExtension` (a server shared by every service of a runner) to
  call that method;
- a :class:`DependencyProvider` is a class attribute of a service; it is set up
  with the service and injects a value into each worker;
- a :class:`SharedExtension` is started by the runner after every service's
  providers and stopped before them; the runner does not know what it serves.

Declared extensions are prototypes: the runner *binds* a copy of each to its container.
"""

from __future__ import annotations

import copy
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Self, TypeVar

import trio

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..config import Config
    from .container import ServiceContainer
    from .context import WorkerContext

__all__ = ["DependencyProvider", "Entrypoint", "SharedExtension", "entrypoints_of"]

#: The attribute under which decorators list a method's entrypoints. The method itself
#: stays unwrapped, so that tests can call it directly.
ENTRYPOINTS_ATTRIBUTE = "__triosvc_entrypoints__"

F = TypeVar("F", bound=Callable[..., object])


class SharedExtension(ABC):
    """A component that one runner shares among all its services (the HTTP server).

    The runner creates one instance per class, hands it every entrypoint that names
    the class as its ``shared_extension``, then runs :meth:`serve` in its nursery.
    """

    def __init__(self, config: Config) -> None:
        self.config = config

    @abstractmethod
    def add_entrypoint(self, entrypoint: Entrypoint) -> None:
        """Take a bound entrypoint; raise ConfigurationError if it clashes with another."""

    def add_provider(self, provider: DependencyProvider) -> None:  # noqa: B027 - optional
        """Take a bound dependency provider that names this class (the WebSocket hub's)."""

    @abstractmethod
    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve until :meth:`stop_accepting` was called and in-flight work drained.

        Calls ``task_status.started()`` once it accepts work.
        """

    @abstractmethod
    def stop_accepting(self) -> None:
        """Begin a graceful stop: refuse new work, let :meth:`serve` drain and return."""

    def abort(self) -> None:  # noqa: B027 - an optional hook, empty on purpose
        """The grace period is over: give up on what is still running (optional)."""

    @property
    def url(self) -> str | None:
        """Where clients reach this extension, once it serves (None if nowhere)."""
        return None


class Entrypoint:
    """Something that calls a service method: declared by a decorator, bound per container.

    Subclasses set ``shared_extension`` to the class of the server that fires them,
    and may override :meth:`check` to validate the decorated method's signature.
    """

    shared_extension: ClassVar[type[SharedExtension] | None] = None

    method_name: str
    container: ServiceContainer
    #: Seconds a call may run, from its arrival to the method's return, once bound
    #: (``timeout=`` or ``WEB_SERVER_TIMEOUT``); None: no limit. The servers enforce it,
    #: and so does ``triosvc.testing.entrypoint_hook``, which reads it here.
    timeout: float | None = None

    def __init__(self, *, expected_exceptions: tuple[type[BaseException], ...] = ()) -> None:
        self.expected_exceptions = expected_exceptions

    def decorate(self, method: F) -> F:
        """Register this entrypoint on ``method`` and return the method unchanged."""
        if not inspect.isfunction(method):
            raise ConfigurationError(
                f"{type(self).__name__} decorates methods (def or async def) of a service "
                f"class, not {method!r}"
            )
        entrypoints = method.__dict__.setdefault(ENTRYPOINTS_ATTRIBUTE, [])
        entrypoints.append(self)
        return method

    def check(self, service_cls: type, method_name: str) -> None:
        """Raise ConfigurationError if this entrypoint cannot call ``service_cls.method_name``."""

    def bind(self, container: ServiceContainer, method_name: str) -> Self:
        bound = copy.copy(self)
        bound.container = container
        bound.method_name = method_name
        bound.method = getattr(container.service_cls, method_name)
        bound.blocking = not inspect.iscoroutinefunction(bound.method)
        return bound

    #: The service class's function (set by bind).
    method: Callable[..., object]
    #: Whether it is a plain ``def``, run in a worker thread (set by bind).
    blocking: bool

    @property
    def qualified_name(self) -> str:
        return f"{self.container.name}.{self.method_name}"

    def __repr__(self) -> str:
        where = getattr(self, "method_name", "<unbound>")
        return f"<{type(self).__name__} {where}>"


def entrypoints_of(function: object) -> list[Entrypoint]:
    """The entrypoints declared on ``function`` by decorators (empty if none)."""
    found: list[Entrypoint] = getattr(function, ENTRYPOINTS_ATTRIBUTE, [])
    return found


#: The provider hooks the runner awaits, and whether a plain ``def`` one runs in a thread.
_HOOKS: dict[str, bool] = {
    "setup": True,
    "stop": True,
    "get_dependency": False,
    "worker_setup": False,
    "worker_result": False,
    "worker_teardown": False,
}


def _awaitable(hook: Callable[..., object], *, in_thread: bool) -> Callable[..., object]:
    """A plain ``def`` hook as the ``async def`` the runner awaits."""
    if in_thread:

        @functools.wraps(hook)
        async def in_worker_thread(*args: object, **kwargs: object) -> object:
            return await trio.to_thread.run_sync(functools.partial(hook, *args, **kwargs))

        return in_worker_thread

    @functools.wraps(hook)
    async def inline(*args: object, **kwargs: object) -> object:
        return hook(*args, **kwargs)

    return inline


class DependencyProvider:
    """Injects a value into each worker of a service, and takes part in its lifecycle.

    Declare one as a class attribute of a service: ``db = Database()``. Hooks:

    - service level: :meth:`setup` runs before the service accepts work, :meth:`stop`
      after its last worker has ended (both once, in the runner's task);
    - worker level, for each call: :meth:`get_dependency` returns the value set as the
      attribute on the worker; :meth:`worker_setup` runs before the method,
      :meth:`worker_result` sees its result or exception, :meth:`worker_teardown` runs
      last. An exception from a worker-level hook fails that call only.

    ``worker_ctx.blocking`` is true when the method is a plain ``def`` running in a
    thread: give such workers a blocking interface.

    Hooks may be plain ``def`` too, as in nameko: :meth:`setup` and :meth:`stop` then
    run in a worker thread (they may block: connecting, closing a pool); the per-call
    hooks run in trio's thread and must not block.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name, in_thread in _HOOKS.items():
            hook = cls.__dict__.get(name)
            if inspect.isfunction(hook) and not inspect.iscoroutinefunction(hook):
                setattr(cls, name, _awaitable(hook, in_thread=in_thread))

    #: The shared extension this provider needs, if any. The runner hands the bound
    #: provider to that extension's ``add_provider`` (the hub provider and its server).
    shared_extension: ClassVar[type[SharedExtension] | None] = None

    attr_name: str
    container: ServiceContainer

    def bind(self, container: ServiceContainer, attr_name: str) -> Self:
        bound = copy.copy(self)
        bound.container = container
        bound.attr_name = attr_name
        return bound

    async def setup(self) -> None:
        """Prepare the service-level resource (connect, open a pool)."""

    async def stop(self) -> None:
        """Release the service-level resource; every worker has ended."""

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        """The value injected into the worker as ``self.<attr_name>``."""
        return None

    async def worker_setup(self, worker_ctx: WorkerContext) -> None:
        """Runs after injection, before the service method."""

    async def worker_result(
        self,
        worker_ctx: WorkerContext,
        result: object = None,
        exc: BaseException | None = None,
    ) -> None:
        """Sees the method's return value, or the exception it raised."""

    async def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        """Runs last for each call, whatever happened."""

    def dependency_spec(self, blocking: bool) -> type | None:
        """The type of what :meth:`get_dependency` injects, for the testing helpers' mocks.

        ``worker_factory`` and ``replace_dependencies`` inject
        ``unittest.mock.create_autospec(spec, instance=True)`` in its place: its
        ``async def`` methods are AsyncMocks, its plain ones MagicMocks, and a name the
        type lacks is an AttributeError. ``blocking`` says which worker the mock is for
        (a plain ``def`` one gets the blocking interface). None (the default): the
        helpers use ``get_dependency``'s return annotation when it names a class, else a
        MagicMock. Nothing else calls it.
        """
        return None

    def __repr__(self) -> str:
        where = getattr(self, "attr_name", "<unbound>")
        return f"<{type(self).__name__} {where}>"


def overrides(provider: DependencyProvider, hook: str) -> bool:
    """Whether ``provider``'s class replaces the base class's empty ``hook``."""
    return getattr(type(provider), hook) is not getattr(DependencyProvider, hook)

"""Helpers for testing services (SPEC §9), after nameko's ``nameko.testing.services``.

- :func:`worker_factory`: a service instance with mocks for its dependencies, for unit
  tests that call its methods directly;
- :func:`entrypoint_hook`: call an entrypoint of a running service through the worker
  machinery (slots, deadline, dependency hooks), without a client; for ``@http`` ones,
  also get the whole HTTP response, in process;
- :func:`replace_dependencies`: run a service with some dependencies mocked (or replaced
  by objects of yours);
- :func:`restrict_entrypoints`: run a service with only some of its entrypoints.

Mocks follow what the dependency injects: ``DependencyProvider.dependency_spec()``, or
else ``get_dependency``'s return annotation, names its type, and the mock is
``unittest.mock.create_autospec(type, instance=True)`` (its ``async def`` methods are
AsyncMocks); an ``RpcProxy``'s mock has an AsyncMock for every method in a service with
``async def`` entrypoints; anything else is a MagicMock.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from unittest import mock

import trio

from ..core.extensions import DependencyProvider
from ..core.runner import ServiceRunner
from ..core.service import ServiceDefinition, inspect_service
from ..exceptions import Timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import httpx

    from ..core.container import ServiceContainer
    from ..core.context import WorkerContext
    from ..core.extensions import Entrypoint
    from ..web.handlers import HttpEntrypoint

__all__ = [
    "EntrypointHook",
    "entrypoint_hook",
    "replace_dependencies",
    "restore_dependencies",
    "restrict_entrypoints",
    "worker_factory",
]

S = TypeVar("S")


# --- worker_factory --------------------------------------------------------------------


def worker_factory(service_cls: type[S], /, **overrides: object) -> S:
    """An instance of ``service_cls`` with a mock for each dependency, or the object given.

    ::

        service = worker_factory(UsersService, store=FakeStore())
        assert await service.get_user(request, 1) == {...}

    The instance is not hosted: no provider hook runs, and calling a method calls it
    directly. Raises ValueError for an override that names no dependency.
    """
    definition = inspect_service(service_cls)
    _check_names(definition, overrides)
    blocking = _blocking_service(definition)
    worker = service_cls()
    for attr_name, provider in definition.dependencies.items():
        if attr_name in overrides:
            value = overrides[attr_name]
        elif isinstance(provider, _Replacement):  # replace_dependencies(ServiceClass, ...)
            value = provider.value
        else:
            value = _mock_for(provider, attr_name, blocking)
        setattr(worker, attr_name, value)
    return worker


# --- replace_dependencies ----------------------------------------------------------------

_MISSING = object()

#: Replacements made on service classes, oldest first: (class, attribute, what was there).
_class_patches: list[tuple[type, str, object]] = []


def replace_dependencies(
    target: type | ServiceRunner, /, *names: str, **replacements: object
) -> Any:
    """Replace dependencies by mocks (``names``) or by the objects given (``replacements``).

    ``target`` is a :class:`~triosvc.runners.ServiceRunner` built and not started yet
    (``ServiceRunner(config)`` and ``add_service``), or a service class: then the change
    applies to every runner built from the class afterwards, until
    :func:`restore_dependencies` (the pytest plugin calls it after each test). In a runner
    of several services, a name a dependency of several has is written
    ``"service.attribute"``.

    The replaced providers are not set up; workers get the mock, or the object, instead
    of their value. Returns the mocks of ``names``, in order: a tuple, or the mock itself
    for one name.

    Raises:
        ValueError: a name that is not a dependency (the message lists them).
        RuntimeError: the runner has started.
    """
    for name in names:
        if name in replacements:
            raise ValueError(f"{name!r} is both mocked and replaced; name it once")
    if len(set(names)) != len(names):
        raise ValueError(f"a dependency is named twice in {names!r}")
    wanted: dict[str, object] = {**dict.fromkeys(names, _MISSING), **replacements}
    if isinstance(target, ServiceRunner):
        mocks = _replace_in_runner(target, wanted)
    elif isinstance(target, type):
        mocks = _replace_in_class(target, wanted)
    else:
        raise TypeError(
            f"replace_dependencies takes a ServiceRunner or a service class, not {target!r}"
        )
    made = tuple(mocks[name] for name in names)
    return made[0] if len(made) == 1 else made


def restore_dependencies() -> None:
    """Undo every ``replace_dependencies(ServiceClass, ...)``; runners built already keep
    what they were built with."""
    while _class_patches:
        cls, attr_name, previous = _class_patches.pop()
        if previous is _MISSING:
            delattr(cls, attr_name)  # the provider was inherited: uncover it again
        else:
            setattr(cls, attr_name, previous)


def _replace_in_runner(runner: ServiceRunner, wanted: dict[str, object]) -> dict[str, object]:
    if runner.started:
        raise RuntimeError(
            "this runner has started: replace dependencies after adding its services "
            "and before serving them (runner_factory(runner), nursery.start(runner.serve))"
        )
    # Everything is checked before anything changes.
    located = {name: _locate(runner, name) for name in wanted}
    mocks: dict[str, object] = {}
    for name, value in wanted.items():
        container, attr_name = located[name]
        provider = _original(container.dependencies[attr_name])
        if value is _MISSING:
            value = mocks[name] = _mock_for(
                provider, attr_name, _blocking_service(container.definition)
            )
        runner.replace_dependency(container.name, attr_name, _Replacement(value, provider))
    return mocks


def _locate(runner: ServiceRunner, name: str) -> tuple[ServiceContainer, str]:
    """The container and attribute a name (``attr`` or ``"service.attr"``) designates."""
    service_name, dot, attr_name = name.rpartition(".")
    if dot:
        container = runner.containers.get(service_name)
        if container is None:
            raise ValueError(
                f"{name!r}: no service {service_name!r} in this runner; its services: "
                f"{', '.join(runner.containers) or 'none'}"
            )
        _check_names(container.definition, [attr_name])
        return container, attr_name
    owners = [c for c in runner.containers.values() if name in c.dependencies]
    if len(owners) == 1:
        return owners[0], name
    if not owners:
        if len(runner.containers) == 1:
            _check_names(next(iter(runner.containers.values())).definition, [name])
        known = [f"{c.name}.{attr}" for c in runner.containers.values() for attr in c.dependencies]
        raise ValueError(
            f"no service of this runner has a dependency {name!r}; its dependencies: "
            f"{', '.join(known) or 'none'}"
        )
    raise ValueError(
        f"{name!r} is a dependency of {', '.join(c.name for c in owners)}: say which one, "
        f"e.g. {owners[0].name + '.' + name!r}"
    )


def _replace_in_class(cls: type, wanted: dict[str, object]) -> dict[str, object]:
    definition = inspect_service(cls)
    _check_names(definition, wanted)
    blocking = _blocking_service(definition)
    mocks: dict[str, object] = {}
    for attr_name, value in wanted.items():
        provider = _original(definition.dependencies[attr_name])
        if value is _MISSING:
            value = mocks[attr_name] = _mock_for(provider, attr_name, blocking)
        _class_patches.append((cls, attr_name, cls.__dict__.get(attr_name, _MISSING)))
        setattr(cls, attr_name, _Replacement(value, provider))
    return mocks


class _Replacement(DependencyProvider):
    """Injects one object in place of a dependency: what replace_dependencies installs."""

    def __init__(self, value: object, replaced: DependencyProvider) -> None:
        self.value = value
        self.replaced = replaced

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        if worker_ctx.blocking and isinstance(self.value, _AsyncProxyMock):
            # A blocking worker calls the proxy without awaiting, as it would a real one.
            return _BlockingCalls(self.value)
        return self.value

    def __repr__(self) -> str:
        return f"<replaced {self.replaced!r}: {self.value!r}>"


def _original(provider: DependencyProvider) -> DependencyProvider:
    return provider.replaced if isinstance(provider, _Replacement) else provider


# --- restrict_entrypoints ------------------------------------------------------------------


def restrict_entrypoints(runner: ServiceRunner, service_name: str, /, *method_names: str) -> None:
    """Run only the entrypoints of ``method_names`` of ``service_name``.

    The others are not served at all: no route, no RPC or WebSocket method, no
    connection hook. Before the runner starts; ValueError for a name that is not an
    entrypoint (or an unknown service), RuntimeError once the runner has started.
    """
    if not isinstance(runner, ServiceRunner):
        raise TypeError(f"restrict_entrypoints takes a ServiceRunner, not {runner!r}")
    runner.restrict_entrypoints(service_name, method_names)


# --- entrypoint_hook ------------------------------------------------------------------------


@asynccontextmanager
async def entrypoint_hook(
    runner: ServiceRunner,
    service_name: str,
    method_name: str,
    *,
    context_data: Mapping[str, object] | None = None,
) -> AsyncIterator[EntrypointHook]:
    """``async with entrypoint_hook(runner, "users", "get_user") as get_user:``

    ``await get_user(*args, **kwargs)`` runs the entrypoint as its server would: in a
    worker slot, under the entrypoint's timeout, with every dependency hook; it returns
    the method's result or raises its exception (``Timeout`` past the deadline,
    ``RpcTimeout`` for an ``@rpc`` method; ``ServiceUnavailable`` when no slot frees in
    time). The arguments are the method's own, as for a direct call (``request`` first
    for ``@http``, ``socket_id`` for WebSocket ``@rpc``). ``context_data`` is the call's
    context data (``worker_ctx.data``).

    For an ``@http`` entrypoint, ``await get_user.http("/users/1")`` answers a request
    through the runner's ASGI app, in process, and returns the ``httpx.Response``, as
    a client over the wire would get it.
    """
    hook = EntrypointHook(runner, service_name, method_name, context_data)
    try:
        yield hook
    finally:
        await hook.aclose()


class EntrypointHook:
    """What :func:`entrypoint_hook` gives: call it, or use :meth:`http`."""

    def __init__(
        self,
        runner: ServiceRunner,
        service_name: str,
        method_name: str,
        context_data: Mapping[str, object] | None = None,
    ) -> None:
        if not isinstance(runner, ServiceRunner):
            raise TypeError(f"entrypoint_hook takes a ServiceRunner, not {runner!r}")
        container = runner.containers.get(service_name)
        if container is None:
            raise ValueError(
                f"no service {service_name!r} in this runner; its services: "
                f"{', '.join(runner.containers) or 'none'}"
            )
        entrypoints = [e for e in container.entrypoints if e.method_name == method_name]
        if not entrypoints:
            served = dict.fromkeys(e.method_name for e in container.entrypoints)
            raise ValueError(
                f"{service_name}.{method_name} is not an entrypoint this runner serves; "
                f"those of {service_name}: {', '.join(served) or 'none'}"
            )
        if not runner.running:
            raise RuntimeError(
                "the runner is not running: start it first (runner_factory, run_services)"
            )
        self.runner = runner
        self.container = container
        #: The entrypoint the hook calls (the first one, for a method with several).
        self.entrypoint: Entrypoint = entrypoints[0]
        self._entrypoints = entrypoints
        self.context_data: dict[str, object] = dict(context_data or {})
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    async def __call__(self, *args: object, **kwargs: object) -> Any:
        self._check_usable()
        container = self.container
        entrypoint = self.entrypoint
        timeout = entrypoint.timeout if entrypoint.timeout is not None else math.inf
        deadline = trio.current_time() + timeout
        async with container.worker_slot(deadline) as slot:
            with trio.CancelScope(deadline=deadline) as scope:
                return await container.run_worker(
                    entrypoint, args, kwargs, slot=slot, data=self.context_data
                )
        assert scope.cancelled_caught  # only the deadline gets here: the worker was cancelled
        raise self._timeout_error(f"{entrypoint.qualified_name} did not finish within its deadline")

    def _timeout_error(self, message: str) -> Exception:
        from ..rpc import RpcEntrypoint, RpcTimeout  # the error its callers would get

        if isinstance(self.entrypoint, RpcEntrypoint):
            return RpcTimeout(message)
        return Timeout(message)

    async def http(
        self, path: str | None = None, *, method: str | None = None, **options: Any
    ) -> httpx.Response:
        """Send a request to this ``@http`` entrypoint; the response a client would get.

        ``path`` defaults to the entrypoint's URL when it has no variables; ``method``
        to its method when it has one. ``options`` are httpx's (``json=``, ``content=``,
        ``params=``, ``headers=``...). The request goes through the runner's ASGI app
        (routing, body limit, middleware, CORS, errors as JSON), without a socket, so it
        also runs under ``autojump_clock``. ``context_data`` becomes request headers.

        Raises TypeError if the entrypoint is not ``@http``, ValueError if ``path`` and
        ``method`` would reach another entrypoint.
        """
        self._check_usable()
        entrypoints = self._http_entrypoints()
        qualified = self.entrypoint.qualified_name
        if method is None:
            methods = list(dict.fromkeys(m for e in entrypoints for m in e.methods))
            if len(methods) != 1:
                raise ValueError(f"{qualified} answers {', '.join(methods)}: pass method=")
            method = methods[0]
        method = method.upper()
        if path is None:
            urls = [e.url for e in entrypoints if not e.arguments]
            if not urls:
                raise ValueError(
                    f"{qualified}'s URL {entrypoints[0].url} has variables: pass the path, "
                    "such as path='/users/1'"
                )
            path = urls[0]
        server = self._web_server()
        self._check_route(server.router, path, method, entrypoints)
        client = self._http_client(server.app)
        headers = self._context_headers(server.settings.context_header_prefix)
        if headers:
            options["headers"] = {**headers, **dict(options.get("headers") or {})}
        return await client.request(method, path, **options)

    async def aclose(self) -> None:
        """Close the in-process HTTP client; the hook cannot be used afterwards."""
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- internals ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("this entrypoint hook was used outside its `async with` block")
        if not self.runner.running:
            raise RuntimeError("the runner has stopped (or is stopping): nothing runs calls")

    def _http_entrypoints(self) -> list[HttpEntrypoint]:
        from ..web.handlers import HttpEntrypoint

        found = [e for e in self._entrypoints if isinstance(e, HttpEntrypoint)]
        if not found:
            raise TypeError(
                f"{self.entrypoint.qualified_name} is not an @http entrypoint: call the hook itself"
            )
        return found

    def _web_server(self) -> Any:
        from ..web.server import WebServer

        server = self.runner.shared_extension(WebServer)
        assert isinstance(server, WebServer)  # there is an @http entrypoint
        return server

    def _check_route(
        self, router: Any, path: str, method: str, entrypoints: list[HttpEntrypoint]
    ) -> None:
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import RequestRedirect

        try:
            target, _ = router.match(path.partition("?")[0], method)
        except (HTTPException, RequestRedirect):
            return  # a 404, 405 or redirect: the answer a client would get, worth testing
        if target not in entrypoints:
            raise ValueError(
                f"{method} {path} is served by {target.qualified_name}, not by "
                f"{self.entrypoint.qualified_name}: use that one's hook, or another path"
            )

    def _http_client(self, app: object) -> httpx.AsyncClient:
        if self._client is None:
            try:
                import httpx
            except ImportError:  # a test dependency, not one of triosvc's
                raise RuntimeError("EntrypointHook.http needs httpx: pip install httpx") from None
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            self._client = httpx.AsyncClient(
                transport=transport, base_url=self.runner.url or "http://localhost"
            )
        return self._client

    def _context_headers(self, prefix: str) -> dict[str, str]:
        headers = {}
        for key, value in self.context_data.items():
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            headers[prefix + key.replace("_", "-")] = text
        return headers


# --- mocks ------------------------------------------------------------------------------


def _mock_for(provider: DependencyProvider, attr_name: str, blocking: bool) -> object:
    """A mock standing in for what ``provider`` injects into a (``blocking``) worker."""
    rpc_service = _rpc_service_name(provider)
    if rpc_service is not None:
        proxy: mock.NonCallableMagicMock = (
            mock.NonCallableMagicMock(name=attr_name)
            if blocking
            else _AsyncProxyMock(name=attr_name)
        )
        proxy.service_name = rpc_service
        return proxy
    spec = provider.dependency_spec(blocking) or _returned_type(provider)
    if spec is None:
        return mock.MagicMock(name=attr_name)
    return mock.create_autospec(spec, instance=True, name=attr_name)


def _rpc_service_name(provider: DependencyProvider) -> str | None:
    from ..rpc import RpcProxy  # its proxies' methods are made on demand: no spec fits

    return provider.service_name if isinstance(provider, RpcProxy) else None


def _returned_type(provider: DependencyProvider) -> type | None:
    """The class ``get_dependency``'s return annotation names, if it names one."""
    try:
        hint = typing.get_type_hints(type(provider).get_dependency).get("return")
    except Exception:  # a name imported for type checkers only, say: no spec then
        return None
    origin = hint if isinstance(hint, type) else typing.get_origin(hint)  # dict[str, X]: dict
    if not isinstance(origin, type) or origin in (object, type(None), types.UnionType):
        return None
    return origin


class _AsyncProxyMock(mock.NonCallableMagicMock):
    """An RPC proxy's mock for async workers: every public attribute is an AsyncMock."""

    def _get_child_mock(self, /, **kwargs: Any) -> mock.NonCallableMock:
        if str(kwargs.get("_new_name", "")).startswith("_"):  # __str__ and the like
            return super()._get_child_mock(**kwargs)
        return mock.AsyncMock(**kwargs)


class _BlockingCalls:
    """An async proxy mock as a blocking worker sees it: each call runs in trio, awaited."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if name.startswith("_") or not callable(method):
            return method

        def call(*args: object, **kwargs: object) -> object:
            async def run() -> object:
                result = method(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return trio.from_thread.run(run)

        return call


# --- shared ---------------------------------------------------------------------------


def _blocking_service(definition: ServiceDefinition) -> bool:
    """Whether every entrypoint is a plain ``def``: then mocks get the blocking interface."""
    methods = [getattr(definition.cls, name) for name, _ in definition.entrypoints]
    return bool(methods) and not any(inspect.iscoroutinefunction(m) for m in methods)


def _check_names(definition: ServiceDefinition, names: typing.Iterable[str]) -> None:
    unknown = [name for name in names if name not in definition.dependencies]
    if unknown:
        raise ValueError(
            f"{definition.cls.__qualname__} has no dependency "
            f"{', '.join(repr(name) for name in unknown)}; its dependencies: "
            f"{', '.join(definition.dependencies) or 'none'}"
        )

"""The runner: starts services and their shared servers in one nursery, and stops them.

Start order: every service's providers (``setup``), then the shared extensions (the
HTTP server), so that nothing accepts work before its dependencies are ready. Stop
order, the reverse: the shared extensions refuse new work and drain in-flight calls
within ``SHUTDOWN_GRACE_PERIOD``; then each container waits for its last worker
(threads included, within what is left of the grace period) and its providers stop.

The serving runs in a shielded cancel scope, so that cancelling the caller's nursery
stops the runner gracefully instead of killing calls mid-flight; :meth:`ServiceRunner.kill`
cancels that scope for the cases where waiting is not wanted (a second Ctrl+C).
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..config import Config
from ..exceptions import ConfigurationError
from .container import ServiceContainer
from .groups import sole_exception

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from .extensions import DependencyProvider, SharedExtension

__all__ = ["ServiceRunner", "open_services", "run_services"]

LOGGER = logging.getLogger("triosvc.runner")


class ServiceRunner:
    """Runs several services with one config: one container each, servers shared.

    Build it, add services (definition errors are raised here, before anything
    listens), then ``await nursery.start(runner.serve)``; or use :func:`run_services`.
    """

    def __init__(self, config: Config | Mapping[str, object] | None = None) -> None:
        self.config = config if isinstance(config, Config) else Config(config)
        self.containers: dict[str, ServiceContainer] = {}
        self._shared: dict[type[SharedExtension], SharedExtension] = {}
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._serving = False
        self._running = False
        self._kill_scope: trio.CancelScope | None = None

    def add_service(self, service_cls: type) -> ServiceContainer:
        """Add a service class; raise ConfigurationError if it cannot run here."""
        if self._serving:
            raise RuntimeError("services are added before the runner serves")
        container = ServiceContainer(service_cls, self.config)
        if container.name in self.containers:
            other = self.containers[container.name].service_cls
            raise ConfigurationError(
                f"{service_cls.__qualname__}.name: {container.name!r} is already the name "
                f"of {other.__qualname__} in this runner; service names must be unique"
            )
        self._attach(container)
        self.containers[container.name] = container
        return container

    def _attach(self, container: ServiceContainer) -> None:
        """Hand the container's entrypoints and providers to the shared extensions."""
        for entrypoint in container.entrypoints:
            if entrypoint.shared_extension is not None:
                self._extension(entrypoint.shared_extension).add_entrypoint(entrypoint)
        for provider in container.dependencies.values():
            if provider.shared_extension is not None:
                self._extension(provider.shared_extension).add_provider(provider)

    # -- changes before serving (for triosvc.testing) --------------------------------------

    def replace_dependency(
        self, service_name: str, attr_name: str, provider: DependencyProvider
    ) -> None:
        """Run ``service_name`` with ``provider`` in place of its ``attr_name`` dependency.

        Before :meth:`serve`; for ``triosvc.testing.replace_dependencies``.
        """
        container = self._container_to_change(service_name)
        container.replace_dependency(attr_name, provider)
        self._reattach()

    def restrict_entrypoints(self, service_name: str, method_names: Iterable[str]) -> None:
        """Serve only the entrypoints of ``method_names`` of ``service_name``.

        Before :meth:`serve`; for ``triosvc.testing.restrict_entrypoints``.
        """
        container = self._container_to_change(service_name)
        container.restrict_entrypoints(method_names)
        self._reattach()

    def _container_to_change(self, service_name: str) -> ServiceContainer:
        if self._serving:
            raise RuntimeError(
                "this runner has started: replace dependencies and restrict entrypoints "
                "after adding the services and before serving them"
            )
        container = self.containers.get(service_name)
        if container is None:
            raise ValueError(
                f"no service {service_name!r} in this runner; its services: "
                f"{', '.join(self.containers) or 'none'}"
            )
        return container

    def _reattach(self) -> None:
        # Extensions cannot forget what they were given (routes, RPC methods): build them
        # afresh from the containers as they are now. Nothing has used them yet.
        previous = self._shared
        self._shared = {}
        try:
            for container in self.containers.values():
                self._attach(container)
        except BaseException:
            self._shared = previous
            raise

    def _extension(self, extension_cls: type[SharedExtension]) -> SharedExtension:
        extension = self._shared.get(extension_cls)
        if extension is None:
            extension = self._shared[extension_cls] = extension_cls(self.config)
        return extension

    @property
    def service_names(self) -> list[str]:
        return list(self.containers)

    @property
    def url(self) -> str | None:
        """The URL of the HTTP server, once it listens (None without HTTP entrypoints)."""
        for extension in self._shared.values():
            if extension.url is not None:
                return extension.url
        return None

    @property
    def started(self) -> bool:
        """Whether :meth:`serve` has begun: its services can no longer change."""
        return self._serving

    @property
    def running(self) -> bool:
        """Whether the services accept calls (set up and serving, and no stop requested)."""
        return self._running and not self._stop_requested.is_set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def shared_extension(self, extension_cls: type[SharedExtension]) -> SharedExtension | None:
        return self._shared.get(extension_cls)

    # -- running ------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[ServiceRunner] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the services until :meth:`stop` (or cancellation) and a graceful stop.

        ``task_status.started(self)`` is called once every server accepts work. A
        failure to start (a port in use, a provider's ``setup`` raising) is raised as
        itself, not inside an exception group.
        """
        if self._serving:
            raise RuntimeError("a ServiceRunner serves once")
        self._serving = True
        started = False
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self._serve_shielded)
                    started = True
                    task_status.started(self)
                    await self._stopped.wait()
                finally:
                    # Reached on stop() and on cancellation from outside alike: the
                    # shielded task drains, and this nursery waits for it.
                    self._stop_requested.set()
        except BaseExceptionGroup as group:
            if started:
                raise
            raise sole_exception(group) from None

    def request_stop(self) -> None:
        """Begin a graceful stop without waiting for it (safe to call twice)."""
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop gracefully and wait until everything has stopped."""
        self._stop_requested.set()
        await self._stopped.wait()

    def kill(self) -> None:
        """Stop at once: cancel every call, server and provider shutdown in progress."""
        self._stop_requested.set()
        if self._kill_scope is not None:
            self._kill_scope.cancel()

    async def _serve_shielded(self, *, task_status: trio.TaskStatus[None]) -> None:
        grace = self.config.settings.shutdown_grace_period
        started: list[ServiceContainer] = []
        deadline = math.inf
        try:
            with trio.CancelScope(shield=True) as self._kill_scope:
                try:
                    async with trio.open_nursery() as background:
                        for container in self.containers.values():
                            started.append(container)
                            container.background = background
                            await container.start()
                        async with trio.open_nursery() as servers:
                            for extension in self._shared.values():
                                await servers.start(extension.serve)
                            self._log_started()
                            self._running = True
                            task_status.started()
                            await self._stop_requested.wait()
                            LOGGER.info("draining in-flight calls for up to %gs", grace)
                            deadline = trio.current_time() + grace
                            for extension in self._shared.values():
                                extension.stop_accepting()
                            # The servers drain within the grace period themselves;
                            # this is the backstop should one of them not.
                            servers.cancel_scope.deadline = deadline + 1
                        for container in started:
                            with trio.move_on_at(deadline):
                                await container.wait_idle()
                        # Past the grace period: abandoned threads' hooks run now.
                        background.cancel_scope.cancel()
                finally:
                    for container in reversed(started):
                        container.background = None
                        await container.stop()
        finally:
            self._stopped.set()
        LOGGER.info("stopped")

    def _log_started(self) -> None:
        names = ", ".join(self.containers) or "no services"
        if self.url is not None:
            LOGGER.info("serving %s on %s", names, self.url)
        else:
            LOGGER.info("serving %s", names)


async def run_services(
    config: Config | Mapping[str, object] | None,
    *services: type,
    task_status: trio.TaskStatus[ServiceRunner] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``services`` with ``config`` inside the caller's nursery.

    ``runner = await nursery.start(run_services, config, ServiceA, ServiceB)`` returns
    once every server accepts work; ``runner.url`` is where HTTP listens. Cancelling
    the nursery, or ``await runner.stop()``, stops gracefully.
    """
    runner = ServiceRunner(config)
    for service_cls in services:
        runner.add_service(service_cls)
    await runner.serve(task_status=task_status)


@asynccontextmanager
async def open_services(
    config: Config | Mapping[str, object] | None, *services: type
) -> AsyncIterator[ServiceRunner]:
    """``async with open_services(config, A, B) as runner:`` runs them for the block.

    As with :func:`run_services`, a failure to start is raised as itself; so is an
    exception from the block, rather than inside the nursery's exception group.
    """
    try:
        async with trio.open_nursery() as nursery:
            runner: ServiceRunner = await nursery.start(run_services, config, *services)
            try:
                yield runner
            finally:
                runner.request_stop()
    except BaseExceptionGroup as group:
        raise sole_exception(group) from None

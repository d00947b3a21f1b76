"""The service container: one per service per runner, it owns the worker machinery.

A call goes through three steps, each with one owner:

1. a *worker slot* (:meth:`ServiceContainer.worker_slot`): at most
   ``WEB_SERVER_MAX_WORKERS`` calls of a service run at once; a call waits for a slot
   until its deadline;
2. the caller (an entrypoint's server) runs its own code in the slot under a cancel
   scope with the call's deadline (the HTTP layer runs middleware there);
3. :meth:`ServiceContainer.run_worker` makes the worker: a fresh instance of the
   service class with its dependencies injected, runs the provider hooks around
   the method, and the method itself, as a trio task (``async def``) or in a thread
   (``def``).

A thread cannot be cancelled: at the deadline trio abandons it, and the slot stays
taken until the thread returns, so that a service never runs more threads than it
has slots.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import attrs
import trio

from ..config import Config
from ..exceptions import ServiceUnavailable
from .context import CALL_RECORD, WorkerContext
from .extensions import DependencyProvider, Entrypoint, overrides
from .service import inspect_service

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .service import ServiceDefinition

__all__ = ["ContainerStatistics", "ServiceContainer", "WorkerSlot"]

LOGGER = logging.getLogger("triosvc.container")

#: How long the result and teardown hooks of a cancelled worker may take. They run
#: shielded (a rollback must happen even when the call timed out), so they are bounded.
CLEANUP_TIMEOUT = 5.0

T = TypeVar("T")


@attrs.frozen
class ContainerStatistics:
    """A snapshot of a container's worker slots."""

    #: WEB_SERVER_MAX_WORKERS: how many workers may run at once.
    max_workers: int
    #: Slots taken now, abandoned threads included.
    busy_workers: int
    #: Calls waiting for a slot.
    waiting_calls: int


@attrs.define(eq=False)
class WorkerSlot:
    """A taken worker slot. Held by the call's task, and by its thread while one runs."""

    _container: ServiceContainer
    _holders: int = 1

    def retain(self) -> None:
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._container._release_slot(self)


class ServiceContainer:
    """Runs one service: its providers' lifecycle and its workers, within its limits."""

    def __init__(self, service_cls: type, config: Config | Mapping[str, object] | None = None):
        self.definition: ServiceDefinition = inspect_service(service_cls)
        self.service_cls = service_cls
        self.name = self.definition.name
        self.config = config if isinstance(config, Config) else Config(config)
        settings = self.config.settings
        self.max_workers = settings.max_workers
        self.dependencies: dict[str, DependencyProvider] = {
            attr_name: prototype.bind(self, attr_name)
            for attr_name, prototype in self.definition.dependencies.items()
        }
        self.entrypoints: list[Entrypoint] = [
            prototype.bind(self, method_name)
            for method_name, prototype in self.definition.entrypoints
        ]
        self._index_hooks()
        self._limiter = trio.CapacityLimiter(self.max_workers)
        # Slots already bound the number of threads; this limiter only keeps trio's
        # default (shared by the whole process) out of the way.
        self._thread_limiter = trio.CapacityLimiter(math.inf)
        self._busy = 0
        self._idle = trio.Event()
        self._idle.set()
        self._started: list[DependencyProvider] = []
        self._began = False
        #: Where work that outlives a call runs (the hooks of an abandoned thread); the
        #: runner sets it to a nursery it closes after the last worker. None: no such work.
        self.background: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<ServiceContainer {self.name}>"

    def _index_hooks(self) -> None:
        providers = list(self.dependencies.values())
        # Hooks a provider leaves empty are skipped: they would cost an await per call.
        self._with_setup = [p for p in providers if overrides(p, "worker_setup")]
        self._with_result = [p for p in providers if overrides(p, "worker_result")]
        self._with_teardown = [p for p in providers if overrides(p, "worker_teardown")][::-1]

    # -- changes before the start (the testing helpers' hooks) -------------------------

    def replace_dependency(self, attr_name: str, provider: DependencyProvider) -> None:
        """Put ``provider`` (a prototype: it is bound here) in place of ``attr_name``'s.

        For ``triosvc.testing.replace_dependencies``, before the container starts; the
        replaced provider is never set up. Whoever attached the old provider to a shared
        extension must attach again (the runner does). ValueError for an unknown name.
        """
        self._check_not_started()
        if attr_name not in self.dependencies:
            raise ValueError(
                f"{self.service_cls.__qualname__} has no dependency {attr_name!r}; its "
                f"dependencies: {_listing(self.dependencies)}"
            )
        self.dependencies[attr_name] = provider.bind(self, attr_name)
        self._index_hooks()

    def restrict_entrypoints(self, method_names: Iterable[str]) -> None:
        """Keep only the entrypoints of ``method_names`` (all of a method's, if several).

        For ``triosvc.testing.restrict_entrypoints``, before the container starts.
        ValueError for a name that has no entrypoint.
        """
        self._check_not_started()
        keep = set(method_names)
        unknown = keep - {entrypoint.method_name for entrypoint in self.entrypoints}
        if unknown:
            declared = dict.fromkeys(name for name, _ in self.definition.entrypoints)
            raise ValueError(
                f"{self.service_cls.__qualname__} has no entrypoint "
                f"{', '.join(repr(name) for name in sorted(unknown))}; its entrypoints: "
                f"{_listing(declared)}"
            )
        self.entrypoints = [e for e in self.entrypoints if e.method_name in keep]

    def _check_not_started(self) -> None:
        if self._began:
            raise RuntimeError(f"{self.name} has started: change it before it starts")

    # -- service lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Set up every provider, in declaration order."""
        self._began = True
        for provider in self.dependencies.values():
            await provider.setup()
            self._started.append(provider)

    async def stop(self) -> None:
        """Stop the providers that were set up, last first; log (not raise) failures."""
        while self._started:
            provider = self._started.pop()
            try:
                await provider.stop()
            except Exception:
                LOGGER.exception("%s: stopping %r failed", self.name, provider)

    async def wait_idle(self) -> None:
        """Return once no worker slot is taken (abandoned threads included)."""
        while self._busy:
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> ContainerStatistics:
        stats = self._limiter.statistics()
        return ContainerStatistics(
            max_workers=self.max_workers,
            busy_workers=self._busy,
            waiting_calls=stats.tasks_waiting,
        )

    # -- worker slots -------------------------------------------------------------------

    def worker_slot(self, deadline: float = math.inf) -> _SlotRequest:
        """``async with container.worker_slot(deadline) as slot``: take a worker slot.

        Waits until ``deadline`` at most; raises ServiceUnavailable when no slot frees
        in time.
        """
        return _SlotRequest(self, deadline)

    async def _acquire_slot(self, deadline: float) -> WorkerSlot:
        slot = WorkerSlot(self)
        # A cancelled call stops here, before it holds anything. With a free slot there
        # is no reason to yield to the scheduler (the request's own I/O does), and from
        # taking the slot to handing it over nothing may await: a cancellation there
        # would leak the slot.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._limiter.acquire_on_behalf_of_nowait(slot)
        except trio.WouldBlock:
            with trio.move_on_at(deadline) as waiting:
                await self._limiter.acquire_on_behalf_of(slot)
            if waiting.cancelled_caught:
                raise ServiceUnavailable(
                    f"{self.name}: all {self.max_workers} workers stayed busy until the "
                    "call's deadline; try again later"
                ) from None
        self._busy += 1
        if self._busy == 1:
            self._idle = trio.Event()
        return slot

    def _release_slot(self, slot: WorkerSlot) -> None:
        self._limiter.release_on_behalf_of(slot)
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    # -- workers ------------------------------------------------------------------------

    def is_blocking(self, entrypoint: Entrypoint) -> bool:
        """Whether the entrypoint's method is a plain ``def`` (run in a thread)."""
        return entrypoint.blocking

    async def run_worker(
        self,
        entrypoint: Entrypoint,
        args: tuple[object, ...] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        slot: WorkerSlot,
        data: Mapping[str, object] | None = None,
    ) -> object:
        """Make a worker and run the entrypoint's method on it; return its result.

        The caller holds ``slot`` and the cancel scope of the call's deadline.
        """
        kwargs = kwargs or {}
        method = entrypoint.method
        blocking = self.is_blocking(entrypoint)
        worker_ctx = WorkerContext(
            container=self,
            entrypoint=entrypoint,
            args=args,
            kwargs=kwargs,
            data=data or {},
            blocking=blocking,
        )
        record = CALL_RECORD.get()
        if record is not None:  # the access log wants the call id (triosvc.web.observability)
            record.worker = worker_ctx
        worker = self.service_cls()
        worker_ctx.service = worker
        for attr_name, provider in self.dependencies.items():
            setattr(worker, attr_name, await provider.get_dependency(worker_ctx))
        thread: _ThreadHold | None = None
        try:
            for provider in self._with_setup:
                await provider.worker_setup(worker_ctx)
            if blocking:
                thread = _ThreadHold(slot, trio.lowlevel.current_trio_token())
                result = await self._run_in_thread(partial(method, worker, *args, **kwargs), thread)
            else:
                result = await method(worker, *args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            if thread is not None and thread.abandoned and self.background is not None:
                # The thread still uses the worker's dependencies: its hooks wait for it.
                slot.retain()
                self.background.start_soon(self._finish_abandoned, worker_ctx, exc, thread, slot)
            else:
                await self._finish_worker(worker_ctx, None, exc)
            raise
        await self._finish_worker(worker_ctx, result, None)
        return result

    async def _finish_abandoned(
        self, worker_ctx: WorkerContext, exc: BaseException, thread: _ThreadHold, slot: WorkerSlot
    ) -> None:
        """Run an abandoned thread's hooks once it returns (or once the runner gives up)."""
        try:
            await thread.ended.wait()
        finally:
            await self._finish_worker(worker_ctx, None, exc)
            slot.release()

    async def _finish_worker(
        self, worker_ctx: WorkerContext, result: object, exc: BaseException | None
    ) -> None:
        """Run the result and teardown hooks; raise the first failure among them."""
        if not (self._with_result or self._with_teardown):
            return
        failures: list[Exception] = []
        # A worker that ends by cancellation still needs its hooks (a transaction to
        # roll back): run them shielded, within a bound.
        with trio.CancelScope(shield=isinstance(exc, trio.Cancelled)) as scope:
            if scope.shield:
                scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
            for provider in self._with_result:
                try:
                    await provider.worker_result(worker_ctx, result, exc)
                except Exception as failure:
                    failures.append(failure)
            for provider in self._with_teardown:
                try:
                    await provider.worker_teardown(worker_ctx)
                except Exception as failure:
                    failures.append(failure)
        if failures and not isinstance(exc, trio.Cancelled):
            raise failures[0]
        for hook_failure in failures:  # nobody is left to answer: the log is all there is
            LOGGER.error("%s: a worker hook failed", worker_ctx.call_id, exc_info=hook_failure)

    async def run_sync_in_thread(self, function: Callable[[], T], slot: WorkerSlot) -> T:
        """Run blocking ``function`` in a thread that holds ``slot`` until it returns.

        Cancellation abandons the thread (trio cannot stop it); the slot is released
        when the thread really ends.
        """
        return await self._run_in_thread(
            function, _ThreadHold(slot, trio.lowlevel.current_trio_token())
        )

    async def _run_in_thread(self, function: Callable[[], T], thread: _ThreadHold) -> T:
        thread.slot.retain()
        try:
            return await trio.to_thread.run_sync(
                partial(thread.run, function),
                abandon_on_cancel=True,
                limiter=self._thread_limiter,
            )
        finally:
            thread.task_done()


def _listing(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"


class _SlotRequest:
    """The async context manager :meth:`ServiceContainer.worker_slot` returns."""

    __slots__ = ("_container", "_deadline", "_slot")

    def __init__(self, container: ServiceContainer, deadline: float) -> None:
        self._container = container
        self._deadline = deadline

    async def __aenter__(self) -> WorkerSlot:
        self._slot = await self._container._acquire_slot(self._deadline)
        return self._slot

    async def __aexit__(self, *exc_info: object) -> None:
        self._slot.release()


class _ThreadHold:
    """Who releases a slot that a thread holds: the thread when it ran, else the task."""

    def __init__(self, slot: WorkerSlot, token: trio.lowlevel.TrioToken) -> None:
        self.slot = slot
        self._token = token
        self._lock = threading.Lock()
        self._state = "pending"  # -> "running" (the thread owns the hold) or "dropped"
        #: Set in trio once the thread has returned.
        self.ended = trio.Event()

    @property
    def abandoned(self) -> bool:
        """Whether the thread began and has not returned yet (the task stopped waiting)."""
        return self._state == "running" and not self.ended.is_set()

    def run(self, function: Callable[[], T]) -> T:
        with self._lock:
            if self._state == "dropped":  # the call ended before the thread began
                raise RuntimeError("this call was over before its thread began")
            self._state = "running"
        try:
            return function()
        finally:
            # If trio has ended, its slots have ended with it.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._returned)

    def _returned(self) -> None:
        self.ended.set()
        self.slot.release()

    def task_done(self) -> None:
        # Called in trio once to_thread returned or was cancelled: if the thread never
        # began, it never will own the hold, so the task gives it back.
        with self._lock:
            if self._state == "pending":
                self._state = "dropped"
                self.slot.release()

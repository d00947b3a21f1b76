"""The worker context: who is being called, with which call id and context data."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .container import ServiceContainer
    from .extensions import Entrypoint

#: How many ancestor call ids a call keeps (nameko keeps the same number): enough to
#: trace a chain of services, bounded so that a loop of calls cannot grow headers.
CALL_ID_STACK_LIMIT = 10

#: The context-data key under which the call-id stack travels between services.
CALL_ID_STACK_KEY = "call_id_stack"


@attrs.define(eq=False, slots=True)
class WorkerContext:
    """One call of one entrypoint, as dependency providers see it.

    ``data`` holds the call's context data (from ``X-Triosvc-*`` request headers, or
    from the calling service over RPC); ``blocking`` tells providers whether the worker
    is a plain ``def`` running in a thread, so they can hand it a blocking interface.
    """

    container: ServiceContainer
    entrypoint: Entrypoint
    args: tuple[object, ...]
    kwargs: Mapping[str, object]
    data: Mapping[str, object]
    blocking: bool
    service: object = attrs.field(default=None, init=False)
    _call_id: str | None = attrs.field(default=None, init=False)

    @property
    def call_id(self) -> str:
        """``"<service>.<method>.<uuid>"``, unique to this call (made when first asked for)."""
        if self._call_id is None:
            self._call_id = f"{self.container.name}.{self.entrypoint.method_name}.{uuid.uuid4()}"
        return self._call_id

    @property
    def service_name(self) -> str:
        return self.container.name

    @property
    def call_id_stack(self) -> list[str]:
        """The ids of the calls that led here, oldest first, ending with this call's."""
        parents = self.data.get(CALL_ID_STACK_KEY) or []
        if isinstance(parents, str):  # from a header: comma-separated
            parents = [part.strip() for part in parents.split(",") if part.strip()]
        if not isinstance(parents, (list, tuple)):
            parents = []
        stack = [str(call_id) for call_id in parents]
        stack.append(self.call_id)
        return stack[-CALL_ID_STACK_LIMIT:]

    @property
    def context_data(self) -> dict[str, object]:
        """The data to pass on to a service this worker calls."""
        data = dict(self.data)
        data[CALL_ID_STACK_KEY] = self.call_id_stack
        return data


class CallRecord:
    """Who answered one HTTP request: the worker the container ran for it, if any."""

    __slots__ = ("worker",)

    def __init__(self) -> None:
        self.worker: WorkerContext | None = None


#: Set around one HTTP request by the web layer's observability (access log, metrics),
#: which wants the call id and route of the worker that answered. A mutable record rather
#: than the context itself: the answer must reach back out of the handler's call, whatever
#: context copies it ran in. None (the default): nobody asks, and nothing is kept.
CALL_RECORD: ContextVar[CallRecord | None] = ContextVar("triosvc_call_record", default=None)

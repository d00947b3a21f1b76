"""Running a chain of middleware around a handler (SPEC §4.5).

A middleware is ``mw(request, call_next)``, async or plain. A plain one runs in a
worker thread (it may block), where ``call_next`` is a blocking call back into trio.
``call_next`` always gives a werkzeug Response: an inner middleware's early return,
and the handler's return value or exception, are converted before it returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import trio
from werkzeug.wrappers import Request, Response

from ..exceptions import ConfigurationError

__all__ = ["Middleware", "check_middleware", "run_chain"]

T = TypeVar("T")

#: ``mw(request, call_next)`` returning a Response or any value a handler may return.
Middleware = Callable[[Request, Callable[[Request], object]], object]


class RunInThread(Protocol):
    async def __call__(self, function: Callable[[], T], /) -> T: ...


def check_middleware(middleware: object, where: str) -> tuple[Middleware, ...]:
    """Validate a list of middleware callables; ``where`` names it in the error."""
    if isinstance(middleware, (str, bytes)) or not isinstance(middleware, (list, tuple)):
        raise ConfigurationError(
            f"{where}: expected a list of middleware callables, got {middleware!r}"
        )
    for item in middleware:
        if not callable(item):
            raise ConfigurationError(
                f"{where}: {item!r} is not callable; a middleware is mw(request, call_next)"
            )
    return tuple(middleware)


async def run_chain(
    chain: Sequence[Middleware],
    request: Request,
    innermost: Callable[[Request], Awaitable[Response]],
    *,
    convert: Callable[[object], Response],
    on_error: Callable[[Exception], Response],
    run_in_thread: RunInThread,
) -> Response:
    """Call ``chain[0]``, whose ``call_next`` calls ``chain[1]``... then ``innermost``.

    ``convert`` turns a middleware's return value into a Response, ``on_error`` an
    exception it raised.
    """

    async def call(index: int, request: Request) -> Response:
        if index == len(chain):
            return await innermost(request)
        middleware = chain[index]

        async def call_next(request: Request) -> Response:
            return await call(index + 1, request)

        try:
            if _is_async(middleware):
                result = await middleware(request, call_next)  # type: ignore[misc]
            else:

                def blocking_call_next(request: Request) -> Response:
                    return trio.from_thread.run(call_next, request)

                result = await run_in_thread(lambda: middleware(request, blocking_call_next))
            return convert(result)
        except Exception as exc:
            return on_error(exc)

    return await call(0, request)


def _is_async(middleware: Middleware) -> bool:
    call = getattr(middleware, "__call__", None)  # noqa: B004 - async callable objects too
    return inspect.iscoroutinefunction(middleware) or inspect.iscoroutinefunction(call)

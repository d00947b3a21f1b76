"""The options entrypoint decorators share (``expected_exceptions``, ``timeout``): their
validation, and the ``@rpc`` / ``@rpc(...)`` decorator shape both RPC kinds have."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast, overload

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .extensions import Entrypoint

__all__ = ["MethodDecorator", "exception_classes", "method_decorator", "timeout_seconds"]

F = TypeVar("F", bound=Callable[..., object])


def exception_classes(value: object, where: str) -> tuple[type[BaseException], ...]:
    """Validate ``expected_exceptions``: one exception class or a tuple of them."""
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigurationError(
                f"{where}: expected_exceptions must be exception classes, got {cls!r}"
            )
    return classes


def timeout_seconds(value: object, where: str) -> float | None:
    """Validate a ``timeout=`` option: None, or a finite number of seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(f"{where}: timeout must be a number of seconds > 0, got {value!r}")
    return float(value)


class MethodDecorator(Protocol):
    """``@decorator`` bare, or ``@decorator(expected_exceptions=..., timeout=...)``."""

    @overload
    def __call__(self, method: F, /) -> F: ...
    @overload
    def __call__(
        self,
        *,
        expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = (),
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...


def method_decorator(
    name: str, entrypoint_cls: Callable[..., Entrypoint], doc: str
) -> MethodDecorator:
    """A decorator named ``name`` making methods ``entrypoint_cls`` entrypoints."""

    def decorator(
        method: F | None = None,
        /,
        *,
        expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = (),
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        def decorate(function: F) -> F:
            where = f"@{name} on {getattr(function, '__qualname__', repr(function))}"
            entrypoint = entrypoint_cls(
                expected_exceptions=exception_classes(expected_exceptions, where),
                timeout=timeout_seconds(timeout, where),
            )
            return entrypoint.decorate(function)

        return decorate(method) if method is not None else decorate

    decorator.__name__ = decorator.__qualname__ = name
    decorator.__doc__ = doc
    return cast("MethodDecorator", decorator)

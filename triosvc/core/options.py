"""Validation of the options entrypoint decorators share (``expected_exceptions``, ``timeout``)."""

from __future__ import annotations

import math

from ..exceptions import ConfigurationError

__all__ = ["exception_classes", "timeout_seconds"]


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

"""Exception groups: the one rule for seeing through them."""

from __future__ import annotations

__all__ = ["sole_exception"]


def sole_exception(exc: BaseException) -> BaseException:
    """The exception inside nested single-member groups, else ``exc`` itself.

    A nursery wraps even a single failure in an ExceptionGroup; where one failure
    is what the caller expects (a failure to start, a handler's error), this is it.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

"""Exceptions across RPC: how they are written, and which classes may be rebuilt.

A service's exception crosses as ``{"exc_type", "exc_path", "value", "exc_args"}`` (its
class name, ``module.qualname``, ``str(exc)`` and its arguments). The caller gets it back
as :class:`~triosvc.exceptions.RemoteError` ``(exc_type, value)``, unless its class is
*registered* with :func:`remote_error` in the caller's process: then as an instance of that
class, made with ``cls(*exc_args)``. Registering is a promise that the class's constructor
is safe to call with whatever arguments a remote peer sends (nameko's
``deserialize_to_instance``). Every class of :mod:`triosvc.exceptions` is registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .. import exceptions
from .._jsonvalues import or_repr, safe_str
from ..exceptions import RemoteError

__all__ = ["error_fields", "exception_path", "rebuild_error", "remote_error"]

E = TypeVar("E", bound=type[Exception])

_REGISTRY: dict[str, type[Exception]] = {}


def exception_path(cls: type[BaseException]) -> str:
    """``module.qualname``: the name under which a class is registered."""
    return f"{cls.__module__}.{cls.__qualname__}"


def remote_error(cls: E) -> E:
    """Register an exception class as safe to rebuild when a remote service raises it.

    Use as a class decorator (``@remote_error``) or a call (``remote_error(KeyError)``),
    in the calling process: a call that fails with this class then raises an instance
    of it, ``cls(*exc_args)``, instead of a RemoteError.
    """
    candidate: object = cls
    if not (isinstance(candidate, type) and issubclass(candidate, Exception)):
        raise TypeError(f"remote_error registers exception classes, not {cls!r}")
    _REGISTRY[exception_path(cls)] = cls
    return cls


def is_registered(cls: type[BaseException]) -> bool:
    """Whether ``cls`` is rebuilt as itself when it comes from a remote service."""
    return _REGISTRY.get(exception_path(cls)) is cls


def error_fields(exc: BaseException) -> dict[str, object]:
    """How ``exc`` crosses the wire; JSON values only (arguments JSON cannot hold: repr)."""
    cls = type(exc)
    return {
        "exc_type": cls.__name__,
        "exc_path": exception_path(cls),
        "value": safe_str(exc),
        "exc_args": [or_repr(arg) for arg in exc.args],
    }


def rebuild_error(fields: object) -> Exception:
    """The exception a caller raises for a failed reply's ``error`` fields."""
    if not isinstance(fields, Mapping):
        fields = {}
    exc_type = fields.get("exc_type")
    exc_type = exc_type if isinstance(exc_type, str) and exc_type else "UnknownError"
    value = fields.get("value")
    value = value if isinstance(value, str) else ""
    path = fields.get("exc_path")
    args = fields.get("exc_args")
    cls = _REGISTRY.get(path) if isinstance(path, str) else None
    if cls is not None and isinstance(args, list):
        try:
            return cls(*args)
        except Exception:  # a constructor that wants other arguments: fall back
            pass
    return RemoteError(exc_type, value)


for _name in exceptions.__all__:
    _cls = getattr(exceptions, _name)
    if isinstance(_cls, type) and issubclass(_cls, Exception):
        remote_error(_cls)

"""The payloads of service RPC: calls and replies as JSON text.

A call is ``{"method": str, "args": [...], "kwargs": {...}, "context": {...}}``; a reply
is ``{"result": <value>}`` or ``{"error": {"exc_type", "exc_path", "value", "exc_args"}}``.
Payloads are strict, compact, ASCII JSON (no NaN or Infinity; non-ASCII characters as
``\\uXXXX`` escapes), so that any broker can carry them as they are.

Values arrive as JSON gives them back: tuples as lists, and the int, float, bool or None
keys of a dict as strings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import attrs

from .._jsonvalues import find_unencodable, render_path
from ..exceptions import MalformedRequest, UnencodableValue
from ._errors import error_fields

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "CallRequest",
    "UnencodableValue",
    "decode_call",
    "decode_reply",
    "encode_call",
    "encode_error",
    "encode_result",
]

_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_JSON_VALUES: Final = "dict (str keys), list, tuple, str, int, finite float, bool or None"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODE: Final = json.JSONDecoder(parse_constant=_reject_constant).decode


def _dumps(message: object) -> str | None:
    """The JSON text of ``message``; None if JSON cannot hold it."""
    try:
        return _ENCODE(message)
    except (TypeError, ValueError, RecursionError):
        return None


# -- calls -------------------------------------------------------------------------------


@attrs.frozen
class CallRequest:
    """A decoded call: the method to run, its arguments, and the caller's context data."""

    method: str
    args: tuple[object, ...]
    kwargs: Mapping[str, object]
    context: Mapping[str, object]


def encode_call(
    where: str,
    method: str,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    context: Mapping[str, object],
) -> str:
    """The payload of a call to ``where`` (``"service.method"``, for messages).

    Raises:
        UnencodableValue: a TypeError naming the argument (or context key) JSON cannot
            hold, and where inside it the value is; nothing has been sent.
    """
    message = {"method": method, "args": list(args), "kwargs": dict(kwargs), "context": context}
    text = _dumps(message)
    if text is not None:
        return text
    for index, value in enumerate(args):
        _check(value, f"{where}: argument {index}")
    for name, value in kwargs.items():
        _check(value, f"{where}: keyword argument {name!r}")
    for key, value in context.items():
        _check(value, f"{where}: context data {key!r}")
    raise UnencodableValue(f"{where}: the call cannot be encoded as JSON")  # pragma: no cover


def decode_call(payload: str | bytes) -> CallRequest:
    """Read a call's payload.

    Raises:
        MalformedRequest: the payload is not a call this module wrote.
    """
    try:
        message = _DECODE(payload if isinstance(payload, str) else payload.decode())
    except (ValueError, RecursionError):
        raise MalformedRequest("an RPC call that is not JSON") from None
    if not isinstance(message, dict):
        raise MalformedRequest("an RPC call must be a JSON object")
    method = message.get("method")
    args = message.get("args", [])
    kwargs = message.get("kwargs", {})
    context = message.get("context", {})
    if not isinstance(method, str):
        raise MalformedRequest("an RPC call needs a string 'method'")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(context, dict):
        raise MalformedRequest(
            "an RPC call's 'args' must be a list, 'kwargs' and 'context' objects"
        )
    return CallRequest(method=method, args=tuple(args), kwargs=kwargs, context=context)


# -- replies -----------------------------------------------------------------------------


def encode_result(where: str, value: object) -> str:
    """The payload of a successful reply from ``where``.

    Raises:
        UnencodableValue: JSON cannot hold ``value``; the message says where in it.
    """
    text = _dumps({"result": value})
    if text is None:
        _check(value, f"the result of {where}")
        raise UnencodableValue(f"the result of {where} cannot be encoded as JSON")
    return text


def encode_error(exc: BaseException) -> str:
    """The payload of a failed reply; never raises."""
    text = _dumps({"error": error_fields(exc)})
    assert text is not None, "error_fields gives JSON values only"
    return text


def decode_reply(payload: str | bytes) -> tuple[bool, object]:
    """``(True, result)`` or ``(False, error fields)`` from a reply's payload.

    A reply that cannot be read becomes the error fields of a MalformedRequest.
    """
    try:
        message = _DECODE(payload if isinstance(payload, str) else payload.decode())
    except (ValueError, RecursionError):
        message = None
    if isinstance(message, dict):
        if "result" in message:
            return True, message["result"]
        if isinstance(message.get("error"), dict):
            return False, message["error"]
    return False, error_fields(MalformedRequest("an RPC reply that cannot be read"))


# -- finding what JSON cannot hold -----------------------------------------------------------


def _check(value: object, what: str) -> None:
    """Raise UnencodableValue if JSON cannot hold ``value``, naming ``what`` and the spot."""
    found = find_unencodable(value)
    if found is not None:
        path, reason = found
        at = f" at {render_path(path)}" if path is not None else ""
        raise UnencodableValue(
            f"{what} cannot be sent as JSON: the value{at} {reason}; RPC arguments and "
            f"results are JSON values: {_JSON_VALUES}"
        )

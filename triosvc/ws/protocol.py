"""The sans-IO message protocol of WebSocket RPC (SPEC §5.1): frames to events, values to frames."""

# Theory of operation
# ===================
#
# This module only translates. It owns no socket, task, clock or state: the connection layer
# reads a frame, hands it here, acts on the event it gets back, and writes the text it is given.
# Frames are WebSocket text frames holding one JSON value each.
#
# Server side, in: ``decode_call(frame)`` returns a ``Call`` or a ``BadCall``. The rules, in order:
#
#   1. A binary frame is a MalformedRequest: the protocol is JSON text.
#   2. Text that is not strict JSON is a MalformedRequest with a null correlation id, since nothing
#      in it can be read. Strict: no NaN or Infinity, no number beyond a float's range, no int
#      Python would refuse to convert, no nesting deeper than the interpreter can parse.
#   3. JSON that is not an object is a MalformedRequest, correlation id null.
#   4. An object whose "method" is missing or not a string is a MalformedRequest that echoes the
#      object's "correlation_id" (null when absent), so the client can match the error to its call.
#   5. "data" missing or null means no arguments; any other value that is not an object is an
#      IncorrectSignature, with the correlation id.
#   6. Anything else is a Call. Other keys are ignored.
#
# Server side, out: ``encode_connected``, ``encode_result``, ``encode_error`` and ``encode_event``
# return the text of one frame. Client side: ``encode_call`` out, ``decode_message`` in.
#
# Guarantees:
#
#   - The decoders never raise, whatever they are given (any str, any bytes, huge or deeply nested
#     JSON): bad input becomes a BadCall or an Unreadable event, so a peer cannot break the task
#     that reads its socket.
#   - The encoders write strict JSON, compact, keys in the order SPEC §5.1 lists them, and valid
#     UTF-8: a lone surrogate in a string is written as a ``\udXXXX`` escape, which the peer
#     decodes back to the same string.
#   - ``encode_result``, ``encode_event`` and ``encode_call`` raise ``UnencodableValue`` (a
#     TypeError) for a value JSON cannot hold, saying where it is and what type it has; the caller
#     answers with ``encode_error`` instead. ``encode_error`` never raises: it is the answer of
#     last resort.

from __future__ import annotations

import json
import math
import re
import sys
from typing import TYPE_CHECKING, final

import attrs

from .._jsonvalues import find_unencodable, render_path
from .._jsonvalues import or_repr as _or_repr
from .._jsonvalues import safe_repr as _safe_repr
from .._jsonvalues import safe_str as _safe_str
from ..exceptions import IncorrectSignature, MalformedRequest, UnencodableValue

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "BadCall",
    "Call",
    "Event",
    "Failure",
    "Result",
    "UnencodableValue",
    "Unreadable",
    "decode_call",
    "decode_message",
    "encode_call",
    "encode_connected",
    "encode_error",
    "encode_event",
    "encode_result",
    "error_fields",
]

_MALFORMED = MalformedRequest.__name__
_INCORRECT_SIGNATURE = IncorrectSignature.__name__
_UNKNOWN_ERROR = "UnknownError"

_EXPECTED_CALL = 'expected a JSON object {"method": ..., "data": {...}, "correlation_id": ...}'
_BINARY_CALL = "binary frames are not supported: send JSON text"
_JSON_TYPES = "dict (with str keys), list, tuple, str, int, finite float, bool and None"


# Events -------------------------------------------------------------------------------------


@final
@attrs.frozen
class Call:
    """A call decoded by the server: run ``method(socket_id, **data)`` and answer it.

    Attributes:
        method: The name of the method to call, exactly as sent.
        data: The keyword arguments; empty when the frame's ``data`` was missing or null.
        correlation_id: Any JSON value, echoed exactly in the answer; None when absent.
    """

    method: str
    data: Mapping[str, object]
    correlation_id: object


@final
@attrs.frozen
class BadCall:
    """A frame the server cannot call: answer it with :func:`encode_error` and read on.

    Attributes:
        exc_type: ``"MalformedRequest"`` or ``"IncorrectSignature"``.
        value: What was wrong and what to send instead.
        correlation_id: The frame's correlation id when the frame was a JSON object, else None.
    """

    exc_type: str
    value: str
    correlation_id: object


@final
@attrs.frozen
class Result:
    """A successful answer decoded by the client.

    Attributes:
        correlation_id: The id of the call this answers.
        data: The method's return value; None when the frame had no ``data``.
    """

    correlation_id: object
    data: object


@final
@attrs.frozen
class Failure:
    """An error answer decoded by the client.

    Attributes:
        correlation_id: The id of the call this answers; None when the server could not read the
            call.
        exc_type: The exception's class name; ``"UnknownError"`` when the frame had none.
        value: ``str()`` of the exception; empty when the frame had none.
        exc_args: The exception's arguments; empty when the frame had none.
    """

    correlation_id: object
    exc_type: str
    value: str
    exc_args: tuple[object, ...]


@final
@attrs.frozen
class Event:
    """A message the server pushed: ``connected`` on connect, then the hub's messages.

    Attributes:
        event: The event's name.
        data: Its payload; None when the frame had no ``data``.
    """

    event: str
    data: object


@final
@attrs.frozen
class Unreadable:
    """A frame the client cannot make sense of; it should log it and read on.

    Attributes:
        reason: What was wrong with the frame.
    """

    reason: str


# JSON in ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is beyond a float's range")
    return number


# One decoder for every frame: building one per call (as json.loads with options does) costs
# more than parsing a small frame. It holds no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _parse(text: str) -> tuple[object, str | None]:
    """Parse strict JSON: (value, None), or (None, why it is not JSON). Never raises."""
    try:
        return _DECODER.decode(text), None
    except RecursionError:
        return None, "it is nested too deeply"
    except ValueError as exc:  # JSONDecodeError, the hooks' errors, int()'s digit limit
        reason = str(exc)
        if "integer string conversion" in reason:  # Python's advice is for the server, not here
            reason = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        return None, reason


def _kind(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_call(frame: str | bytes) -> Call | BadCall:
    """Decode a frame received by the server. Never raises.

    Args:
        frame: A text frame's str, or a binary frame's bytes.

    Returns:
        A :class:`Call`, or a :class:`BadCall` to answer with an error frame (rules in the
        module's theory of operation).
    """
    if not isinstance(frame, str):
        return BadCall(_MALFORMED, _BINARY_CALL, None)
    message, error = _parse(frame)
    if error is not None:
        return BadCall(_MALFORMED, f"the frame is not JSON ({error}): {_EXPECTED_CALL}", None)
    if not isinstance(message, dict):
        return BadCall(_MALFORMED, f"{_EXPECTED_CALL}, got a JSON {_kind(message)}", None)
    correlation_id = message.get("correlation_id")
    method = message.get("method")
    if not isinstance(method, str):
        problem = (
            'the call has no "method"'
            if method is None
            else f'"method" must be a string, got a JSON {_kind(method)}'
        )
        return BadCall(_MALFORMED, f"{problem}: {_EXPECTED_CALL}", correlation_id)
    data = message.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        return BadCall(
            _INCORRECT_SIGNATURE,
            f'"data" must be a JSON object of keyword arguments, or null for none; '
            f"got a JSON {_kind(data)}",
            correlation_id,
        )
    return Call(method, data, correlation_id)


def decode_message(frame: str | bytes) -> Result | Failure | Event | Unreadable:
    """Decode a frame received by the client. Never raises.

    An error answer with pieces missing still decodes to a :class:`Failure` (``exc_type``
    ``"UnknownError"``, empty ``value`` and ``exc_args``), so the call it answers does not hang.

    Args:
        frame: A text frame's str, or a binary frame's bytes.

    Returns:
        A :class:`Result`, :class:`Failure` or :class:`Event`; :class:`Unreadable` for anything
        else.
    """
    if not isinstance(frame, str):
        return Unreadable("a binary frame: the server sends JSON text")
    message, error = _parse(frame)
    if error is not None:
        return Unreadable(f"the frame is not JSON ({error})")
    if not isinstance(message, dict):
        return Unreadable(f"expected a JSON object, got a JSON {_kind(message)}")
    kind = message.get("type")
    if kind == "result":
        success = message.get("success")
        if success is True:
            return Result(message.get("correlation_id"), message.get("data"))
        if success is False:
            return _failure(message)
        return Unreadable(f'"success" must be true or false, got a JSON {_kind(success)}')
    if kind == "event":
        event = message.get("event")
        if isinstance(event, str):
            return Event(event, message.get("data"))
        return Unreadable(f'"event" must be a string, got a JSON {_kind(event)}')
    return Unreadable(f'"type" must be "result" or "event", got {_short(kind)}')


def _failure(message: dict[str, object]) -> Failure:
    error = message.get("error")
    if not isinstance(error, dict):
        error = {}
    exc_type = error.get("exc_type")
    value = error.get("value")
    exc_args = error.get("exc_args")
    return Failure(
        message.get("correlation_id"),
        exc_type if isinstance(exc_type, str) else _UNKNOWN_ERROR,
        value if isinstance(value, str) else "",
        tuple(exc_args) if isinstance(exc_args, list) else (),
    )


def _short(value: object) -> str:
    """A short JSON rendering of a decoded scalar, for messages; containers by their kind."""
    if isinstance(value, dict | list):
        return f"a JSON {_kind(value)}"
    if isinstance(value, str):
        value = value[:40]
    text = json.dumps(value, ensure_ascii=True)  # decoded JSON scalars always encode
    return text if len(text) <= 40 else f"{text[:37]}..."


# JSON out -----------------------------------------------------------------------------------

# Prebuilt encoders, as json.dumps(..., separators=(",", ":"), ensure_ascii=False,
# allow_nan=False) would build on every call: the broadcast path encodes once per message and
# should not pay for building an encoder too.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_ENCODE_ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(message: object) -> str:
    """Write strict, compact JSON that is valid UTF-8."""
    text = _ENCODE(message)
    # isascii() is O(1) in CPython, so only non-ASCII text is searched. A surrogate code point
    # cannot be sent as UTF-8: text holding one is written again, with \uXXXX escapes.
    if text.isascii() or _LONE_SURROGATE.search(text) is None:
        return text
    return _ENCODE_ASCII(message)


def _encode(message: dict[str, object], what: str) -> str:
    """Write ``message``, or raise UnencodableValue saying what in it JSON cannot hold."""
    try:
        return _dumps(message)
    except Exception as exc:  # json's TypeError/ValueError/RecursionError, or a broken subclass
        problem = _find_unencodable(message) or (
            "it is nested too deeply" if isinstance(exc, RecursionError) else _describe_error(exc)
        )
        raise UnencodableValue(
            f"{what} cannot be sent as JSON: {problem}; send only {_JSON_TYPES}"
        ) from exc


def encode_connected(socket_id: str) -> str:
    """The frame the server sends first on every socket.

    Args:
        socket_id: The socket's id, which hub calls take.

    Returns:
        ``{"type": "event", "event": "connected", "data": {"socket_id": "<id>"}}``.
    """
    return _dumps({"type": "event", "event": "connected", "data": {"socket_id": socket_id}})


def encode_result(correlation_id: object, data: object) -> str:
    """The frame answering a call that returned.

    Args:
        correlation_id: The call's correlation id.
        data: The method's return value.

    Returns:
        ``{"type": "result", "success": true, "data": <data>, "correlation_id": <id>}``.

    Raises:
        UnencodableValue: ``data`` (or the correlation id) cannot be written as strict JSON.
    """
    return _encode(
        {"type": "result", "success": True, "data": data, "correlation_id": correlation_id},
        "the result",
    )


def encode_error(
    correlation_id: object, exc_type: str, value: str, exc_args: Sequence[object] = ()
) -> str:
    """The frame answering a call that failed, or a frame that was not a call. Never raises.

    Arguments that cannot be written as JSON are sent as their ``repr()``; a correlation id that
    cannot be is sent as null.

    Args:
        correlation_id: The call's correlation id (None when unknown).
        exc_type: The exception's class name, e.g. from :func:`error_fields`.
        value: The exception's message.
        exc_args: The exception's arguments.

    Returns:
        ``{"type": "result", "success": false, "error": {"exc_type": ..., "value": ...,
        "exc_args": [...]}, "correlation_id": <id>}``.
    """
    try:
        args = list(exc_args)
    except Exception:
        args = [_safe_repr(exc_args)]
    message: dict[str, object] = {
        "type": "result",
        "success": False,
        "error": {"exc_type": exc_type, "value": value, "exc_args": args},
        "correlation_id": correlation_id,
    }
    try:
        return _dumps(message)
    except Exception:
        pass  # the error path: find the culprits one by one
    message["error"] = {
        "exc_type": _or_repr(exc_type),
        "value": _or_repr(value),
        "exc_args": [_or_repr(arg) for arg in args],
    }
    try:
        return _dumps(message)
    except Exception:
        message["correlation_id"] = None
        return _dumps(message)


def encode_event(event: str, data: object) -> str:
    """A hub message; the hub encodes each broadcast once, for every subscriber.

    Args:
        event: The event's name.
        data: Its payload.

    Returns:
        ``{"type": "event", "event": "<event>", "data": <data>}``.

    Raises:
        UnencodableValue: ``data`` cannot be written as strict JSON.
    """
    return _encode({"type": "event", "event": event, "data": data}, "the event's data")


def encode_call(method: str, data: Mapping[str, object] | None, correlation_id: object) -> str:
    """The frame a client sends to call ``method``.

    Args:
        method: The method's name.
        data: Its keyword arguments; None for none.
        correlation_id: Any JSON value; the answer echoes it.

    Returns:
        ``{"method": "<name>", "data": {...}, "correlation_id": <id>}``.

    Raises:
        UnencodableValue: ``data`` or the correlation id cannot be written as strict JSON.
    """
    arguments = {} if data is None else data if isinstance(data, dict) else dict(data)
    return _encode(
        {"method": method, "data": arguments, "correlation_id": correlation_id}, "the call"
    )


def error_fields(exc: BaseException) -> tuple[str, str, tuple[object, ...]]:
    """How an exception crosses the wire: the one place that says so.

    Args:
        exc: The exception to send.

    Returns:
        ``(exc_type, value, exc_args)``: the class name, ``str(exc)`` and ``exc.args``, ready
        for :func:`encode_error`.
    """
    return type(exc).__name__, _safe_str(exc), tuple(exc.args)


# Error-path helpers -------------------------------------------------------------------------


def _describe_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _find_unencodable(message: dict[str, object]) -> str | None:
    """Say where the first value json cannot write is, and its type; None if none is found.

    The frame's own keys name the parts at the top (``data``, ``correlation_id``).
    """
    for key, value in message.items():
        found = find_unencodable(value)
        if found is not None:
            path, problem = found
            return f"{key}{render_path(path)} {problem}"
    return None

"""Turning what handlers return or raise into werkzeug responses (SPEC §4.1, §4.2)."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from ..core.groups import sole_exception
from ..exceptions import HttpError

__all__ = ["UnsupportedReturnValue", "error_response", "json_error", "to_response"]

LOGGER = logging.getLogger("triosvc.web")

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"


class UnsupportedReturnValue(TypeError):
    """A handler returned something §4.1 gives no meaning to."""


def to_response(value: object, handler: str) -> Response:
    """The response for a handler's (or a middleware's early) return value."""
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple):
        return _tuple_response(value, handler)
    return _body_response(value, 200, None, handler)


def _tuple_response(value: tuple[object, ...], handler: str) -> Response:
    # An int first is nameko's order: (status, body) or (status, headers, body).
    if len(value) in (2, 3) and isinstance(value[0], int) and not isinstance(value[0], bool):
        status, *rest = value
        headers, body = (None, rest[0]) if len(rest) == 1 else (rest[0], rest[1])
    elif len(value) in (2, 3):
        body, status, *more = value
        headers = more[0] if more else None
    else:
        raise UnsupportedReturnValue(
            f"{handler} returned a tuple of {len(value)} items; expected (body, status) "
            "or (body, status, headers)"
        )
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise UnsupportedReturnValue(f"{handler} returned status {status!r}; expected 100-599")
    return _body_response(body, status, headers, handler)


def _body_response(body: object, status: int, headers: object, handler: str) -> Response:
    header_list = _header_list(headers, handler)
    if body is None:
        response = Response(None, status=204 if status == 200 else status)
        response.headers.remove("Content-Type")
    elif isinstance(body, str):
        response = Response(body, status=status, content_type=TEXT)
    elif isinstance(body, (bytes, bytearray, memoryview)):
        response = Response(bytes(body), status=status, content_type=BINARY)
    elif isinstance(body, (dict, list)):
        try:
            text = json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise UnsupportedReturnValue(
                f"{handler} returned a body JSON cannot encode: {exc}"
            ) from exc
        response = Response(text, status=status, content_type=JSON)
    else:
        raise UnsupportedReturnValue(
            f"{handler} returned {type(body).__qualname__}; expected str, bytes, dict, list, "
            "None, a (body, status[, headers]) tuple or a werkzeug Response"
        )
    for name, value in header_list:
        if name.lower() == "content-type":
            response.headers["Content-Type"] = value  # a given Content-Type wins
        else:
            response.headers.add(name, value)
    return response


def _header_list(headers: object, handler: str) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, Sequence) and not isinstance(headers, (str, bytes)):
        items = list(headers)
    else:
        raise UnsupportedReturnValue(
            f"{handler} returned headers {headers!r}; expected a dict or a list of pairs"
        )
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise UnsupportedReturnValue(
                f"{handler} returned header {item!r}; expected a (name, value) pair"
            )
        name, value = item
        pairs.append((str(name), str(value)))
    return pairs


def json_error(
    status: int,
    error: str,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
    extra: Mapping[str, object] | None = None,
) -> Response:
    """The JSON error body every error response has: ``{"error": ..., "message": ...}``."""
    body: dict[str, object] = {"error": error, "message": message}
    if extra:
        body.update(extra)
    response = Response(json.dumps(body), status=status, content_type=JSON)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def error_response(
    exc: Exception,
    *,
    handler: str,
    expected: tuple[type[BaseException], ...] = (),
    debug: bool = False,
) -> Response:
    """The answer for an exception raised by a handler or a middleware, logged."""
    exc = sole_exception(exc)  # type: ignore[assignment]
    if isinstance(exc, HttpError):
        LOGGER.log(
            logging.WARNING if exc.status_code >= 500 else logging.INFO,
            "%s: %s %s: %s",
            handler,
            exc.status_code,
            type(exc).__name__,
            exc.message,
        )
        headers = [("Retry-After", "1")] if exc.status_code == 503 else []
        return json_error(exc.status_code, type(exc).__name__, exc.message, headers)
    if isinstance(exc, RequestRedirect):
        return redirect_response(exc)
    if isinstance(exc, HTTPException) and isinstance(exc.response, Response):
        return exc.response  # werkzeug.abort(response): the response given is the answer
    if isinstance(exc, HTTPException) and exc.code is not None:
        LOGGER.info("%s: %s %s: %s", handler, exc.code, type(exc).__name__, exc.description)
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return json_error(exc.code, type(exc).__name__, exc.description or "", headers)
    if expected and isinstance(exc, expected):
        status = getattr(exc, "status_code", 400)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            status = 400
        LOGGER.warning("%s raised %s: %s", handler, type(exc).__name__, exc)
        return json_error(status, type(exc).__name__, str(exc))
    if isinstance(exc, UnsupportedReturnValue):
        LOGGER.error("%s", exc)
    else:
        LOGGER.error("%s failed", handler, exc_info=exc)
    if debug:
        details = "".join(traceback.format_exception(exc))
        return json_error(
            500, "InternalServerError", f"{type(exc).__name__}: {exc}", extra={"traceback": details}
        )
    return json_error(500, "InternalServerError", "internal server error")


def redirect_response(redirect: RequestRedirect) -> Response:
    """A 308 to the slash-terminated URL werkzeug routing asks for, with an empty body."""
    response = Response(None, status=redirect.code)
    response.headers.remove("Content-Type")
    # A relative Location (RFC 9110 allows it) never echoes a client's Host header.
    response.headers["Location"] = (
        urlsplit(redirect.new_url)._replace(scheme="", netloc="").geturl()
    )
    return response

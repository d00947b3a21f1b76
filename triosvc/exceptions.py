"""The exceptions of triosvc, one tree under :class:`TriosvcError`.

::

    TriosvcError
    ├── ConfigurationError (also ValueError): bad service definition or config value
    ├── UnencodableValue (also TypeError): a value JSON cannot carry (a result, an argument)
    ├── HttpError: an HTTP answer with a status; error responses name the class
    │   ├── BadRequest (400), Unauthorized (401), Forbidden (403), NotFound (404),
    │   │   MethodNotAllowed (405), RequestTimeout (408), Conflict (409),
    │   │   PayloadTooLarge (413)
    │   └── ServiceUnavailable (503), Timeout (504): raised by the worker machinery
    │       when no worker slot frees in time, or a call outlives its deadline
    ├── ConnectionNotFound (also LookupError): no such WebSocket
    ├── MethodNotFound, MalformedRequest, IncorrectSignature: WebSocket RPC calls
    └── RemoteError, RpcTimeout, UnknownService: calls to other services

Every class keeps the name SPEC gives it, because clients read that name from the
``error`` (HTTP) or ``exc_type`` (WebSocket) field.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "ConnectionNotFound",
    "Forbidden",
    "HttpError",
    "IncorrectSignature",
    "MalformedRequest",
    "MethodNotAllowed",
    "MethodNotFound",
    "NotFound",
    "PayloadTooLarge",
    "RemoteError",
    "RequestTimeout",
    "RpcTimeout",
    "ServiceUnavailable",
    "Timeout",
    "TriosvcError",
    "Unauthorized",
    "UnencodableValue",
    "UnknownService",
]


class TriosvcError(Exception):
    """The base of every exception triosvc raises on purpose."""


class ConfigurationError(TriosvcError, ValueError):
    """A service definition or a config value that triosvc cannot run with.

    Raised before anything listens. The message names the class and attribute,
    or the config key, the value and what is expected.
    """


class UnencodableValue(TriosvcError, TypeError):
    """A value JSON cannot carry; the message says where in it, and its type."""


class HttpError(TriosvcError):
    """An error that answers an HTTP request with ``status_code``.

    Raise it (or a subclass) from a handler: the client gets that status and
    ``{"error": "<class name>", "message": "<message>"}``.
    """

    status_code: int = 500

    def __init__(self, message: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
            # cls(*args) rebuilds it with its status (RPC's remote errors, pickling)
            self.args = (message, status_code)

    def __str__(self) -> str:
        return self.message


class BadRequest(HttpError):
    """400: the request cannot be served as it is."""

    status_code = 400


class Unauthorized(HttpError):
    """401: the request lacks valid credentials."""

    status_code = 401


class Forbidden(HttpError):
    """403: the credentials do not allow this."""

    status_code = 403


class NotFound(HttpError):
    """404: no such resource (or no route)."""

    status_code = 404


class MethodNotAllowed(HttpError):
    """405: the route exists but not for this method."""

    status_code = 405


class RequestTimeout(HttpError):
    """408: the client did not send its request body in time."""

    status_code = 408


class Conflict(HttpError):
    """409: the request conflicts with the resource's state."""

    status_code = 409


class PayloadTooLarge(HttpError):
    """413: the request body exceeds ``WEB_SERVER_MAX_BODY_SIZE``."""

    status_code = 413


class ServiceUnavailable(HttpError):
    """503: no worker slot freed before the call's deadline, or the service is stopping."""

    status_code = 503


class Timeout(HttpError):
    """504: the call was still running at its deadline and was cancelled (or abandoned)."""

    status_code = 504


class ConnectionNotFound(TriosvcError, LookupError):
    """No WebSocket with this socket id is connected."""


class MethodNotFound(TriosvcError):
    """A WebSocket RPC call named a method that no service exposes."""


class MalformedRequest(TriosvcError):
    """A WebSocket frame that is not a JSON call (or has no ``method``)."""


class IncorrectSignature(TriosvcError):
    """A call's arguments do not match the method's signature."""


class RemoteError(TriosvcError):
    """An exception raised by another service, rebuilt on the caller's side."""

    def __init__(self, exc_type: str, value: str = "") -> None:
        super().__init__(exc_type, value)
        self.exc_type = exc_type
        self.value = value

    def __str__(self) -> str:
        return f"{self.exc_type} {self.value}".rstrip()


class RpcTimeout(TriosvcError, TimeoutError):
    """A call to another service got no reply within ``RPC_TIMEOUT``."""


class UnknownService(TriosvcError, LookupError):
    """A call to a service that has no live instance."""

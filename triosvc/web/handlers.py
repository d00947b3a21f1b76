"""The ``@http`` entrypoint (SPEC §4): a service method answering HTTP requests.

::

    class UsersService:
        name = "users"

        @http("GET", "/users/<int:user_id>", expected_exceptions=(KeyError,))
        async def get_user(self, request, user_id):
            return {"id": user_id}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Self, TypeVar

import trio
from werkzeug.routing import Map, Rule

from ..core.extensions import Entrypoint
from ..core.options import exception_classes, timeout_seconds
from ..exceptions import ConfigurationError, Timeout
from .cors import CorsPolicy
from .middleware import Middleware, check_middleware, run_chain
from .responses import error_response, to_response
from .server import WebServer

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

    from ..core.container import ServiceContainer

__all__ = ["KNOWN_METHODS", "HttpEntrypoint", "http"]

#: The methods an ``@http`` route may name.
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")

F = TypeVar("F", bound=Callable[..., object])


class HttpEntrypoint(Entrypoint):
    """One ``@http`` declaration: methods, a werkzeug rule, and how to answer."""

    shared_extension = WebServer

    def __init__(
        self,
        methods: tuple[str, ...],
        url: str,
        arguments: frozenset[str],
        *,
        expected_exceptions: tuple[type[BaseException], ...] = (),
        cors: CorsPolicy | bool | None = None,
        timeout: float | None = None,
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        super().__init__(expected_exceptions=expected_exceptions)
        self.methods = methods
        self.url = url
        self.arguments = arguments
        #: A policy, False (no CORS even if WEB_SERVER_CORS is set), or None (the default).
        self.cors = cors
        self.timeout = timeout
        self.middleware = middleware
        # Set by bind(), from the service class and the config.
        self.cors_policy: CorsPolicy | None = None
        self.chain: tuple[Middleware, ...] = middleware
        self.debug = False

    def bind(self, container: ServiceContainer, method_name: str) -> Self:
        bound = super().bind(container, method_name)
        settings = container.config.settings
        service_cls = container.service_cls
        service_middleware = check_middleware(
            getattr(service_cls, "http_middleware", ()),
            f"{service_cls.__qualname__}.http_middleware",
        )
        # Service-wide middleware is outermost (SPEC §4.5).
        bound.chain = service_middleware + self.middleware
        if isinstance(self.cors, CorsPolicy):
            bound.cors_policy = self.cors
        elif self.cors is None and settings.cors is not None:
            bound.cors_policy = CorsPolicy.from_mapping(settings.cors, where="WEB_SERVER_CORS")
        bound.debug = settings.debug
        bound.timeout = self.timeout if self.timeout is not None else settings.timeout
        return bound

    def attach(self, server: WebServer) -> None:
        server.router.add(self)

    def check(self, service_cls: type, method_name: str) -> None:
        function = getattr(service_cls, method_name)
        try:
            signature = inspect.signature(function)
            signature.bind(None, None, **dict.fromkeys(self.arguments))
        except TypeError as exc:
            raise ConfigurationError(
                f"{service_cls.__qualname__}.{method_name} cannot be called with "
                f"(self, request{''.join(', ' + a for a in sorted(self.arguments))}) "
                f"for {self.url}: {exc}"
            ) from None

    async def handle(
        self,
        request: Request,
        arguments: Mapping[str, object],
        *,
        deadline: float,
        data: Mapping[str, object],
    ) -> Response:
        """Answer one request: take a worker slot, run middleware and handler by the deadline."""
        container = self.container
        on_error = self._error_response
        try:
            async with container.worker_slot(deadline) as slot:
                with trio.CancelScope(deadline=deadline) as scope:

                    async def call_handler(request: Request) -> Response:
                        try:
                            result = await container.run_worker(
                                self, (request,), arguments, slot=slot, data=data
                            )
                            return to_response(result, self.qualified_name)
                        except Exception as exc:
                            return on_error(exc)

                    if not self.chain:
                        return await call_handler(request)
                    response = await run_chain(
                        self.chain,
                        request,
                        call_handler,
                        convert=lambda value: to_response(value, self.qualified_name),
                        on_error=on_error,
                        run_in_thread=lambda function: container.run_sync_in_thread(function, slot),
                    )
                if scope.cancelled_caught:
                    return on_error(
                        Timeout(f"{self.qualified_name} did not finish within its deadline")
                    )
                return response
        except Exception as exc:  # ServiceUnavailable: no slot in time
            return on_error(exc)

    def _error_response(self, exc: Exception) -> Response:
        return error_response(
            exc, handler=self.qualified_name, expected=self.expected_exceptions, debug=self.debug
        )


def http(
    method: str,
    url: str | None = None,  # required; a default, so that a bare @http gets a clear error
    *,
    expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = (),
    cors: Mapping[str, object] | bool | None = None,
    timeout: float | None = None,
    middleware: Sequence[Middleware] = (),
) -> Callable[[F], F]:
    """Expose a service method at ``url`` for ``method`` (one, or several comma-separated).

    Args:
        method: ``"GET"``, or several: ``"GET,POST"``.
        url: a werkzeug rule; its converters' values arrive as keyword arguments.
        expected_exceptions: exceptions answered with 400 (or their ``status_code``)
            and logged without a traceback.
        cors: CORS options for this endpoint (replacing ``WEB_SERVER_CORS``), or False
            for none.
        timeout: seconds from the request's arrival to the handler's return
            (default ``WEB_SERVER_TIMEOUT``).
        middleware: ``mw(request, call_next)`` callables around this handler.
    """
    if callable(method):
        raise ConfigurationError(
            f"@http needs a method and a URL: write @http('GET', '/path') above "
            f"{getattr(method, '__qualname__', method)!r}"
        )

    def decorate(function: F) -> F:
        where = f"@http on {getattr(function, '__qualname__', repr(function))}"
        entrypoint = HttpEntrypoint(
            _methods(method, where),
            *_rule(url, where),
            expected_exceptions=exception_classes(expected_exceptions, where),
            cors=_cors(cors, where),
            timeout=timeout_seconds(timeout, where),
            middleware=check_middleware(middleware, f"{where}: middleware"),
        )
        return entrypoint.decorate(function)

    return decorate


def _methods(method: object, where: str) -> tuple[str, ...]:
    if not isinstance(method, str):
        raise ConfigurationError(f"{where}: method must be a string such as 'GET' or 'GET,POST'")
    methods = tuple(dict.fromkeys(m.strip().upper() for m in method.split(",") if m.strip()))
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if not methods or unknown:
        raise ConfigurationError(
            f"{where}: unknown HTTP method {unknown[0] if unknown else method!r}; "
            f"expected one or more of {', '.join(KNOWN_METHODS)}"
        )
    return methods


def _rule(url: object, where: str) -> tuple[str, frozenset[str]]:
    if not isinstance(url, str):
        raise ConfigurationError(f"{where}: url must be a string such as '/users/<int:user_id>'")
    try:
        rule = Rule(url, endpoint="check")
        Map([rule])  # compiles the rule: unknown converters and bad syntax fail here
    # TypeError: a converter's bad argument; SyntaxError: a variable name used twice.
    except (ValueError, LookupError, TypeError, SyntaxError) as exc:
        raise ConfigurationError(f"{where}: invalid URL rule {url!r}: {exc}") from None
    return url, frozenset(rule.arguments)


def _cors(value: object, where: str) -> CorsPolicy | bool | None:
    if value is None or value is False:
        return value
    return CorsPolicy.from_mapping(value, where=f"{where}: cors")

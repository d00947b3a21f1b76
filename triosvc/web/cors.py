"""CORS policies (SPEC §4.4): validated once, applied to answers and preflights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from ..exceptions import ConfigurationError

__all__ = ["SAFELISTED_HEADERS", "CorsPolicy"]

#: Request headers a preflight may always ask for. Content-Type is among them, as
#: Starlette does, so that a page can POST JSON without configuring anything.
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})

_KEYS = ("origins", "methods", "headers", "expose_headers", "credentials", "max_age")


@attrs.frozen
class CorsPolicy:
    """Which origins may call an endpoint from a browser, and how."""

    #: Allowed origins, or None for any origin (``"*"``).
    origins: frozenset[str] | None
    #: Allowed methods, upper case; None means the endpoint's own methods.
    methods: tuple[str, ...] | None = None
    #: Request headers allowed beyond the safelisted ones, lower case.
    headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    credentials: bool = False
    max_age: int | None = None

    @classmethod
    def from_mapping(cls, options: object, *, where: str) -> CorsPolicy:
        """Validate a ``cors=`` mapping; ``where`` names it in error messages."""
        if not isinstance(options, Mapping):
            raise ConfigurationError(
                f"{where}: expected a mapping of CORS options, got {options!r}"
            )
        unknown = sorted(str(key) for key in options if key not in _KEYS)
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown CORS option {unknown[0]!r}; expected some of {', '.join(_KEYS)}"
            )
        if "origins" not in options:
            raise ConfigurationError(f'{where}: "origins" is required (a list of origins, or "*")')
        origins_value = options["origins"]
        origins: frozenset[str] | None
        if origins_value == "*":
            origins = None
        else:
            origins = frozenset(_strings(origins_value, f"{where}.origins"))
            if "*" in origins:
                origins = None
        methods_value = options.get("methods")
        methods = None
        if methods_value is not None:
            methods = tuple(m.upper() for m in _strings(methods_value, f"{where}.methods"))
        credentials = options.get("credentials", False)
        if not isinstance(credentials, bool):
            raise ConfigurationError(
                f"{where}.credentials: expected true or false, got {credentials!r}"
            )
        max_age = options.get("max_age")
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0
        ):
            raise ConfigurationError(
                f"{where}.max_age: expected seconds as an integer >= 0, got {max_age!r}"
            )
        return cls(
            origins=origins,
            methods=methods,
            headers=tuple(
                h.lower() for h in _strings(options.get("headers", ()), f"{where}.headers")
            ),
            expose_headers=tuple(
                _strings(options.get("expose_headers", ()), f"{where}.expose_headers")
            ),
            credentials=credentials,
            max_age=max_age,
        )

    def allows_origin(self, origin: str) -> bool:
        return self.origins is None or origin in self.origins

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        # "*" cannot go with credentials: browsers then need the origin itself.
        allowed = "*" if self.origins is None and not self.credentials else origin
        return [("Access-Control-Allow-Origin", allowed), ("Vary", "Origin")]

    def response_headers(self, origin: str) -> list[tuple[str, str]]:
        """Headers for an actual (non-preflight) answer to an allowed ``origin``."""
        headers = self._origin_headers(origin)
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if self.expose_headers:
            headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return headers

    def preflight_refusal(
        self,
        origin: str,
        method: str,
        request_headers: Iterable[str],
        endpoint_methods: Sequence[str],
    ) -> str | None:
        """Why a preflight is refused, or None when it is allowed."""
        if not self.allows_origin(origin):
            return f"origin {origin} is not allowed"
        allowed_methods = self.methods if self.methods is not None else endpoint_methods
        if method not in allowed_methods:
            return f"method {method} is not allowed from {origin}"
        for header in request_headers:
            if header not in SAFELISTED_HEADERS and header not in self.headers:
                return f"header {header} is not allowed from {origin}"
        return None

    def preflight_headers(
        self, origin: str, request_headers: Sequence[str], endpoint_methods: Sequence[str]
    ) -> list[tuple[str, str]]:
        """Headers for an allowed preflight's 204."""
        allowed_methods = self.methods if self.methods is not None else endpoint_methods
        headers = self._origin_headers(origin)
        headers.append(("Access-Control-Allow-Methods", ", ".join(allowed_methods)))
        # Echo what was asked (all of it allowed) along with what is configured.
        allowed_headers = list(dict.fromkeys([*request_headers, *self.headers]))
        if allowed_headers:
            headers.append(("Access-Control-Allow-Headers", ", ".join(allowed_headers)))
        if self.max_age is not None:
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers


def _strings(value: object, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"{where}: expected a list of strings, got {value!r}")
    if not all(isinstance(item, str) and item for item in value):
        raise ConfigurationError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return list(value)

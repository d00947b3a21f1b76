"""The routes of every HTTP entrypoint of a runner, on one werkzeug ``Map``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from werkzeug.routing import Map, MapAdapter, Rule

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .handlers import HttpEntrypoint

__all__ = ["Router"]

#: A rule's variable: ``<name>``, ``<converter:name>`` or ``<converter(args):name>``.
_VARIABLE = re.compile(r"<(?:([a-zA-Z_]\w*(?:\(.*?\))?):)?[a-zA-Z_]\w*>")


def _shape(url: str) -> str:
    """The rule with its variable names left out: ``/u/<int:a>`` and ``/u/<int:b>`` clash."""

    def converter(match: re.Match[str]) -> str:
        name = match.group(1) or "default"
        return "<default>" if name == "string" else f"<{name}>"

    return _VARIABLE.sub(converter, url)


def _where(entrypoint: HttpEntrypoint) -> str:
    return f"{entrypoint.container.service_cls.__qualname__}.{entrypoint.method_name}"


def _check_under(entrypoint: HttpEntrypoint, prefix: str, owner: str) -> None:
    url = entrypoint.url
    if url == prefix or url.startswith(prefix + "/"):
        raise ConfigurationError(
            f"{_where(entrypoint)}: {url} lies under {prefix}, where {owner}: requests "
            "there go to the mounted app, so the route could never be reached; move "
            "the route or the mount"
        )


#: How many (path, method) matches the router remembers.
MATCHES_KEPT = 1024


class Router:
    """Maps (path, method) to an entrypoint; werkzeug raises NotFound, MethodNotAllowed
    or RequestRedirect (a missing trailing slash) when none fits."""

    def __init__(self) -> None:
        self._map = Map(strict_slashes=True)
        self.entrypoints: list[HttpEntrypoint] = []
        self._declared: dict[tuple[str, str], HttpEntrypoint] = {}
        self._adapter: MapAdapter | None = None
        #: Recent matches by (path, method): werkzeug's matcher is a good share of a
        #: request's cost, and APIs see the same paths again and again. Bounded.
        self._matches: dict[tuple[str, str], tuple[HttpEntrypoint, dict[str, object]]] = {}
        #: Prefixes another app is mounted at (``triosvc.web.mount``), and by whom.
        self._reserved: dict[str, str] = {}

    def reserve(self, prefix: str, owner: str) -> None:
        """Keep ``prefix`` and the paths under it for a mounted app.

        ConfigurationError if a route lies there: it could never be reached. A route
        with a variable where the prefix is static (``/<name>/x``) is not refused: like
        werkzeug's static parts, the mount wins for paths under its prefix.
        """
        for entrypoint in self.entrypoints:
            _check_under(entrypoint, prefix, owner)
        self._reserved[prefix] = owner

    def add(self, entrypoint: HttpEntrypoint) -> None:
        """Add a route; raise ConfigurationError when its method and rule are taken."""
        for prefix, owner in self._reserved.items():
            _check_under(entrypoint, prefix, owner)
        shape = _shape(entrypoint.url)
        for method in entrypoint.methods:
            other = self._declared.get((method, shape))
            if other is not None:
                raise ConfigurationError(
                    f"{_where(entrypoint)}: {method} {entrypoint.url} is already "
                    f"served by {_where(other)} ({other.url})"
                )
        for method in entrypoint.methods:
            self._declared[(method, shape)] = entrypoint
        self._adapter = None
        self._matches.clear()
        self._map.add(
            Rule(entrypoint.url, endpoint=len(self.entrypoints), methods=entrypoint.methods)
        )
        self.entrypoints.append(entrypoint)

    @property
    def adapter(self) -> MapAdapter:
        # One adapter serves every request: matching takes the path and the method.
        if self._adapter is None:
            self._adapter = self._map.bind("localhost")
        return self._adapter

    def match(
        self, path: str, method: str, query: str = ""
    ) -> tuple[HttpEntrypoint, dict[str, object]]:
        """The entrypoint for ``method`` at ``path`` and its URL arguments; werkzeug's
        NotFound, MethodNotAllowed or RequestRedirect (``query`` kept) otherwise."""
        key = (path, method)
        found = self._matches.get(key)
        if found is None:
            rule, arguments = self.adapter.match(path, method, return_rule=True, query_args=query)
            found = (self.entrypoints[rule.endpoint], dict(arguments))
            if len(self._matches) >= MATCHES_KEPT:
                del self._matches[next(iter(self._matches))]  # the oldest
            self._matches[key] = found
        entrypoint, arguments = found
        return entrypoint, dict(arguments)  # a copy: the handler's to keep

    def allowed_methods(self, path: str) -> list[str]:
        """The methods served at ``path``, OPTIONS included (answered by us)."""
        methods = set(self.adapter.allowed_methods(path))
        if methods:
            methods.add("OPTIONS")
        return sorted(methods)

    def routes(self) -> list[tuple[str, str, str]]:
        """(methods, rule, handler) for each route, in declaration order."""
        return [
            (",".join(entrypoint.methods), entrypoint.url, entrypoint.qualified_name)
            for entrypoint in self.entrypoints
        ]

"""A module whose own import fails: a dependency that is not installed."""

from __future__ import annotations

import triosvc_cli_no_such_dependency  # type: ignore[import-not-found]  # noqa: F401

from triosvc.web.handlers import http


class BrokenService:
    name = "broken"

    @http("GET", "/")
    async def index(self, request: object) -> str:
        return "unreachable"

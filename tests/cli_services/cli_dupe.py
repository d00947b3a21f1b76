"""Two services with one name: a service definition error."""

from __future__ import annotations

from triosvc.web.handlers import http


class FirstService:
    name = "dupe"

    @http("GET", "/first")
    async def first(self, request: object) -> str:
        return "first"


class SecondService:
    name = "dupe"

    @http("GET", "/second")
    async def second(self, request: object) -> str:
        return "second"

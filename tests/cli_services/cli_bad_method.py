"""A decorator used wrongly: @http with a method HTTP does not have."""

from __future__ import annotations

from triosvc.web.handlers import http


class BadMethodService:
    name = "bad_method"

    @http("FETCH", "/thing")
    async def fetch(self, request: object) -> str:
        return "thing"

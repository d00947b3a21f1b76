"""Two services defined here, one imported: a bare `cli_pair` runs the two defined here."""

from __future__ import annotations

from cli_greeter import GreeterService  # imported, not defined here: not picked up

from triosvc.web.handlers import http

__all__ = ["ClockService", "GreeterService", "UsersService"]


class UsersService:
    name = "users"

    @http("GET", "/users/<int:user_id>")
    async def get_user(self, request: object, user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @http("DELETE", "/users/<int:user_id>")
    async def delete_user(self, request: object, user_id: int) -> None:
        return None


class ClockService:
    name = "clock"

    @http("GET", "/time")
    async def now(self, request: object) -> str:
        return "noon"


class Helper:
    name = "helper"  # a name but no entrypoint: not a service

"""A service for the CLI tests: quick routes, a slow one the test releases, a stuck one."""

from __future__ import annotations

import logging
import os
import time

import trio

from triosvc.web.handlers import http

LOGGER = logging.getLogger("cli_greeter")


class GreeterService:
    name = "greeter"

    @http("GET", "/hello/<name>")
    async def hello(self, request: object, name: str) -> str:
        return f"hello {name}"

    @http("GET,POST", "/items")
    def items(self, request: object) -> list[str]:
        return ["a", "b"]

    @http("GET", "/pid")
    async def pid(self, request: object) -> str:
        return str(os.getpid())

    @http("GET", "/slow")
    def slow(self, request: object) -> str:
        """Waits (in its worker thread) until the file named by ?until= exists, 10 s at most."""
        until = request.args["until"]  # type: ignore[attr-defined]
        LOGGER.info("slow request started")
        give_up = time.monotonic() + 10
        while not os.path.exists(until) and time.monotonic() < give_up:
            time.sleep(0.01)
        return "slow done"

    @http("GET", "/stuck")
    async def stuck(self, request: object) -> str:
        LOGGER.info("stuck request started")
        await trio.sleep(60)
        return "never"


class NotAService:
    """No `name`: never picked up by a bare module name."""

    def helper(self) -> None:
        pass

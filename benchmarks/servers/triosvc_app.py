"""The two endpoints as a triosvc service, run through ``triosvc.runners.run_services``.

Run by the benchmark runner as ``python benchmarks/servers/triosvc_app.py``; prints
``PORT <n>`` once it accepts connections, then serves until killed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio
from _common import HELLO, announce, user

from triosvc.runners import run_services
from triosvc.web.handlers import http


class HelloService:
    name = "hello"

    @http("GET", "/hello")
    async def hello(self, request: object) -> str:
        return HELLO

    @http("GET", "/users/<int:user_id>")
    async def get_user(self, request: object, user_id: int) -> dict[str, object]:
        return user(user_id)


CONFIG = {"WEB_SERVER_ADDRESS": "127.0.0.1:0", "SHUTDOWN_GRACE_PERIOD": 1}


async def main() -> None:
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(run_services, CONFIG, HelloService)
        announce(urlsplit(runner.url).port)


if __name__ == "__main__":
    trio.run(main)

"""The three endpoints as a triosvc service, run through ``triosvc.runners.run_services``.

Run by the benchmark runner as ``python benchmarks/servers/triosvc_app.py [hypercorn|triosvc]``:
the engine (``WEB_SERVER_ENGINE``), hypercorn's trio worker by default, or triosvc's own;
prints ``PORT <n>`` once it accepts connections, then serves until killed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio
from _common import HELLO, POST_PATH, announce, argument, received, user

from triosvc.runners import run_services
from triosvc.web.handlers import http

ENGINES = ("hypercorn", "triosvc")


class HelloService:
    name = "hello"

    @http("GET", "/hello")
    async def hello(self, request: object) -> str:
        return HELLO

    @http("GET", "/users/<int:user_id>")
    async def get_user(self, request: object, user_id: int) -> dict[str, object]:
        return user(user_id)

    @http("POST", POST_PATH)
    async def echo(self, request) -> dict[str, int]:  # a werkzeug Request
        return received(len(request.get_data()))


CONFIG = {"WEB_SERVER_ADDRESS": "127.0.0.1:0", "SHUTDOWN_GRACE_PERIOD": 1}


async def main(engine: str = "hypercorn") -> None:
    config = {**CONFIG, "WEB_SERVER_ENGINE": engine}
    async with trio.open_nursery() as nursery:
        runner = await nursery.start(run_services, config, HelloService)
        announce(urlsplit(runner.url).port)


if __name__ == "__main__":
    trio.run(main, argument(1, ENGINES))

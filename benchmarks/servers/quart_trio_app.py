"""The two endpoints as a ``quart_trio.QuartTrio`` app on hypercorn's trio worker.

Run by the benchmark runner as ``python benchmarks/servers/quart_trio_app.py``; prints
``PORT <n>`` once it accepts connections, then serves until killed. Needs ``quart-trio``.
"""

from __future__ import annotations

from functools import partial

import trio
from _common import HELLO, announce, hypercorn_config, listening_socket, user
from hypercorn.trio import serve
from quart_trio import QuartTrio

app = QuartTrio(__name__)


@app.get("/hello")
async def hello() -> tuple[str, int, dict[str, str]]:
    return HELLO, 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/users/<int:user_id>")
async def get_user(user_id: int) -> dict[str, object]:
    return user(user_id)


async def main() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, hypercorn_config(sock)))
        announce(port)


if __name__ == "__main__":
    trio.run(main)

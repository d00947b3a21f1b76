"""The three endpoints as a ``quart_trio.QuartTrio`` app on hypercorn's trio worker.

Run by the benchmark runner as ``python benchmarks/servers/quart_trio_app.py``; prints
``PORT <n>`` once it accepts connections, then serves until killed. Needs ``quart-trio``.
"""

from __future__ import annotations

from _common import HELLO, POST_PATH, received, serve_hypercorn, user
from quart import request
from quart_trio import QuartTrio

app = QuartTrio(__name__)


@app.get("/hello")
async def hello() -> tuple[str, int, dict[str, str]]:
    return HELLO, 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/users/<int:user_id>")
async def get_user(user_id: int) -> dict[str, object]:
    return user(user_id)


@app.post(POST_PATH)
async def echo() -> dict[str, int]:
    return received(len(await request.get_data()))


if __name__ == "__main__":
    serve_hypercorn(app)

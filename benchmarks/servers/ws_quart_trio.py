"""The WebSocket benchmark's hub as a ``quart_trio.QuartTrio`` app on hypercorn's trio worker.

Run by ``benchmarks/websocket.py`` as ``python benchmarks/servers/ws_quart_trio.py
[send_buffer]``; prints ``PORT <n>`` once it accepts connections, then serves until killed.
Quart has no hub: the app uses the hand-written one of the bare baselines (``ws_hub.py``),
each socket with a trio memory channel drained by a sender task. Needs ``quart-trio``.
"""

from __future__ import annotations

from functools import partial

from _common import serve_hypercorn
from quart import websocket
from quart_trio import QuartTrio
from ws_common import HYPERCORN_SETTINGS, PATH, raise_nofile
from ws_hub import POLICY_VIOLATION, trio_socket

app = QuartTrio(__name__)


@app.websocket(PATH)
async def hub_socket() -> None:
    await websocket.accept()
    await trio_socket(
        websocket.receive,  # type: ignore[arg-type]
        websocket.send,
        partial(websocket.close, POLICY_VIOLATION),
    )


if __name__ == "__main__":
    raise_nofile()
    serve_hypercorn(app, settings=HYPERCORN_SETTINGS)

"""The WebSocket benchmark's hub as a Starlette app on uvicorn (uvloop and its default
WebSocket protocol when installed).

Run by ``benchmarks/websocket.py`` as ``python benchmarks/servers/ws_starlette.py
[send_buffer]``; prints ``PORT <n>`` once it accepts connections, then serves until killed.
Starlette has no hub: the app uses the hand-written one of the bare baselines
(``ws_hub.py``), each socket with an ``asyncio.Queue`` drained by a sender task. Needs
``uvicorn`` and ``starlette``.
"""

from __future__ import annotations

from functools import partial

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from starlette_app import serve
from ws_common import HEARTBEAT_INTERVAL, MAX_MESSAGE_SIZE, PATH, raise_nofile
from ws_hub import POLICY_VIOLATION, asyncio_socket


async def hub_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await asyncio_socket(
        websocket.receive_text,
        websocket.send_text,
        partial(websocket.close, POLICY_VIOLATION),
        ended=(WebSocketDisconnect,),
    )


app = Starlette(routes=[WebSocketRoute(PATH, hub_socket)])


if __name__ == "__main__":
    raise_nofile()
    serve(
        app,
        ws_ping_interval=HEARTBEAT_INTERVAL,
        ws_ping_timeout=HEARTBEAT_INTERVAL,
        ws_max_size=MAX_MESSAGE_SIZE,
        ws_per_message_deflate=False,  # triosvc does not offer it either
    )

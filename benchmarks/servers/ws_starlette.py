"""The WebSocket benchmark's hub as a Starlette app on uvicorn (uvloop and its default
WebSocket protocol when installed).

Run by ``benchmarks/websocket.py`` as ``python benchmarks/servers/ws_starlette.py
[send_buffer]``; prints ``PORT <n>`` once it accepts connections, then serves until killed.
Starlette has no hub: the app uses the hand-written one of the bare baselines
(``ws_hub.py``), each socket with an ``asyncio.Queue`` drained by a sender task. Needs
``uvicorn`` and ``starlette``.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from starlette_app import serve
from ws_common import HEARTBEAT_INTERVAL, MAX_MESSAGE_SIZE, PATH, raise_nofile, send_buffer
from ws_hub import POLICY_VIOLATION, Peer, handle, leave_all

SEND_BUFFER = send_buffer()


async def hub_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    outbox: asyncio.Queue[str] = asyncio.Queue(SEND_BUFFER)

    def offer(text: str) -> bool:
        try:
            outbox.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def sender() -> None:
        while True:
            await websocket.send_text(await outbox.get())

    reader = asyncio.current_task()
    assert reader is not None
    peer = Peer(offer, reader.cancel)
    sending = asyncio.create_task(sender())
    try:
        while True:
            handle(peer, await websocket.receive_text())
    except WebSocketDisconnect:
        pass
    except asyncio.CancelledError:
        if not peer.slow:
            raise
        reader.uncancel()
    finally:
        leave_all(peer)
        sending.cancel()
    if peer.slow:
        await asyncio.wait_for(websocket.close(POLICY_VIOLATION), 1)


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

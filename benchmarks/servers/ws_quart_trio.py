"""The WebSocket benchmark's hub as a ``quart_trio.QuartTrio`` app on hypercorn's trio worker.

Run by ``benchmarks/websocket.py`` as ``python benchmarks/servers/ws_quart_trio.py
[send_buffer]``; prints ``PORT <n>`` once it accepts connections, then serves until killed.
Quart has no hub: the app uses the hand-written one of the bare baselines (``ws_hub.py``),
each socket with a trio memory channel drained by a sender task. Needs ``quart-trio``.
"""

from __future__ import annotations

import trio
from _common import announce
from quart import websocket
from quart_trio import QuartTrio
from ws_baseline import config
from ws_common import PATH, raise_nofile, send_buffer
from ws_hub import POLICY_VIOLATION, Peer, handle, leave_all

SEND_BUFFER = send_buffer()
app = QuartTrio(__name__)


@app.websocket(PATH)
async def hub_socket() -> None:
    await websocket.accept()
    outbox, inbox = trio.open_memory_channel[str](SEND_BUFFER)

    def offer(text: str) -> bool:
        try:
            outbox.send_nowait(text)
        except trio.WouldBlock:
            return False
        except trio.ClosedResourceError:
            pass
        return True

    async def sender() -> None:
        async for text in inbox:
            await websocket.send(text)

    async with trio.open_nursery() as nursery:
        peer = Peer(offer, nursery.cancel_scope.cancel)
        nursery.start_soon(sender)
        try:
            while True:
                handle(peer, await websocket.receive())  # type: ignore[arg-type]
        finally:
            leave_all(peer)
            outbox.close()
            nursery.cancel_scope.cancel()
    if peer.slow:
        with trio.move_on_after(1):
            await websocket.close(POLICY_VIOLATION)


async def main() -> None:
    from functools import partial

    from hypercorn.trio import serve

    port, hypercorn_config = config()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, hypercorn_config))
        announce(port)


if __name__ == "__main__":
    raise_nofile()
    trio.run(main)

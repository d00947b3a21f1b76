"""One WebSocket connection: handshake, reader, sender, and the calls in between.

Each connection is one task (the ASGI app call the server makes) with a nursery of
its own: a *sender* draining the socket's bounded outbox into the socket, the
*reader* (the task itself) decoding frames, and one task per call. Calls on one
socket run concurrently; at most ``send_buffer`` at once, after which the reader
stops reading (TCP pushes back on the client), since every reply needs a place in
the outbox anyway.

Batching: when the engine offers :data:`SEND_MANY` (triosvc's own engine does, see
:mod:`triosvc.web.engines.native.websocket`), the sender takes what else is queued along
with each message, up to :data:`BATCH_SIZE` characters, and sends it as one ASGI message,
which the engine writes at once: in a burst (a broadcast fan-out) one write, syscall and
checkpoint per batch instead of per message. Backpressure is unchanged: the sender takes
the next batch only once the engine took the last one (its write returned), so a socket
whose peer reads nothing holds one batch in its write, its outbox fills up, and the hub
drops it as a slow consumer; a batch adds at most ``BATCH_SIZE`` characters plus one
message to what the outbox bounds. Elsewhere (hypercorn) one ``websocket.send`` per message.

Ending: the client leaves (the reader sees the disconnect), or the hub asks the
socket to close (slow consumer: 1008; shutdown: 1001), which cancels the sender; it
then tries the close frame for at most CLOSE_TIMEOUT and ends the connection. Either
way the socket leaves the hub, its calls are cancelled, and ``@on_disconnect`` runs.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import trio

from ..web.asgi import refuse_websocket
from .protocol import BadCall, decode_call, encode_connected, encode_error

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..web.asgi import Receive, Scope, Send
    from .endpoint import WebSocketEndpoint
    from .hub import SocketState
    from .protocol import Call

__all__ = ["CLOSE_TIMEOUT", "serve_connection"]

LOGGER = logging.getLogger("triosvc.ws")

#: Seconds a close frame may take to go out before the connection is given up on.
CLOSE_TIMEOUT = 1.0

#: The native engine's private ASGI extension: several messages in one write (its name in
#: triosvc.web.engines.native.websocket, which this layer does not import).
SEND_MANY = "triosvc.websocket.send_many"

#: Characters of queued messages a sender takes into one batch (then one message more at
#: most): about one socket send buffer's worth, and what a batch adds to memory per socket.
BATCH_SIZE = 64 * 1024


async def serve_connection(
    endpoint: WebSocketEndpoint, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one WebSocket from its handshake to its end."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    refusal = endpoint.refusal()
    if refusal is not None:
        await refuse_websocket(scope, send, refusal)
        return
    socket_id = uuid.uuid4().hex
    hub = endpoint.hub
    state = hub.register(socket_id)
    endpoint.connections.up()
    accepted = False
    data = endpoint.context_data(scope)
    try:
        # First in the outbox, whatever a connect hook may send the socket meanwhile.
        state.outbox.send_nowait(encode_connected(socket_id))
        refusal = await endpoint.connect(socket_id, scope)
        if refusal is not None:
            await refuse_websocket(scope, send, refusal)
            return
        await send({"type": "websocket.accept"})
        accepted = True
        extensions = scope.get("extensions")
        batches = isinstance(extensions, dict) and SEND_MANY in extensions
        await _Connection(endpoint, state, send, data, batches).run(receive)
    finally:
        hub.unregister(socket_id)
        endpoint.connections.down()
        if accepted:
            await endpoint.disconnected(socket_id, data)


class _Connection:
    def __init__(
        self,
        endpoint: WebSocketEndpoint,
        state: SocketState,
        send: Send,
        data: Mapping[str, object],
        batches: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self.send = send
        self.data = data
        #: Whether the engine takes several messages at once (SEND_MANY).
        self.batches = batches
        self.call_slots = trio.Semaphore(endpoint.hub.send_buffer)

    async def run(self, receive: Receive) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender, nursery.cancel_scope)
            await self._reader(receive, nursery)
            nursery.cancel_scope.cancel()

    async def _reader(self, receive: Receive, nursery: trio.Nursery) -> None:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            frame = text if text is not None else message.get("bytes") or b""
            call = decode_call(frame)  # type: ignore[arg-type]
            if isinstance(call, BadCall):
                reply = encode_error(call.correlation_id, call.exc_type, call.value, [call.value])
                self.endpoint.hub.send(self.state.socket_id, reply)
                continue
            await self.call_slots.acquire()
            nursery.start_soon(self._call, call)

    async def _call(self, call: Call) -> None:
        try:
            reply = await self.endpoint.call(self.state.socket_id, call, self.data)
        finally:
            self.call_slots.release()
        self.endpoint.hub.send(self.state.socket_id, reply)

    async def _sender(self, connection_scope: trio.CancelScope) -> None:
        state = self.state
        inbox = state.inbox
        with state.sender_scope:
            async for message in inbox:
                if self.batches:
                    batch = [message]
                    size = len(message)
                    while size < BATCH_SIZE:
                        try:
                            message = inbox.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        batch.append(message)
                        size += len(message)
                    if len(batch) > 1:
                        await self.send({"type": SEND_MANY, "messages": batch})
                        continue
                    message = batch[0]
                await self.send({"type": "websocket.send", "text": message})
        if state.close_code is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.send({"type": "websocket.close", "code": state.close_code})
        connection_scope.cancel()

"""A service with WebSocket methods beside an HTTP route, for ``triosvc routes``."""

from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, rpc


class RoomService:
    name = "rooms"
    hub = WebSocketHubProvider()

    @http("GET", "/rooms")
    async def list_rooms(self, request):
        return []

    @rpc
    async def join(self, socket_id, room):
        self.hub.subscribe(socket_id, room)

    @rpc
    def leave(self, socket_id, room):
        self.hub.unsubscribe(socket_id, room)

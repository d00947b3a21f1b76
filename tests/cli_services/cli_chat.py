"""Services with WebSocket and service RPC methods beside an HTTP route, for ``triosvc routes``."""

from triosvc.rpc import rpc as service_rpc
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


class LedgerService:
    """Service RPC methods (triosvc.rpc), listed after the WebSocket ones."""

    name = "ledger"

    @service_rpc
    async def balance(self, account):
        return 0

    @service_rpc
    def credit(self, account, amount):
        return amount

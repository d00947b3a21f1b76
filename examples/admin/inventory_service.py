"""An inventory service with a QuartTrio admin app mounted beside its routes.

Run it from this folder (``pip install 'triosvc[quart]'`` first, or ``pip install -e
'.[test]'`` from the repository's root)::

    triosvc run --config config.yaml inventory_service

- the service: ``GET /items``, ``GET /items/<sku>``, ``POST /orders`` (JSON
  ``{"sku": ..., "quantity": ...}``), and a WebSocket endpoint at ``/ws`` where
  ``follow_orders`` subscribes a socket to ``order_placed`` events;
- the admin, a QuartTrio app (``admin_app.py``) mounted at ``/admin``: a page at
  http://127.0.0.1:8000/admin/, a JSON API under ``/admin/api/``, restocks delivered by a
  background task, and a WebSocket at ``/admin/live`` that sends the stock at every
  change.

Both read and write the same :class:`~stock.Stock`. ``asgi.py`` serves the same thing
with hypercorn instead (``hypercorn -k trio asgi:app``).
"""

from admin_app import create_admin_app
from stock import InvalidInput, OutOfStock, Stock, UnknownItem

from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.web import mount
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, rpc

#: The process's one inventory, shared by the service and its admin app.
STOCK = Stock()

admin_app = create_admin_app(STOCK)


class StockProvider(DependencyProvider):
    """Hands every worker the shared :class:`Stock`."""

    def __init__(self, stock: Stock) -> None:
        self.stock = stock

    async def get_dependency(self, worker_ctx: WorkerContext) -> Stock:
        return self.stock


class InventoryService:
    name = "inventory"

    stock = StockProvider(STOCK)
    hub = WebSocketHubProvider()

    # Requests under /admin/ (HTTP and WebSocket) go to the Quart app; its lifespan runs
    # with the service (before_serving, after_serving, its background tasks).
    admin = mount("/admin", admin_app)

    @http("GET", "/items")
    async def list_items(self, request):
        return self.stock.snapshot()

    @http("GET", "/items/<sku>", expected_exceptions=UnknownItem)
    async def get_item(self, request, sku):
        return self.stock.get(sku).as_dict()

    @http("POST", "/orders", expected_exceptions=(UnknownItem, OutOfStock, InvalidInput))
    async def place_order(self, request):
        order = request.get_json()
        if not isinstance(order, dict):
            raise InvalidInput('expected a JSON object {"sku": ..., "quantity": ...}')
        item = self.stock.take(str(order.get("sku")), order.get("quantity"))
        event = {"sku": item.sku, "quantity": order["quantity"], "left": item.quantity}
        self.hub.broadcast("orders", "order_placed", event)
        return event, 201

    @rpc
    async def follow_orders(self, socket_id):
        """Subscribe this socket to ``order_placed`` events; return the stock now."""
        self.hub.subscribe(socket_id, "orders")
        return self.stock.snapshot()

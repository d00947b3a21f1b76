"""The inventory's admin: a QuartTrio app, mounted by the service at ``/admin``.

It is a plain Quart app: it knows nothing of triosvc, and routes as if it were at the
root (``/``, ``/api/items``); mounted, it sees ``request.root_path == "/admin"``, and
``url_for`` builds ``/admin/...`` links. What it shows of QuartTrio:

- ``before_serving``/``after_serving``: they run in the service's lifespan, before the
  server accepts requests and after it has drained them;
- ``add_background_task``: a restock is answered at once (202) and delivered later, in the
  app's nursery, which lives as long as the service;
- a WebSocket (``/live``): the stock, sent again at every change.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from quart import jsonify, render_template_string, request, url_for, websocket
from quart_trio import QuartTrio
from stock import Delivery, Stock, StockError

if TYPE_CHECKING:
    from quart.typing import ResponseReturnValue

LOGGER = logging.getLogger("inventory.admin")

DASHBOARD = """<!doctype html>
<title>Inventory admin</title>
<h1>Inventory</h1>
<table>
  <tr><th>SKU</th><th>Name</th><th>Quantity</th></tr>
  {% for item in items %}
  <tr><td>{{ item.sku }}</td><td>{{ item.name }}</td><td>{{ item.quantity }}</td></tr>
  {% endfor %}
</table>
<p>API: <a href="{{ url_for('list_items') }}">{{ url_for('list_items') }}</a>,
live stock: <code>{{ url_for('live') }}</code> (WebSocket).</p>
"""


def create_admin_app(stock: Stock) -> QuartTrio:
    """The admin app over ``stock`` (the same object the service uses)."""
    app = QuartTrio("inventory_admin")
    #: Seconds a restock takes to arrive (a supplier's lead time, shortened).
    app.config["DELIVERY_SECONDS"] = 2.0
    #: At shutdown, deliveries still on their way get this long, then are cancelled.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 3

    @app.before_serving
    async def started() -> None:
        LOGGER.info("admin ready: %d items", len(stock.items))

    @app.after_serving
    async def stopped() -> None:
        pending = sum(not d.delivered for d in stock.deliveries.values())
        LOGGER.info("admin stopping; %d deliveries still on their way", pending)

    @app.errorhandler(StockError)
    async def stock_error(error: StockError) -> ResponseReturnValue:
        # The same JSON error body as the service's own answers.
        body = {"error": type(error).__name__, "message": str(error)}
        return jsonify(body), error.status_code

    @app.get("/")
    async def dashboard() -> ResponseReturnValue:
        return await render_template_string(DASHBOARD, items=stock.items.values())

    @app.get("/api/items")
    async def list_items() -> ResponseReturnValue:
        return jsonify(stock.snapshot())

    @app.put("/api/items/<sku>")
    async def put_item(sku: str) -> ResponseReturnValue:
        data = await request.get_json(silent=True) or {}
        item = stock.put(sku, data.get("name", ""), data.get("quantity"))
        return item.as_dict()

    @app.post("/api/items/<sku>/restock")
    async def restock(sku: str) -> ResponseReturnValue:
        data = await request.get_json(silent=True) or {}
        delivery = stock.order_delivery(sku, data.get("quantity"))
        app.add_background_task(deliver, delivery)
        return delivery.as_dict(), 202, {"Location": url_for("list_deliveries")}

    async def deliver(delivery: Delivery) -> None:
        await trio.sleep(app.config["DELIVERY_SECONDS"])
        stock.receive(delivery)
        LOGGER.info("delivered %s", delivery)

    @app.get("/api/deliveries")
    async def list_deliveries() -> ResponseReturnValue:
        return jsonify([d.as_dict() for d in stock.deliveries.values()])

    @app.websocket("/live")
    async def live() -> None:
        seen = -1
        while True:
            seen = await stock.wait_for_change(seen)
            await websocket.send_json(stock.snapshot())

    return app

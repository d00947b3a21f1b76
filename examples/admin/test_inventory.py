"""Tests of the admin example: the service and its mounted QuartTrio app, over real sockets.

The pytest plugin's fixtures (``web_config``, ``runner_factory``, ``web_session``,
``websocket``) start the service, whose mount starts the admin app's lifespan with it:
nothing here starts the Quart app by hand. Each test runs under ``trio.fail_after``, and
waits on events (the stock's changes, WebSocket messages), never on sleeps.
"""

import json

import httpx
import pytest
import trio
from inventory_service import STOCK, InventoryService, admin_app
from trio_websocket import open_websocket_url

#: Seconds any one test may take: a local server answers in milliseconds.
TIMEOUT = 10


@pytest.fixture(autouse=True)
def fresh_stock(monkeypatch):
    """Every test starts from the demo items; restocks arrive at once."""
    STOCK.reset()
    monkeypatch.setitem(admin_app.config, "DELIVERY_SECONDS", 0)


@pytest.fixture
async def inventory(runner_factory, web_config, web_session) -> httpx.AsyncClient:
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, InventoryService)
    return web_session


async def test_the_service_and_the_admin_share_the_stock(inventory):
    with trio.fail_after(TIMEOUT):
        ordered = await inventory.post("/orders", json={"sku": "bolt-m6", "quantity": 20})
        admin_view = await inventory.get("/admin/api/items")
        edited = await inventory.put(
            "/admin/api/items/screw-m4", json={"name": "M4 screw", "quantity": 50}
        )
        service_view = await inventory.get("/items/screw-m4")
    assert (ordered.status_code, ordered.json()) == (
        201,
        {"sku": "bolt-m6", "quantity": 20, "left": 100},
    )
    assert {"sku": "bolt-m6", "name": "M6 bolt", "quantity": 100} in admin_view.json()
    assert edited.status_code == 200
    assert service_view.json() == {"sku": "screw-m4", "name": "M4 screw", "quantity": 50}


async def test_errors_are_json_on_both_sides(inventory):
    with trio.fail_after(TIMEOUT):
        too_many = await inventory.post("/orders", json={"sku": "washer-m6", "quantity": 4})
        unknown = await inventory.get("/items/nothing")
        admin_unknown = await inventory.post("/admin/api/items/nothing/restock", json={})
    assert (too_many.status_code, too_many.json()["error"]) == (409, "OutOfStock")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "UnknownItem")
    assert (admin_unknown.status_code, admin_unknown.json()["error"]) == (404, "UnknownItem")


async def test_the_admin_page_links_under_its_mount(inventory):
    with trio.fail_after(TIMEOUT):
        bare = await inventory.get("/admin")
        page = await inventory.get("/admin/")
    assert (bare.status_code, bare.headers["location"]) == (308, "/admin/")
    assert page.status_code == 200
    assert "<td>M6 washer</td><td>3</td>" in page.text
    assert 'href="/admin/api/items"' in page.text  # Quart's url_for knows its root_path


async def test_a_restock_is_delivered_by_a_background_task(inventory, web_config):
    with trio.fail_after(TIMEOUT):
        async with live_stock(web_config) as live:
            assert quantity_of(await live.get_message(), "washer-m6") == 3
            answer = await inventory.post(
                "/admin/api/items/washer-m6/restock", json={"quantity": 100}
            )
            assert (answer.status_code, answer.json()["delivered"]) == (202, False)
            # The answer came before the delivery: the live page sees the stock change twice,
            # once for the delivery ordered, once for it received.
            while quantity_of(await live.get_message(), "washer-m6") != 103:
                pass
        deliveries = await inventory.get(answer.headers["location"])
    assert answer.headers["location"] == "/admin/api/deliveries"
    assert deliveries.json() == [{"id": 1, "sku": "washer-m6", "quantity": 100, "delivered": True}]


async def test_orders_are_pushed_to_websocket_followers(inventory, websocket):
    with trio.fail_after(TIMEOUT):
        follower = await websocket()
        stock_now = await follower.rpc("follow_orders")
        await inventory.post("/orders", json={"sku": "nut-m6", "quantity": 5})
        event = await follower.wait_for_event("order_placed")
    assert {"sku": "nut-m6", "name": "M6 nut", "quantity": 80} in stock_now
    assert event == {"sku": "nut-m6", "quantity": 5, "left": 75}


# --- helpers -------------------------------------------------------------------------------------


def quantity_of(message: str, sku: str) -> int:
    return {item["sku"]: item["quantity"] for item in json.loads(message)}[sku]


def live_stock(web_config: dict[str, object]):
    """A WebSocket client of the admin's ``/admin/live`` (trio-websocket)."""
    return open_websocket_url(f"ws://{web_config['WEB_SERVER_ADDRESS']}/admin/live")

"""The pytest plugin's fixtures, used as a user would."""

from __future__ import annotations

import trio

from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, rpc


class GreetingService:
    name = "greetings"
    hub = WebSocketHubProvider()

    @http("GET", "/hello/<name>")
    async def hello(self, request, name):
        return f"hello {name}"

    @rpc
    async def greet(self, socket_id, name):
        self.hub.unicast(socket_id, "greeted", {"name": name})
        return f"hello {name}"


async def test_web_config_listens_on_a_free_loopback_port(web_config):
    host, port = str(web_config["WEB_SERVER_ADDRESS"]).rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0


async def test_runner_factory_and_web_session(runner_factory, web_config, web_session):
    runner = await runner_factory(web_config, GreetingService)
    with trio.fail_after(10):
        response = await web_session.get("/hello/ada")
    assert response.status_code == 200
    assert response.text == "hello ada"
    assert runner.url == f"http://{web_config['WEB_SERVER_ADDRESS']}"


async def test_websocket_rpc_and_events(runner_factory, web_config, websocket):
    await runner_factory(web_config, GreetingService)
    with trio.fail_after(10):
        ws = await websocket()
        assert await ws.rpc("greet", name="ada") == "hello ada"
        assert await ws.wait_for_event("greeted") == {"name": "ada"}
        other = await websocket()
        assert other.socket_id != ws.socket_id

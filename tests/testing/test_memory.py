"""The in-memory clients (``asgi_session``, ``memory_websocket``) under ``autojump_clock``.

No socket: the virtual clock jumps only when every task waits, so timeouts and worker limits
are exact (and instant in real time).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from triosvc.exceptions import ServiceUnavailable, Timeout
from triosvc.runners import ServiceRunner
from triosvc.testing.memory import open_asgi_websocket_client, served_app
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketClosed, WebSocketHubProvider, on_connect, rpc

CONFIG = {"WEB_SERVER_ADDRESS": "127.0.0.1:0", "WEB_SERVER_TIMEOUT": 5}


class SlowService:
    name = "slow"
    hub = WebSocketHubProvider()

    @http("GET", "/slow")
    async def slow(self, request):
        await trio.sleep(60)
        return "too late"

    @http("GET", "/long", timeout=10)
    async def long(self, request):
        await trio.sleep(60)
        return "too late"

    @http("GET", "/quick", timeout=2)
    async def quick(self, request):
        return "quick"

    @rpc
    async def nap(self, socket_id, seconds):
        await trio.sleep(seconds)
        return seconds

    @rpc
    async def shout(self, socket_id, room, text):
        self.hub.subscribe(socket_id, room)
        self.hub.broadcast(room, "shouted", {"text": text})
        return "ok"


class GuardedService:
    name = "guarded"

    @on_connect
    async def check(self, socket_id, request):
        if request.args.get("token") != "secret":
            raise ServiceUnavailable("no token")

    @rpc
    async def ping(self, socket_id):
        return "pong"


async def test_an_http_timeout_takes_exactly_web_server_timeout(
    runner_factory, asgi_session, autojump_clock
):
    await runner_factory(CONFIG, SlowService)
    start = trio.current_time()
    response = await asgi_session.get("/slow")
    assert response.status_code == 504
    assert response.json()["error"] == "Timeout"
    assert trio.current_time() - start == pytest.approx(5)


async def test_a_request_waiting_for_a_worker_gets_503_at_its_deadline(
    runner_factory, asgi_session, autojump_clock
):
    await runner_factory({**CONFIG, "WEB_SERVER_MAX_WORKERS": 1}, SlowService)
    start = trio.current_time()
    answers: dict[str, tuple[int, float]] = {}

    async def get(path: str) -> None:
        response = await asgi_session.get(path)
        answers[path] = (response.status_code, trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get, "/long")  # takes the one worker until its timeout, t=10
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(get, "/quick")  # waits for it until its own deadline, t=2

    assert answers["/quick"] == (503, pytest.approx(2))
    assert answers["/long"] == (504, pytest.approx(10))


async def test_asgi_session_needs_a_runner(asgi_session):
    with pytest.raises(RuntimeError, match="runner_factory"):
        await asgi_session.get("/slow")


async def test_a_websocket_call_times_out_in_memory(
    runner_factory, memory_websocket, autojump_clock
):
    await runner_factory(CONFIG, SlowService)
    ws = await memory_websocket()
    assert ws.socket_id
    assert await ws.rpc("nap", seconds=1) == 1
    start = trio.current_time()
    with pytest.raises(Timeout):
        await ws.rpc("nap", seconds=60)
    assert trio.current_time() - start == pytest.approx(5)


async def test_hub_events_in_memory(runner_factory, memory_websocket, autojump_clock):
    await runner_factory(CONFIG, SlowService)
    ada, bob = await memory_websocket(), await memory_websocket()
    assert ada.socket_id != bob.socket_id
    await bob.rpc("shout", room="lobby", text="hi")
    assert await ada.rpc("shout", room="lobby", text="hello") == "ok"
    assert await ada.wait_for_event("shouted") == {"text": "hello"}
    assert await bob.wait_for_event("shouted") == {"text": "hi"}
    assert await bob.wait_for_event("shouted") == {"text": "hello"}


async def test_a_refused_handshake_raises_as_over_a_socket(
    runner_factory, memory_websocket, autojump_clock
):
    await runner_factory(CONFIG, GuardedService)
    with pytest.raises(ServiceUnavailable, match="no token") as caught:
        await memory_websocket()
    assert caught.value.status_code == 503
    ws = await memory_websocket(path="/ws?token=secret")
    assert await ws.rpc("ping") == "pong"


async def test_open_asgi_websocket_client_on_a_runner_built_by_hand(autojump_clock):
    runner = ServiceRunner(CONFIG)
    runner.add_service(SlowService)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)
        async with open_asgi_websocket_client(served_app(runner)) as ws:
            assert await ws.rpc("nap", seconds=3) == 3
        assert ws.close_reason is not None
        assert ws.close_reason.code == 1000
        with pytest.raises(WebSocketClosed):
            await ws.rpc("nap", seconds=1)
        # the server closing the socket (shutdown: 1001) ends the client's calls
        async with open_asgi_websocket_client(served_app(runner)) as ws:
            await runner.stop()
            assert ws.close_reason is not None
            assert ws.close_reason.code == 1001
            with pytest.raises(WebSocketClosed):
                await ws.rpc("nap", seconds=1)

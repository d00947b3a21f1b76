"""The testing helpers of ``triosvc.testing.services`` (SPEC §9), used as a user would.

Timing runs under ``autojump_clock`` through the hook (no socket), so that nothing really
waits; whatever talks over a socket runs under ``trio.fail_after``.
"""

from __future__ import annotations

import threading
from unittest import mock

import pytest
import trio
import trio.testing
from werkzeug.test import EnvironBuilder

from triosvc.exceptions import MethodNotFound, NotFound, RpcTimeout, ServiceUnavailable, Timeout
from triosvc.extensions import DependencyProvider
from triosvc.rpc import RpcProxy
from triosvc.rpc import rpc as service_rpc
from triosvc.runners import ServiceRunner
from triosvc.testing.services import (
    entrypoint_hook,
    replace_dependencies,
    restore_dependencies,
    restrict_entrypoints,
    worker_factory,
)
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHub, WebSocketHubProvider, on_disconnect, rpc

pytest_plugins = ["pytester"]

#: Upper bound, in seconds, for what talks over a socket or waits for a thread.
TIMEOUT = 10


# --- services ---------------------------------------------------------------------------------


class Store:
    """What the ``Database`` provider injects: async and plain methods."""

    async def fetch(self, key: str) -> str:
        raise AssertionError("the real store is never reached in these tests")

    def count(self) -> int:
        raise AssertionError("the real store is never reached in these tests")


class Database(DependencyProvider):
    """Declares what it injects through get_dependency's return annotation."""

    async def setup(self) -> None:
        raise AssertionError("a replaced dependency is never set up")

    async def get_dependency(self, worker_ctx) -> Store:
        return Store()


class Untyped(DependencyProvider):
    """Says nothing about what it injects."""

    async def get_dependency(self, worker_ctx):
        return object()


class Mailer:
    async def send(self, to: str) -> None: ...


class Declared(DependencyProvider):
    """Names its type through dependency_spec (its annotation could not be read at run time)."""

    async def get_dependency(self, worker_ctx) -> Mailer:  # pragma: no cover - always mocked
        return Mailer()

    def dependency_spec(self, blocking: bool) -> type:
        return Mailer


class Recorder(DependencyProvider):
    """Records its per-worker hooks in the list it is given."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    async def get_dependency(self, worker_ctx):
        self.log.append(("get_dependency", worker_ctx.entrypoint.method_name, worker_ctx.data))
        return self.log

    async def worker_setup(self, worker_ctx) -> None:
        self.log.append("worker_setup")

    async def worker_result(self, worker_ctx, result=None, exc=None) -> None:
        self.log.append(("worker_result", result, type(exc).__name__ if exc else None))

    async def worker_teardown(self, worker_ctx) -> None:
        self.log.append("worker_teardown")


class Shop:
    name = "shop"

    db = Database()
    users = RpcProxy("users")
    hub = WebSocketHubProvider()
    other = Untyped()
    mailer = Declared()

    @http("GET", "/items/<key>")
    async def get_item(self, request, key):
        return {"item": await self.db.fetch(key), "count": self.db.count()}

    @http("GET", "/owner/<int:user_id>")
    async def owner(self, request, user_id):
        return await self.users.get_user(user_id)

    @http("GET", "/owner-blocking/<int:user_id>")
    def owner_blocking(self, request, user_id):
        return self.users.get_user(user_id)

    @http("GET", "/health")
    async def health(self, request):
        return "ok"

    @rpc
    async def watch(self, socket_id, key):
        self.hub.subscribe(socket_id, key)
        return key


class BlockingShop:
    """Only plain ``def`` entrypoints: its mocks present the blocking interface."""

    name = "blocking_shop"
    users = RpcProxy("users")

    @http("GET", "/name/<int:user_id>")
    def name_of(self, request, user_id):
        return self.users.get_user(user_id)["name"]


def make_hooked(log: list[object]) -> type:
    """A service whose calls a Recorder sees; one entrypoint of each kind."""

    class Hooked:
        name = "hooked"
        recorder = Recorder(log)

        @http("POST", "/echo/<word>")
        async def echo(self, request, word):
            return {"word": word, "body": request.get_json(silent=True)}

        @http("GET", "/missing/<int:item_id>", expected_exceptions=KeyError)
        async def missing(self, request, item_id):
            raise KeyError(item_id)

        @http("GET", "/fail")
        async def fail(self, request):
            raise NotFound("nothing here")

        @http("GET", "/slow")
        async def slow(self, request):
            await trio.sleep(100)

        @http("GET", "/brief", timeout=2)
        async def brief(self, request):
            await trio.sleep(100)

        @http("GET", "/hold", timeout=600)
        async def hold(self, request):
            await trio.sleep_forever()

        @http("GET", "/thread")
        def thread(self, request):
            return threading.current_thread() is not threading.main_thread()

        @http("GET,POST", "/both")
        async def both(self, request):
            return request.method

        @http("GET", "/other/<word>")
        async def other(self, request, word):
            return word

        @rpc
        async def shout(self, socket_id, word):
            return f"{socket_id}: {word.upper()}"

        @service_rpc
        async def add(self, a, b):
            return a + b

        @service_rpc(timeout=3)
        async def stuck(self):
            await trio.sleep(100)

    return Hooked


def request_for(path: str, method: str = "GET", **options: object):
    """A werkzeug Request, for calling an @http method through the plain hook."""
    return EnvironBuilder(path=path, method=method, **options).get_request()


def local(**config: object) -> dict[str, object]:
    return {"WEB_SERVER_ADDRESS": "127.0.0.1:0", **config}


# --- worker_factory -----------------------------------------------------------------------------


async def test_worker_factory_mocks_every_dependency_after_what_it_injects():
    shop = worker_factory(Shop)

    assert isinstance(shop, Shop)
    # The annotation names Store: async methods are AsyncMocks, plain ones MagicMocks,
    # and names Store lacks do not exist.
    assert isinstance(shop.db.fetch, mock.AsyncMock)
    assert not isinstance(shop.db.count, mock.AsyncMock)
    with pytest.raises(AttributeError):
        shop.db.fetchall  # noqa: B018 - the access is the test
    # The hub's methods are plain calls, with the hub's signatures.
    assert not isinstance(shop.hub.subscribe, mock.AsyncMock)
    with pytest.raises(TypeError):
        shop.hub.subscribe("socket")  # the channel is missing
    # An RpcProxy in a service with async entrypoints: every method is awaited.
    assert isinstance(shop.users.get_user, mock.AsyncMock)
    assert shop.users.service_name == "users"
    # dependency_spec names the type; nothing said: a plain MagicMock.
    assert isinstance(shop.mailer.send, mock.AsyncMock)
    assert isinstance(shop.other, mock.MagicMock)
    assert not isinstance(shop.other.anything, mock.AsyncMock)


async def test_a_worker_factory_instance_runs_its_methods_on_the_mocks():
    shop = worker_factory(Shop)
    shop.db.fetch.return_value = "lamp"
    shop.db.count.return_value = 3
    shop.users.get_user.return_value = {"id": 7}

    assert await shop.get_item(None, "k1") == {"item": "lamp", "count": 3}
    assert await shop.owner(None, 7) == {"id": 7}
    shop.db.fetch.assert_awaited_once_with("k1")
    shop.users.get_user.assert_awaited_once_with(7)


async def test_worker_factory_gives_blocking_services_blocking_proxies():
    service = worker_factory(BlockingShop)
    service.users.get_user.return_value = {"name": "Ada"}

    assert service.name_of(None, 1) == "Ada"
    service.users.get_user.assert_called_once_with(1)


async def test_worker_factory_overrides_win():
    store = object()
    shop = worker_factory(Shop, db=store, other="given")

    assert shop.db is store
    assert shop.other == "given"
    assert isinstance(shop.users.get_user, mock.AsyncMock)  # the rest still mocked


async def test_worker_factory_refuses_an_override_that_is_no_dependency():
    with pytest.raises(ValueError, match="no dependency 'database'") as caught:
        worker_factory(Shop, database=object())

    assert "db, users, hub, other, mailer" in str(caught.value)


# --- entrypoint_hook ------------------------------------------------------------------------------


async def test_entrypoint_hook_runs_the_call_through_the_worker_and_its_dependency_hooks(
    runner_factory,
):
    log: list[object] = []
    runner = await runner_factory(local(), make_hooked(log))

    async with entrypoint_hook(runner, "hooked", "echo", context_data={"user": "ada"}) as echo:
        result = await echo(request_for("/echo/hi", "POST", json={"a": 1}), word="hi")

    assert result == {"word": "hi", "body": {"a": 1}}
    assert log == [
        ("get_dependency", "echo", {"user": "ada"}),
        "worker_setup",
        ("worker_result", result, None),
        "worker_teardown",
    ]


async def test_entrypoint_hook_raises_the_handlers_exception(runner_factory):
    log: list[object] = []
    runner = await runner_factory(local(), make_hooked(log))

    async with entrypoint_hook(runner, "hooked", "missing") as missing:
        with pytest.raises(KeyError):
            await missing(request_for("/missing/3"), item_id=3)

    assert ("worker_result", None, "KeyError") in log
    assert log[-1] == "worker_teardown"


async def test_entrypoint_hook_enforces_web_server_timeout(runner_factory, autojump_clock):
    log: list[object] = []
    runner = await runner_factory(local(WEB_SERVER_TIMEOUT=5), make_hooked(log))

    async with entrypoint_hook(runner, "hooked", "slow") as slow:
        start = trio.current_time()
        with pytest.raises(Timeout, match=r"hooked.slow did not finish"):
            await slow(request_for("/slow"))

    assert trio.current_time() - start == pytest.approx(5)
    assert ("worker_result", None, "Cancelled") in log  # the hooks saw the cancellation


async def test_entrypoint_hook_uses_the_entrypoints_own_timeout(runner_factory, autojump_clock):
    runner = await runner_factory(local(WEB_SERVER_TIMEOUT=5), make_hooked([]))

    async with (
        entrypoint_hook(runner, "hooked", "brief") as brief,
        entrypoint_hook(runner, "hooked", "stuck") as stuck,
    ):
        start = trio.current_time()
        with pytest.raises(Timeout):
            await brief(request_for("/brief"))
        assert trio.current_time() - start == pytest.approx(2)
        # An @rpc method's callers get RpcTimeout, and so does the hook.
        with pytest.raises(RpcTimeout):
            await stuck()
        assert trio.current_time() - start == pytest.approx(2 + 3)


async def test_entrypoint_hook_waits_for_a_worker_slot_until_the_deadline(
    runner_factory, autojump_clock
):
    runner = await runner_factory(
        local(WEB_SERVER_MAX_WORKERS=1, WEB_SERVER_TIMEOUT=5), make_hooked([])
    )

    async with (
        entrypoint_hook(runner, "hooked", "hold") as hold,
        entrypoint_hook(runner, "hooked", "slow") as slow,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(hold, request_for("/hold"))  # takes the only slot
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(ServiceUnavailable):
            await slow(request_for("/slow"))
        # It waited for the slot until its own deadline.
        assert trio.current_time() - start == pytest.approx(5)
        nursery.cancel_scope.cancel()


async def test_entrypoint_hook_runs_blocking_handlers_in_a_thread(runner_factory):
    runner = await runner_factory(local(), make_hooked([]))

    with trio.fail_after(TIMEOUT):
        async with entrypoint_hook(runner, "hooked", "thread") as thread:
            assert await thread(request_for("/thread")) is True


async def test_entrypoint_hook_calls_websocket_and_service_rpc_methods(runner_factory):
    runner = await runner_factory(local(), make_hooked([]))

    async with (
        entrypoint_hook(runner, "hooked", "shout") as shout,
        entrypoint_hook(runner, "hooked", "add") as add,
    ):
        assert await shout("socket-1", word="hi") == "socket-1: HI"
        assert await add(2, b=3) == 5


async def test_entrypoint_hook_http_gives_the_response_a_client_gets(
    runner_factory, web_config, web_session
):
    runner = await runner_factory(web_config, make_hooked([]))

    async with (
        entrypoint_hook(runner, "hooked", "echo") as echo,
        entrypoint_hook(runner, "hooked", "missing") as missing,
        entrypoint_hook(runner, "hooked", "fail") as fail,
    ):
        response = await echo.http("/echo/hi", json={"a": 1})
        assert response.status_code == 200
        assert response.json() == {"word": "hi", "body": {"a": 1}}
        assert response.headers["content-type"] == "application/json"

        for hook, path in ((missing, "/missing/3"), (fail, "/fail")):
            in_process = await hook.http(path)
            with trio.fail_after(TIMEOUT):
                over_the_wire = await web_session.get(path)
            assert in_process.status_code == over_the_wire.status_code
            assert in_process.json() == over_the_wire.json()
            assert in_process.headers["content-type"] == over_the_wire.headers["content-type"]

    assert (in_process.status_code, in_process.json()["error"]) == (404, "NotFound")


async def test_entrypoint_hook_http_defaults_and_context_headers(runner_factory):
    log: list[object] = []
    runner = await runner_factory(local(), make_hooked(log))

    async with entrypoint_hook(runner, "hooked", "fail", context_data={"user_id": 7}) as fail:
        response = await fail.http()  # the entrypoint's own URL and method
    async with entrypoint_hook(runner, "hooked", "both") as both:
        assert (await both.http(method="post")).text == "POST"
        with pytest.raises(ValueError, match="answers GET, POST: pass method="):
            await both.http()

    assert response.status_code == 404
    # Context data travels as X-Triosvc- headers, as from a client.
    assert ("get_dependency", "fail", {"user_id": "7"}) in log


async def test_entrypoint_hook_http_times_out_like_the_server(runner_factory, autojump_clock):
    runner = await runner_factory(local(WEB_SERVER_TIMEOUT=5), make_hooked([]))

    async with entrypoint_hook(runner, "hooked", "slow") as slow:
        start = trio.current_time()
        response = await slow.http()

    assert response.status_code == 504
    assert response.json()["error"] == "Timeout"
    assert trio.current_time() - start == pytest.approx(5)


async def test_entrypoint_hook_http_refuses_what_it_cannot_send(runner_factory):
    runner = await runner_factory(local(), make_hooked([]))

    async with (
        entrypoint_hook(runner, "hooked", "echo") as echo,
        entrypoint_hook(runner, "hooked", "shout") as shout,
    ):
        with pytest.raises(ValueError, match="has variables: pass the path"):
            await echo.http()
        with pytest.raises(ValueError, match=r"served by hooked.other"):
            await echo.http("/other/x", method="GET")
        with pytest.raises(TypeError, match="not an @http entrypoint"):
            await shout.http("/ws")
        # A path no route serves is answered as a client would be answered.
        assert (await echo.http("/echo/a/b")).status_code == 404


async def test_entrypoint_hook_errors_name_what_exists(runner_factory):
    runner = await runner_factory(local(), make_hooked([]))

    with pytest.raises(ValueError, match=r"no service 'nope'.*hooked"):
        async with entrypoint_hook(runner, "nope", "echo"):
            pass
    with pytest.raises(ValueError, match=r"hooked.nope is not an entrypoint.*echo, missing"):
        async with entrypoint_hook(runner, "hooked", "nope"):
            pass
    async with entrypoint_hook(runner, "hooked", "add") as add:
        pass
    with pytest.raises(RuntimeError, match="outside its `async with` block"):
        await add(1, 2)


async def test_entrypoint_hook_needs_a_running_runner(runner_factory):
    runner = ServiceRunner(local())
    runner.add_service(make_hooked([]))
    with pytest.raises(RuntimeError, match="not running"):
        async with entrypoint_hook(runner, "hooked", "add"):
            pass

    await runner_factory(runner)
    async with entrypoint_hook(runner, "hooked", "add") as add:
        assert await add(1, 2) == 3
        with trio.fail_after(TIMEOUT):
            await runner.stop()
        with pytest.raises(RuntimeError, match="stopped"):
            await add(1, 2)


# --- replace_dependencies ----------------------------------------------------------------------


async def test_replace_dependencies_in_a_runner_before_it_starts(
    runner_factory, web_config, web_session
):
    runner = ServiceRunner(web_config)
    runner.add_service(Shop)
    db, users = replace_dependencies(runner, "db", "users")
    db.fetch.return_value = "lamp"
    db.count.return_value = 1
    users.get_user.return_value = {"id": 7}

    await runner_factory(runner)  # Database.setup would raise: it is not set up
    with trio.fail_after(TIMEOUT):
        item = await web_session.get("/items/k1")
        owner = await web_session.get("/owner/7")
        owner_blocking = await web_session.get("/owner-blocking/7")

    assert item.json() == {"item": "lamp", "count": 1}
    assert owner.json() == owner_blocking.json() == {"id": 7}
    db.fetch.assert_awaited_once_with("k1")
    # One mock for both kinds of worker: the blocking one called it without awaiting.
    assert users.get_user.call_args_list == [mock.call(7), mock.call(7)]


async def test_replace_dependencies_uses_replacements_as_given(runner_factory):
    class FakeStore:
        async def fetch(self, key):
            return key.upper()

        def count(self):
            return 0

    runner = ServiceRunner(local())
    runner.add_service(Shop)
    hub = replace_dependencies(runner, "hub", db=FakeStore())
    await runner_factory(runner)

    async with (
        entrypoint_hook(runner, "shop", "get_item") as get_item,
        entrypoint_hook(runner, "shop", "watch") as watch,
    ):
        assert await get_item(request_for("/items/k1"), key="k1") == {"item": "K1", "count": 0}
        assert await watch("socket-1", key="k1") == "k1"

    assert isinstance(hub, WebSocketHub)  # a spec'd mock passes isinstance checks
    hub.subscribe.assert_called_once_with("socket-1", "k1")


async def test_replace_dependencies_refuses_unknown_names_and_a_started_runner(runner_factory):
    runner = ServiceRunner(local())
    runner.add_service(Shop)
    with pytest.raises(ValueError, match=r"no dependency 'database'.*db, users, hub"):
        replace_dependencies(runner, "database")
    with pytest.raises(ValueError, match="no dependency 'cache'"):
        replace_dependencies(Shop, cache=object())
    with pytest.raises(ValueError, match="both mocked and replaced"):
        replace_dependencies(runner, "db", db=object())

    replace_dependencies(runner, "db")  # the real one would not start here
    await runner_factory(runner)
    with pytest.raises(RuntimeError, match="has started"):
        replace_dependencies(runner, "db")


async def test_replace_dependencies_in_a_runner_of_several_services(runner_factory):
    class Other:
        name = "other"
        users = RpcProxy("users")

        @service_rpc
        async def ping(self):
            return await self.users.ping()

    runner = ServiceRunner(local())
    runner.add_service(Shop)
    runner.add_service(Other)
    with pytest.raises(ValueError, match="'users' is a dependency of shop, other"):
        replace_dependencies(runner, "users")
    users, _ = replace_dependencies(runner, "other.users", "db")
    users.ping.return_value = "pong"
    await runner_factory(runner)

    async with entrypoint_hook(runner, "other", "ping") as ping:
        assert await ping() == "pong"


async def test_replace_dependencies_on_a_service_class(runner_factory, web_config, web_session):
    db = replace_dependencies(Shop, "db")
    db.fetch.return_value = "lamp"
    db.count.return_value = 2
    await runner_factory(web_config, Shop)

    with trio.fail_after(TIMEOUT):
        response = await web_session.get("/items/k1")
    assert response.json() == {"item": "lamp", "count": 2}
    assert worker_factory(Shop).db is db  # the class's replacement, in unit tests too

    restore_dependencies()
    assert isinstance(Shop.__dict__["db"], Database)


def test_the_plugin_undoes_class_replacements_after_each_test(pytester):
    pytester.makepyfile(
        """
        from triosvc.extensions import DependencyProvider
        from triosvc.testing import replace_dependencies

        class Provider(DependencyProvider):
            pass

        class Service:
            name = "service"
            dependency = Provider()

        def test_replace():
            replace_dependencies(Service, "dependency")
            assert not isinstance(Service.__dict__["dependency"], Provider)

        def test_restored():
            assert isinstance(Service.__dict__["dependency"], Provider)
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


# --- restrict_entrypoints ----------------------------------------------------------------------


async def test_restrict_entrypoints_serves_only_those_named(
    runner_factory, web_config, web_session
):
    runner = ServiceRunner(web_config)
    runner.add_service(Shop)
    replace_dependencies(runner, "db", "users")
    restrict_entrypoints(runner, "shop", "health", "owner")
    await runner_factory(runner)

    with trio.fail_after(TIMEOUT):
        health = await web_session.get("/health")
        item = await web_session.get("/items/k1")
        blocking = await web_session.get("/owner-blocking/1")

    assert (health.status_code, health.text) == (200, "ok")
    assert item.status_code == blocking.status_code == 404
    assert item.json()["error"] == "NotFound"
    with pytest.raises(ValueError, match=r"shop.watch is not an entrypoint"):
        async with entrypoint_hook(runner, "shop", "watch"):
            pass


async def test_restrict_entrypoints_leaves_out_websocket_methods_and_hooks(
    runner_factory, web_config, websocket
):
    gone: list[str] = []

    class Chatty:
        name = "chatty"

        @rpc
        async def hello(self, socket_id):
            return "hello"

        @rpc
        async def bye(self, socket_id):
            return "bye"

        @on_disconnect
        async def left(self, socket_id):
            gone.append(socket_id)

    runner = ServiceRunner(web_config)
    runner.add_service(Chatty)
    restrict_entrypoints(runner, "chatty", "hello")
    await runner_factory(runner)

    with trio.fail_after(TIMEOUT):
        ws = await websocket()
        assert await ws.rpc("hello") == "hello"
        with pytest.raises(MethodNotFound, match="bye"):
            await ws.rpc("bye")
        await runner.stop()  # closes the socket: its disconnect hooks would have run

    assert gone == []


async def test_restrict_entrypoints_refuses_unknown_names_and_a_started_runner(runner_factory):
    runner = ServiceRunner(local())
    runner.add_service(Shop)
    with pytest.raises(ValueError, match="no entrypoint 'nope'; its entrypoints: get_item, owner"):
        restrict_entrypoints(runner, "shop", "nope")
    with pytest.raises(ValueError, match="no service 'shops'"):
        restrict_entrypoints(runner, "shops", "health")

    replace_dependencies(runner, "db")
    await runner_factory(runner)
    with pytest.raises(RuntimeError, match="has started"):
        restrict_entrypoints(runner, "shop", "health")


async def test_runner_factory_refuses_services_with_a_runner(runner_factory):
    with pytest.raises(TypeError, match="add its services"):
        await runner_factory(ServiceRunner(local()), Shop)

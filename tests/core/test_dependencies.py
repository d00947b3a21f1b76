"""Dependency providers (SPEC §2): the service-level lifecycle around serving, the
per-worker hooks around each call, and how a failing hook is contained."""

from __future__ import annotations

import logging
import threading

import pytest
import trio
import trio.testing

from triosvc.exceptions import BadRequest
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.runners import run_services
from triosvc.web.handlers import http

#: Upper bound, in seconds, for a test that talks over a real socket.
SOCKET_TEST_TIMEOUT = 10

INTERNAL_ERROR = {"error": "InternalServerError", "message": "internal server error"}


class HookFailed(Exception):
    """What a provider's hook raises when the request asks it to."""


def fails_here(worker_ctx: WorkerContext) -> bool:
    """A hook fails for requests carrying ``?fail=1``."""
    request = worker_ctx.args[0]
    return request.args.get("fail") == "1"  # type: ignore[attr-defined]


class Recorder(DependencyProvider):
    """Appends ``<label>.<hook>`` to a shared log at each hook; may fail in one of them."""

    def __init__(self, label: str, log: list[object], *, fail_in: str | None = None) -> None:
        self.label = label
        self.log = log
        self.fail_in = fail_in
        self.results: list[tuple[object, BaseException | None]] = []

    def _hook(self, hook: str, worker_ctx: WorkerContext | None = None) -> None:
        self.log.append(f"{self.label}.{hook}")
        if hook == self.fail_in and (worker_ctx is None or fails_here(worker_ctx)):
            raise HookFailed(f"{self.label}.{hook} failed")

    async def setup(self) -> None:
        self._hook("setup")

    async def stop(self) -> None:
        self._hook("stop")

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        self._hook("get_dependency", worker_ctx)
        return self.label

    async def worker_setup(self, worker_ctx: WorkerContext) -> None:
        self._hook("worker_setup", worker_ctx)

    async def worker_result(
        self, worker_ctx: WorkerContext, result: object = None, exc: BaseException | None = None
    ) -> None:
        self.results.append((result, exc))
        self._hook("worker_result", worker_ctx)

    async def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        self._hook("worker_teardown", worker_ctx)


def recorded(runner, service: str, attr: str) -> Recorder:
    """The bound provider a runner's container uses (the class holds only the prototype)."""
    provider = runner.containers[service].dependencies[attr]
    assert isinstance(provider, Recorder)
    return provider


def refuses_connections(port: int):
    """An awaitable check that nothing accepts connections on 127.0.0.1:``port``."""

    async def check() -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return True
        await stream.aclose()
        return False

    return check()


def port_of(config: dict[str, object]) -> int:
    return int(str(config["WEB_SERVER_ADDRESS"]).rsplit(":", 1)[1])


# -- service-level lifecycle ---------------------------------------------------------------


async def test_setup_runs_before_the_service_accepts_any_request(web_config, http_client):
    log: list[object] = []
    in_setup = trio.Event()
    finish_setup = trio.Event()
    port = port_of(web_config)

    class SlowSetup(Recorder):
        async def setup(self) -> None:
            await super().setup()
            in_setup.set()
            await finish_setup.wait()
            self.log.append("setup done")

    class Service:
        name = "service"
        db = SlowSetup("db", log)

        @http("GET", "/")
        async def index(self, request):
            log.append("method")
            return self.db

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runners = []
            started = trio.Event()

            async def start() -> None:
                runners.append(await nursery.start(run_services, web_config, Service))
                started.set()

            nursery.start_soon(start)
            await in_setup.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert await refuses_connections(port)
            assert runners == []
            finish_setup.set()
            await started.wait()
            runner = runners[0]
            async with http_client(runner) as client:
                response = await client.get("/")
            assert (response.status_code, response.text) == (200, "db")
            await runner.stop()
    assert log[:5] == ["db.setup", "setup done", "db.get_dependency", "db.worker_setup", "method"]
    assert log[-1] == "db.stop"


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
async def test_stop_runs_after_the_last_worker_and_after_the_server_stopped_accepting(
    blocking, web_config, http_client
):
    log: list[object] = []
    port = port_of(web_config)
    entered = trio.Event()
    release = threading.Event()  # a threading.Event serves both kinds of handler
    token = trio.lowlevel.current_trio_token()

    class Checking(Recorder):
        async def stop(self) -> None:
            await super().stop()
            self.log.append("refused in stop" if await refuses_connections(port) else "accepted")

    def enter() -> None:
        log.append("method")
        trio.from_thread.run_sync(entered.set, trio_token=token)

    if blocking:

        class Service:
            name = "service"
            db = Checking("db", log)

            @http("GET", "/slow")
            def slow(self, request):
                enter()
                assert release.wait(timeout=5)
                return "finished"

    else:

        class Service:
            name = "service"
            db = Checking("db", log)

            @http("GET", "/slow")
            async def slow(self, request):
                log.append("method")
                entered.set()
                await trio.to_thread.run_sync(release.wait, 5)
                return "finished"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, web_config, Service)
            responses = []
            async with http_client(runner) as client:

                async def call() -> None:
                    responses.append(await client.get("/slow"))

                nursery.start_soon(call)
                await entered.wait()
                nursery.start_soon(runner.stop)
                await trio.testing.wait_all_tasks_blocked()
                assert "db.stop" not in log  # a worker is still running
                assert await refuses_connections(port)
                release.set()
                await runner.stop()
    assert [(r.status_code, r.text) for r in responses] == [(200, "finished")]
    assert log[-5:] == [
        "method",
        "db.worker_result",
        "db.worker_teardown",
        "db.stop",
        "refused in stop",
    ]


async def test_stop_waits_for_an_abandoned_thread(local_config, runner_factory, asgi_client):
    """A blocking worker past its deadline is abandoned, but it is still a running worker."""
    log: list[object] = []
    release = threading.Event()

    class Service:
        name = "service"
        db = Recorder("db", log)

        @http("GET", "/stuck", timeout=0.2)
        def stuck(self, request):
            assert release.wait(timeout=5)
            log.append("thread returned")
            return "late"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, Service)
        async with asgi_client(runner) as client:
            response = await client.get("/stuck")
        assert response.status_code == 504
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.stop)
            await trio.testing.wait_all_tasks_blocked()
            assert "db.stop" not in log
            assert not runner.stopped
            release.set()
    assert log.index("thread returned") < log.index("db.stop")


async def test_an_abandoned_threads_hooks_wait_for_the_thread(
    local_config, runner_factory, asgi_client
):
    """The client gets its 504 at once; the worker's teardown runs once the thread returns,
    never under a thread that still uses the dependency."""
    log: list[object] = []
    release = threading.Event()
    db = Recorder("db", log)

    class Service:
        name = "service"
        database = db

        @http("GET", "/stuck", timeout=0.2)
        def stuck(self, request):
            assert release.wait(timeout=5)
            log.append("thread returned")
            return "late"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, Service)
        async with asgi_client(runner) as client:
            response = await client.get("/stuck")
            assert response.status_code == 504
            await trio.testing.wait_all_tasks_blocked()
            assert "db.worker_teardown" not in log
            assert runner.containers["service"].statistics().busy_workers == 1
            release.set()
            await runner.containers["service"].wait_idle()
    assert log.index("thread returned") < log.index("db.worker_result")
    assert log.index("db.worker_result") < log.index("db.worker_teardown")
    assert isinstance(db.results[-1][1], trio.Cancelled)


async def test_providers_see_the_application_config(local_config, runner_factory, asgi_client):
    seen = []

    class Database(DependencyProvider):
        async def setup(self) -> None:
            seen.append(self.container.config["DATABASE_URL"])

        async def get_dependency(self, worker_ctx: WorkerContext) -> object:
            return f"connected to {self.container.config['DATABASE_URL']}"

    class Service:
        name = "service"
        db = Database()

        @http("GET", "/")
        async def index(self, request):
            return self.db

    runner = await runner_factory({**local_config, "DATABASE_URL": "sqlite://"}, Service)
    async with asgi_client(runner) as client:
        response = await client.get("/")
    assert seen == ["sqlite://"]
    assert response.text == "connected to sqlite://"


async def test_plain_def_hooks_work_as_in_nameko(local_config, runner_factory, asgi_client):
    """setup and stop run in a worker thread (they may block); per-call hooks inline."""
    calls = []
    trio_thread = threading.get_ident()

    class Database(DependencyProvider):
        def setup(self):
            calls.append(("setup", threading.get_ident() != trio_thread))

        def get_dependency(self, worker_ctx):
            calls.append(("get_dependency", threading.get_ident() == trio_thread))
            return "connection"

        def worker_setup(self, worker_ctx):
            calls.append(("worker_setup", True))

        def worker_result(self, worker_ctx, result=None, exc=None):
            calls.append(("worker_result", result == "used connection"))

        def worker_teardown(self, worker_ctx):
            calls.append(("worker_teardown", True))

        def stop(self):
            calls.append(("stop", threading.get_ident() != trio_thread))

    class Service:
        name = "service"
        db = Database()

        @http("GET", "/")
        async def index(self, request):
            return f"used {self.db}"

    runner = await runner_factory(local_config, Service)
    async with asgi_client(runner) as client:
        assert (await client.get("/")).text == "used connection"
    await runner.stop()
    assert calls == [
        ("setup", True),
        ("get_dependency", True),
        ("worker_setup", True),
        ("worker_result", True),
        ("worker_teardown", True),
        ("stop", True),
    ]


# -- a failing setup --------------------------------------------------------------------------


async def test_a_failing_setup_is_raised_by_start_itself_and_nothing_listens(web_config):
    log: list[object] = []

    class Service:
        name = "service"
        first = Recorder("first", log)
        second = Recorder("second", log, fail_in="setup")
        third = Recorder("third", log)

        @http("GET", "/")
        async def index(self, request):
            return "never"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(HookFailed, match=r"second\.setup failed") as caught:
                await nursery.start(run_services, web_config, Service)
            assert type(caught.value) is HookFailed  # not an exception group
            assert await refuses_connections(port_of(web_config))
    # what was set up is stopped again; what was not is not
    assert log == ["first.setup", "second.setup", "first.stop"]


async def test_a_failing_setup_stops_the_other_services_already_set_up(local_config):
    log: list[object] = []

    class Healthy:
        name = "healthy"
        db = Recorder("healthy.db", log)

        @http("GET", "/healthy")
        async def index(self, request):
            return "never"

    class Broken:
        name = "broken"
        db = Recorder("broken.db", log, fail_in="setup")

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(HookFailed) as caught:
                await nursery.start(run_services, local_config, Healthy, Broken)
            assert type(caught.value) is HookFailed
    assert log == ["healthy.db.setup", "broken.db.setup", "healthy.db.stop"]


# -- per-worker hooks ---------------------------------------------------------------------------


def two_recorder_service(log: list[object]):
    class Service:
        name = "service"
        first = Recorder("first", log)
        second = Recorder("second", log)

        @http("GET", "/async")
        async def async_method(self, request):
            log.append(("method", self.first, self.second))
            return {"from": "async"}

        @http("GET", "/blocking")
        def blocking_method(self, request):
            log.append(("method", self.first, self.second))
            return {"from": "blocking"}

        @http("GET", "/async-fails")
        async def async_fails(self, request):
            log.append(("method", self.first, self.second))
            raise ValueError("handler broke")

        @http("GET", "/blocking-fails")
        def blocking_fails(self, request):
            log.append(("method", self.first, self.second))
            raise ValueError("handler broke")

        @http("GET", "/bad-request")
        async def bad_request(self, request):
            raise BadRequest("missing field")

    return Service


@pytest.mark.parametrize("path", ["/async", "/blocking", "/async-fails", "/blocking-fails"])
async def test_per_worker_hooks_run_in_order(path, local_config, runner_factory, asgi_client):
    log: list[object] = []
    runner = await runner_factory(local_config, two_recorder_service(log))
    async with asgi_client(runner) as client:
        response = await client.get(path)
    assert response.status_code == (500 if path.endswith("fails") else 200)
    assert log[:2] == ["first.setup", "second.setup"]
    call = log[2:]
    # injection and setup in declaration order, then the method with both injected
    assert call[:5] == [
        "first.get_dependency",
        "second.get_dependency",
        "first.worker_setup",
        "second.worker_setup",
        ("method", "first", "second"),
    ]
    # both providers see the outcome, then teardown runs in reverse declaration order
    assert sorted(call[5:7]) == ["first.worker_result", "second.worker_result"]
    assert call[7:] == ["second.worker_teardown", "first.worker_teardown"]


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_worker_result_sees_the_return_value(kind, local_config, runner_factory, asgi_client):
    log: list[object] = []
    runner = await runner_factory(local_config, two_recorder_service(log))
    async with asgi_client(runner) as client:
        response = await client.get(f"/{kind}")
    assert response.json() == {"from": kind}
    for attr in ("first", "second"):
        assert recorded(runner, "service", attr).results == [({"from": kind}, None)]


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_worker_result_sees_the_exception_the_handler_raised(
    kind, local_config, runner_factory, asgi_client
):
    log: list[object] = []
    runner = await runner_factory(local_config, two_recorder_service(log))
    async with asgi_client(runner) as client:
        response = await client.get(f"/{kind}-fails")
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    first = recorded(runner, "service", "first").results
    second = recorded(runner, "service", "second").results
    assert len(first) == len(second) == 1
    result, exc = first[0]
    assert result is None
    assert type(exc) is ValueError
    assert str(exc) == "handler broke"
    assert second[0][1] is exc  # the same exception object for every provider


async def test_worker_result_sees_an_http_error_which_still_answers_the_client(
    local_config, runner_factory, asgi_client
):
    log: list[object] = []
    runner = await runner_factory(local_config, two_recorder_service(log))
    async with asgi_client(runner) as client:
        response = await client.get("/bad-request")
    assert response.status_code == 400
    assert response.json() == {"error": "BadRequest", "message": "missing field"}
    [(result, exc)] = recorded(runner, "service", "first").results
    assert result is None
    assert isinstance(exc, BadRequest)
    assert log[-2:] == ["second.worker_teardown", "first.worker_teardown"]


#: For each failing hook: whether the method runs, and which hooks run after the failure.
FAILING_HOOKS = {
    "get_dependency": False,
    "worker_setup": False,
    "worker_result": True,
    "worker_teardown": True,
}


@pytest.mark.parametrize("kind", ["async", "blocking"])
@pytest.mark.parametrize("hook", list(FAILING_HOOKS))
async def test_a_failing_worker_hook_fails_that_call_only(
    hook, kind, local_config, runner_factory, asgi_client, caplog
):
    log: list[object] = []
    methods: list[str] = []
    entered = trio.Event()
    release = trio.Event()

    class Service:
        name = "service"
        fragile = Recorder("fragile", log, fail_in=hook)

        @http("GET", "/async")
        async def async_work(self, request):
            methods.append(request.args.get("fail", "0"))
            if request.args.get("hold"):
                entered.set()
                await release.wait()
            return {"ok": True}

        @http("GET", "/blocking")
        def blocking_work(self, request):
            methods.append(request.args.get("fail", "0"))
            return {"ok": True}

    runner = await runner_factory(local_config, Service)
    concurrent = []
    with caplog.at_level(logging.ERROR):
        async with asgi_client(runner) as client, trio.open_nursery() as nursery:

            async def hold() -> None:
                concurrent.append(await client.get("/async", params={"hold": "1"}))

            nursery.start_soon(hold)
            await entered.wait()  # a concurrent call is in flight
            failed = await client.get(f"/{kind}", params={"fail": "1"})
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            following = await client.get(f"/{kind}")

    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/json"
    assert failed.json() == INTERNAL_ERROR
    assert [r.status_code for r in concurrent] == [200]
    assert concurrent[0].json() == {"ok": True}
    assert following.status_code == 200
    assert following.json() == {"ok": True}
    assert ("1" in methods) is FAILING_HOOKS[hook]
    assert not runner.stopped
    # the traceback of the hook's failure is logged, never sent
    assert any(
        record.exc_info is not None and isinstance(record.exc_info[1], HookFailed)
        for record in caplog.records
    )
    assert "failed" not in failed.text


async def test_teardown_still_runs_when_worker_result_fails(
    local_config, runner_factory, asgi_client
):
    log: list[object] = []

    class Service:
        name = "service"
        cleanup = Recorder("cleanup", log)
        fragile = Recorder("fragile", log, fail_in="worker_result")

        @http("GET", "/")
        async def index(self, request):
            return "done"

    runner = await runner_factory(local_config, Service)
    async with asgi_client(runner) as client:
        response = await client.get("/", params={"fail": "1"})
    assert response.status_code == 500
    assert log[-2:] == ["fragile.worker_teardown", "cleanup.worker_teardown"]
    assert "cleanup.worker_result" in log


async def test_hooks_of_a_timed_out_worker_still_run(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[object] = []

    class Transaction(Recorder):
        async def worker_teardown(self, worker_ctx: WorkerContext) -> None:
            await super().worker_teardown(worker_ctx)
            await trio.sleep(0.5)  # a rollback that awaits, although the call was cancelled
            self.log.append("rolled back")

    class Service:
        name = "service"
        tx = Transaction("tx", log)

        @http("GET", "/slow", timeout=2)
        async def slow(self, request):
            log.append("method")
            await trio.sleep(100)
            log.append("after the sleep")
            return "never"

    runner = await runner_factory(local_config, Service)
    async with asgi_client(runner) as client:
        response = await client.get("/slow")
    assert response.status_code == 504
    assert response.json()["error"] == "Timeout"
    assert log[1:] == [
        "tx.get_dependency",
        "tx.worker_setup",
        "method",
        "tx.worker_result",
        "tx.worker_teardown",
        "rolled back",
    ]
    [(result, exc)] = recorded(runner, "service", "tx").results
    assert result is None
    assert isinstance(exc, trio.Cancelled)

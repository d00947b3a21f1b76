"""Workers (SPEC §2): one fresh service instance per call, async and blocking handlers,
injected dependencies, and the worker context (call ids, context data from headers)."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from triosvc.exceptions import BadRequest
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.web.handlers import http

#: Upper bound, in seconds, for a test that talks over a real socket.
SOCKET_TEST_TIMEOUT = 10


class Context(DependencyProvider):
    """Injects the worker context itself, so that handlers can report on it."""

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        return worker_ctx


class Value(DependencyProvider):
    """Injects a value naming the method called and whether its worker blocks."""

    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        kind = "blocking" if worker_ctx.blocking else "async"
        return f"{kind} value for {worker_ctx.entrypoint.method_name}"


def describe(worker: object, ctx: WorkerContext) -> dict[str, object]:
    return {
        "call_id": ctx.call_id,
        "call_id_stack": ctx.call_id_stack,
        "blocking": ctx.blocking,
        "data": dict(ctx.data),
        "service_is_self": ctx.service is worker,
        "service_name": ctx.service_name,
    }


class ContextService:
    name = "ctx"

    context = Context()
    value = Value()

    @http("GET", "/async/context")
    async def async_context(self, request):
        return describe(self, self.context)

    @http("GET", "/blocking/context")
    def blocking_context(self, request):
        return describe(self, self.context)

    @http("GET", "/async/value")
    async def async_value(self, request):
        return {"value": self.value, "class_attribute": type(type(self).value).__name__}

    @http("GET", "/blocking/value")
    def blocking_value(self, request):
        return {"value": self.value, "class_attribute": type(type(self).value).__name__}


# -- a fresh instance per call ---------------------------------------------------------


class StatefulService:
    """Every call sets state on self and reports what it found there first."""

    name = "stateful"

    instances: list[object] = []

    @http("POST", "/async/<word>")
    async def async_remember(self, request, word):
        return self._remember(word)

    @http("POST", "/blocking/<word>")
    def blocking_remember(self, request, word):
        return self._remember(word)

    #: Set by the test: concurrent calls wait here until all of them have set their word.
    all_arrived: trio.Event | None = None
    arrived = 0

    @http("POST", "/async-together/<word>")
    async def async_together(self, request, word):
        before = getattr(self, "word", None)
        self.word = word
        type(self).arrived += 1
        if type(self).arrived == 3:
            type(self).all_arrived.set()
        await type(self).all_arrived.wait()
        return {"before": before, "after": self.word}

    def _remember(self, word):
        type(self).instances.append(self)
        before = getattr(self, "word", None)
        self.word = word
        return {"before": before, "after": self.word}


@pytest.fixture
def stateful():
    StatefulService.instances = []
    StatefulService.arrived = 0
    StatefulService.all_arrived = trio.Event()
    yield StatefulService
    StatefulService.instances = []
    StatefulService.all_arrived = None


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_state_set_on_self_does_not_leak_between_calls(
    kind, stateful, runner_factory, local_config, asgi_client
):
    runner = await runner_factory(local_config, stateful)
    async with asgi_client(runner) as client:
        answers = [(await client.post(f"/{kind}/{word}")).json() for word in ("a", "b", "c")]
    assert answers == [
        {"before": None, "after": "a"},
        {"before": None, "after": "b"},
        {"before": None, "after": "c"},
    ]
    instances = stateful.instances
    assert len(instances) == 3
    assert len({id(instance) for instance in instances}) == 3
    assert all(type(instance) is stateful for instance in instances)
    assert not hasattr(stateful, "word")  # nothing was written on the class


async def test_concurrent_calls_get_their_own_instances(
    stateful, runner_factory, local_config, asgi_client
):
    runner = await runner_factory(local_config, stateful)
    answers: dict[str, object] = {}
    async with asgi_client(runner) as client:

        async def call(word: str) -> None:
            answers[word] = (await client.post(f"/async-together/{word}")).json()

        async with trio.open_nursery() as nursery:
            for word in ("x", "y", "z"):
                nursery.start_soon(call, word)
    assert answers == {word: {"before": None, "after": word} for word in ("x", "y", "z")}


# -- async handlers as trio tasks, plain def in threads ---------------------------------


def make_twin_services(threads: list[tuple[str, threading.Thread]]):
    """Two services with the same logic, one in async handlers and one in plain def."""

    def answer(request, kind):
        if kind == "text":
            return "hello"
        if kind == "bytes":
            return b"\x00\x01"
        if kind == "json":
            return {"n": int(request.args.get("n", "0")) + 1}
        if kind == "list":
            return [1, "two", None]
        if kind == "none":
            return None
        if kind == "tuple":
            return {"created": True}, 201, {"X-Extra": "yes"}
        if kind == "nameko":
            return 202, {"X-Extra": "nameko"}, "accepted"
        if kind == "echo":
            return {"got": request.get_json()}
        if kind == "bad":
            raise BadRequest("no good")
        if kind == "crash":
            raise RuntimeError("secret details")
        raise AssertionError(kind)

    class AsyncTwin:
        name = "async_twin"

        @http("GET,POST", "/async/<kind>")
        async def handle(self, request, kind):
            threads.append(("async", threading.current_thread()))
            await trio.lowlevel.checkpoint()  # a trio task may await
            return answer(request, kind)

    class BlockingTwin:
        name = "blocking_twin"

        @http("GET,POST", "/blocking/<kind>")
        def handle(self, request, kind):
            threads.append(("blocking", threading.current_thread()))
            with pytest.raises(RuntimeError):
                trio.lowlevel.current_task()  # no trio task here: a worker thread
            return answer(request, kind)

    return AsyncTwin, BlockingTwin


TWIN_CASES = [
    # kind, method, json body, status, content type, body check
    ("text", "GET", None, 200, "text/plain; charset=utf-8", b"hello"),
    ("bytes", "GET", None, 200, "application/octet-stream", b"\x00\x01"),
    ("json", "GET", None, 200, "application/json", b'{"n": 42}'),
    ("list", "GET", None, 200, "application/json", b'[1, "two", null]'),
    ("none", "GET", None, 204, None, b""),
    ("tuple", "GET", None, 201, "application/json", b'{"created": true}'),
    ("nameko", "GET", None, 202, "text/plain; charset=utf-8", b"accepted"),
    ("echo", "POST", {"a": [1, 2]}, 200, "application/json", b'{"got": {"a": [1, 2]}}'),
    (
        "bad",
        "GET",
        None,
        400,
        "application/json",
        b'{"error": "BadRequest", "message": "no good"}',
    ),
    (
        "crash",
        "GET",
        None,
        500,
        "application/json",
        b'{"error": "InternalServerError", "message": "internal server error"}',
    ),
]


@pytest.mark.parametrize(
    ("kind", "method", "body", "status", "content_type", "content"),
    TWIN_CASES,
    ids=[case[0] for case in TWIN_CASES],
)
async def test_async_and_blocking_handlers_give_the_same_answers(
    kind, method, body, status, content_type, content, runner_factory, local_config, asgi_client
):
    threads: list[tuple[str, threading.Thread]] = []
    runner = await runner_factory(local_config, *make_twin_services(threads))
    answers = []
    async with asgi_client(runner) as client:
        for flavour in ("async", "blocking"):
            response = await client.request(
                method, f"/{flavour}/{kind}", params={"n": "41"}, json=body
            )
            answers.append(
                (
                    response.status_code,
                    response.headers.get("content-type"),
                    response.headers.get("x-extra"),
                    response.content,
                )
            )
    assert answers[0] == answers[1]
    assert answers[0][0] == status
    assert answers[0][1] == content_type
    assert answers[0][3] == content
    if kind in ("tuple", "nameko"):
        assert answers[0][2] == ("yes" if kind == "tuple" else "nameko")
    trio_thread = threading.current_thread()
    assert [flavour for flavour, _ in threads] == ["async", "blocking"]
    assert threads[0][1] is trio_thread
    assert threads[1][1] is not trio_thread


async def test_blocking_handlers_run_in_parallel_threads(runner_factory, local_config, http_client):
    """Two blocking calls meet at a barrier: neither can return until the other runs."""
    barrier = threading.Barrier(2, timeout=5)
    seen: list[threading.Thread] = []

    class Parallel:
        name = "parallel"

        @http("GET", "/meet")
        def meet(self, request):
            seen.append(threading.current_thread())
            barrier.wait()
            return "met"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, Parallel)
        results: list[tuple[int, str]] = []
        async with http_client(runner) as client:

            async def call() -> None:
                response = await client.get("/meet")
                results.append((response.status_code, response.text))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                nursery.start_soon(call)
    assert results == [(200, "met"), (200, "met")]
    assert len(set(seen)) == 2
    assert threading.current_thread() not in seen


async def test_a_blocking_handler_does_not_block_the_event_loop(
    runner_factory, local_config, http_client
):
    release = threading.Event()
    entered = trio.Event()
    token = trio.lowlevel.current_trio_token()

    class Mixed:
        name = "mixed"

        @http("GET", "/block")
        def block(self, request):
            trio.from_thread.run_sync(entered.set, trio_token=token)
            assert release.wait(timeout=5)
            return "unblocked"

        @http("GET", "/ping")
        async def ping(self, request):
            return "pong"

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await runner_factory(local_config, Mixed)
        async with http_client(runner) as client, trio.open_nursery() as nursery:
            blocked: list[str] = []

            async def call_block() -> None:
                blocked.append((await client.get("/block")).text)

            nursery.start_soon(call_block)
            await entered.wait()
            for _ in range(3):
                response = await client.get("/ping")
                assert (response.status_code, response.text) == (200, "pong")
            assert blocked == []  # still blocked while the pings were answered
            release.set()
    assert blocked == ["unblocked"]


# -- dependencies and the worker context -------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_dependencies_are_injected_as_attributes(
    kind, runner_factory, local_config, asgi_client
):
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(f"/{kind}/value")
    assert response.status_code == 200
    assert response.json() == {
        "value": f"{kind} value for {kind}_value",
        # the class keeps its provider: the value is set on the worker instance only
        "class_attribute": "Value",
    }


@pytest.mark.parametrize(("kind", "blocking"), [("async", False), ("blocking", True)])
async def test_worker_context_describes_the_call(
    kind, blocking, runner_factory, local_config, asgi_client
):
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(f"/{kind}/context")
    assert response.status_code == 200
    described = response.json()
    assert described["blocking"] is blocking
    assert described["service_is_self"] is True
    assert described["service_name"] == "ctx"
    assert described["call_id"].startswith(f"ctx.{kind}_context.")
    assert described["call_id_stack"] == [described["call_id"]]


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_each_call_has_its_own_call_id(kind, runner_factory, local_config, asgi_client):
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        sequential = [(await client.get(f"/{kind}/context")).json()["call_id"] for _ in range(5)]
        concurrent: list[str] = []

        async def call() -> None:
            concurrent.append((await client.get(f"/{kind}/context")).json()["call_id"])

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
    call_ids = sequential + concurrent
    assert len(call_ids) == 10
    assert len(set(call_ids)) == 10


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_call_id_stack_continues_the_callers_stack(
    kind, runner_factory, local_config, asgi_client
):
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(
            f"/{kind}/context",
            headers={"X-Triosvc-Call-Id-Stack": "gateway.login.1, users.get_user.2"},
        )
    described = response.json()
    assert described["call_id_stack"] == [
        "gateway.login.1",
        "users.get_user.2",
        described["call_id"],
    ]


async def test_call_id_stack_stays_bounded(runner_factory, local_config, asgi_client):
    parents = [f"svc.method.{n}" for n in range(50)]
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(
            "/async/context", headers={"X-Triosvc-Call-Id-Stack": ",".join(parents)}
        )
    stack = response.json()["call_id_stack"]
    assert stack[-1] == response.json()["call_id"]
    assert 2 <= len(stack) <= 11
    assert stack[:-1] == parents[-(len(stack) - 1) :]  # the most recent parents, in order


async def test_context_data_comes_from_prefixed_headers(runner_factory, local_config, asgi_client):
    runner = await runner_factory(local_config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(
            "/async/context",
            headers={
                "x-triosvc-language": "fr",
                "X-TRIOSVC-USER-ID": "42",
                "X-Other": "not context",
            },
        )
    data = response.json()["data"]
    assert data["language"] == "fr"
    assert data["user_id"] == "42"
    assert not any("other" in key for key in data)  # unprefixed headers are not context


async def test_context_header_prefix_is_configurable(runner_factory, local_config, asgi_client):
    config = {**local_config, "WEB_SERVER_CONTEXT_HEADER_PREFIX": "X-Acme-"}
    runner = await runner_factory(config, ContextService)
    async with asgi_client(runner) as client:
        response = await client.get(
            "/async/context",
            headers={
                "X-Acme-Tenant": "blue",
                "X-Triosvc-Language": "fr",
                "X-Acme-Call-Id-Stack": "a.b.c",
            },
        )
    described = response.json()
    assert described["data"]["tenant"] == "blue"
    assert "language" not in described["data"]
    assert described["call_id_stack"] == ["a.b.c", described["call_id"]]


async def test_a_call_cancelled_as_it_takes_a_slot_leaks_nothing(local_config):
    """Cancelled on arrival, with slots free: the slot is not taken, or is given back."""
    from triosvc.core.container import ServiceContainer

    class Service:
        name = "service"

        @http("GET", "/")
        async def index(self, request):
            return "ok"

    container = ServiceContainer(Service, {**local_config, "WEB_SERVER_MAX_WORKERS": 2})
    for _ in range(5):
        with trio.CancelScope() as scope:
            scope.cancel()
            async with container.worker_slot():
                raise AssertionError("a cancelled call must not run")
    stats = container.statistics()
    assert (stats.busy_workers, stats.waiting_calls) == (0, 0)
    with trio.fail_after(5):  # a leaked slot would make this wait forever
        async with container.worker_slot(), container.worker_slot():
            assert container.statistics().busy_workers == 2

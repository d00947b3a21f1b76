"""HTTP middleware (SPEC §4.5): order, early returns, altered responses, errors, deadline, slot."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from werkzeug.wrappers import Response

from triosvc.exceptions import Forbidden, Unauthorized
from triosvc.web.handlers import http

INTERNAL_ERROR = {"error": "InternalServerError", "message": "internal server error"}


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as client``: the services on a real socket."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield client

    return serve


def recorder(log, name, *, blocking=False):
    """A middleware that logs when it enters and leaves, and what call_next gave it."""
    if blocking:

        def middleware(request, call_next):
            log.append(f"{name}>")
            response = call_next(request)
            assert isinstance(response, Response)
            log.append(f"<{name}")
            return response

    else:

        async def middleware(request, call_next):
            log.append(f"{name}>")
            response = await call_next(request)
            assert isinstance(response, Response)
            log.append(f"<{name}")
            return response

    return middleware


class AsyncCallable:
    """A middleware object whose ``__call__`` is async."""

    def __init__(self, log):
        self.log = log

    async def __call__(self, request, call_next):
        self.log.append("object>")
        response = await call_next(request)
        self.log.append("<object")
        return response


def ordered_service():
    log = []

    class Ordered:
        name = "ordered"
        http_middleware = [recorder(log, "service1"), recorder(log, "service2", blocking=True)]

        @http(
            "GET",
            "/both",
            middleware=[
                recorder(log, "endpoint1", blocking=True),
                AsyncCallable(log),
                recorder(log, "endpoint2"),
            ],
        )
        async def both(self, request):
            log.append("handler")
            return "both"

        @http("GET", "/service-only")
        def service_only(self, request):
            log.append("handler")
            return "service only"

    return Ordered, log


async def test_service_wide_middleware_is_outermost_and_the_first_listed_outermost(serve):
    service, log = ordered_service()
    with trio.fail_after(10):
        async with serve(service) as client:
            response = await client.get("/both")
            assert response.text == "both"
            first = list(log)
            log.clear()
            response = await client.get("/service-only")
            assert response.text == "service only"
    assert first == [
        "service1>",
        "service2>",
        "endpoint1>",
        "object>",
        "endpoint2>",
        "handler",
        "<endpoint2",
        "<object",
        "<endpoint1",
        "<service2",
        "<service1",
    ]
    assert log == ["service1>", "service2>", "handler", "<service2", "<service1"]


EARLY = {
    "str": ("early", 200, "text/plain; charset=utf-8", b"early"),
    "bytes": (b"\x00early", 200, "application/octet-stream", b"\x00early"),
    "dict": ({"early": True}, 200, "application/json", b'{"early": true}'),
    "list": ([1, 2], 200, "application/json", b"[1, 2]"),
    "none": (None, 204, None, b""),
    "body_status": (("slow down", 429), 429, "text/plain; charset=utf-8", b"slow down"),
    "nameko_order": ((401, "who are you"), 401, "text/plain; charset=utf-8", b"who are you"),
    "with_headers": (
        ("moved", 302, {"Location": "/elsewhere"}),
        302,
        "text/plain; charset=utf-8",
        b"moved",
    ),
    "response": (
        Response("teapot", status=418, mimetype="text/x-tea"),
        418,
        "text/x-tea; charset=utf-8",
        b"teapot",
    ),
}


def early_service(*, blocking):
    """A service whose middleware returns ``EARLY[name][0]`` for ``?name=...``."""
    handled = []

    if blocking:

        def early(request, call_next):
            return EARLY[request.args["name"]][0]

    else:

        async def early(request, call_next):
            return EARLY[request.args["name"]][0]

    class Early:
        name = "early"

        @http("GET,POST", "/early", middleware=[early])
        async def endpoint(self, request):
            handled.append(request)
            return "handler"

    return Early, handled


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "plain"])
async def test_early_return_of_any_return_value(serve, blocking):
    service, handled = early_service(blocking=blocking)
    with trio.fail_after(10):
        async with serve(service) as client:
            responses = {name: await client.get(f"/early?name={name}") for name in EARLY}
    assert {name: (r.status_code, r.content) for name, r in responses.items()} == {
        name: (status, body) for name, (_, status, _, body) in EARLY.items()
    }
    for name, (_, _, content_type, _) in EARLY.items():
        assert responses[name].headers.get("content-type") == content_type, name
    assert responses["with_headers"].headers["location"] == "/elsewhere"
    assert handled == []


UNAUTHORIZED = {"error": "Unauthorized", "message": "no token"}
FORBIDDEN = {"error": "Forbidden", "message": "handler says no"}


def altering_service():
    seen = []

    async def add_header(request, call_next):
        response = await call_next(request)
        seen.append(("add_header", response.status_code, response.get_json()))
        response.headers["X-Async"] = "yes"
        return response

    def change_status(request, call_next):
        response = call_next(request)
        seen.append(("change_status", response.status_code, response.get_json()))
        if response.status_code == 500:
            # replace the error with an answer of its own
            return {"error": "Unavailable", "message": "try later"}, 503
        response.status_code = 202
        response.headers["X-Plain"] = "yes"
        return response

    async def short_circuit(request, call_next):
        if request.args.get("short"):
            return {"short": True}, 200, [("X-Short", "1")]
        return await call_next(request)

    async def denies(request, call_next):
        if request.args.get("deny"):
            raise Unauthorized("no token")
        return await call_next(request)

    class Altering:
        name = "altering"

        @http("GET", "/alter", middleware=[add_header, change_status, short_circuit, denies])
        async def alter(self, request):
            if request.args.get("fail") == "forbidden":
                raise Forbidden("handler says no")
            if request.args.get("fail") == "crash":
                raise RuntimeError("handler crashed")
            return {"handled": True}

    return Altering, seen


@pytest.mark.parametrize(
    ("query", "status", "body", "seen_status", "seen_body"),
    [
        ("", 202, {"handled": True}, 200, {"handled": True}),
        ("?short=1", 202, {"short": True}, 200, {"short": True}),
        ("?deny=1", 202, UNAUTHORIZED, 401, UNAUTHORIZED),
        ("?fail=forbidden", 202, FORBIDDEN, 403, FORBIDDEN),
        ("?fail=crash", 503, {"error": "Unavailable", "message": "try later"}, 500, INTERNAL_ERROR),
    ],
)
async def test_call_next_always_gives_a_response_to_alter(
    serve, query, status, body, seen_status, seen_body
):
    service, seen = altering_service()
    with trio.fail_after(10):
        async with serve(service) as client:
            response = await client.get(f"/alter{query}")
    assert response.status_code == status
    assert response.json() == body
    assert response.headers["x-async"] == "yes"
    # the outer middleware saw what the inner one made of the answer
    assert seen[0][0] == "change_status"
    assert seen[0][1] == seen_status
    assert seen[0][2] == seen_body
    assert seen[1] == ("add_header", status, body)
    if status == 202:
        assert response.headers["x-plain"] == "yes"
    if query == "?short=1":
        assert response.headers["x-short"] == "1"


def raising_service(exc, *, after_call_next, blocking):
    handled = []

    async def raises_async(request, call_next):
        if after_call_next:
            await call_next(request)
        raise exc

    def raises_plain(request, call_next):
        if after_call_next:
            call_next(request)
        raise exc

    class Raising:
        name = "raising"

        @http("GET", "/raise", middleware=[raises_plain if blocking else raises_async])
        def endpoint(self, request):
            handled.append(True)
            return "handler"

    return Raising, handled


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "plain"])
@pytest.mark.parametrize("after_call_next", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (
            Forbidden("middleware says no"),
            403,
            {"error": "Forbidden", "message": "middleware says no"},
        ),
        (RuntimeError("secret detail"), 500, INTERNAL_ERROR),
    ],
    ids=["forbidden", "crash"],
)
async def test_a_raising_middleware_gives_an_error_response(
    serve, caplog, exc, status, body, after_call_next, blocking
):
    service, handled = raising_service(exc, after_call_next=after_call_next, blocking=blocking)
    with trio.fail_after(10):
        async with serve(service) as client:
            response = await client.get("/raise")
            again = await client.get("/raise")
    assert response.status_code == status
    assert response.json() == body
    assert again.status_code == status
    assert handled == ([True, True] if after_call_next else [])
    if status == 500:
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2
        assert all(r.exc_info is not None for r in errors)


async def test_a_middleware_returning_an_unsupported_value_is_500(serve, caplog):
    async def weird(request, call_next):
        await call_next(request)
        return {1, 2}

    class Weird:
        name = "weird"

        @http("GET", "/weird", middleware=[weird])
        async def endpoint(self, request):
            return "fine"

    with trio.fail_after(10):
        async with serve(Weird) as client:
            response = await client.get("/weird")
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    assert any("set" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_a_middleware_passes_on_what_it_sets_on_the_request(serve):
    async def authenticate(request, call_next):
        request.user = request.headers.get("X-User", "anonymous")
        return await call_next(request)

    def tag(request, call_next):
        request.tags = [*getattr(request, "tags", []), "plain"]
        return call_next(request)

    class Authenticated:
        name = "authenticated"
        http_middleware = [authenticate]

        @http("GET", "/me", middleware=[tag])
        def me(self, request):
            return {"user": request.user, "tags": request.tags}

    with trio.fail_after(10):
        async with serve(Authenticated) as client:
            alice = await client.get("/me", headers={"X-User": "alice"})
            anonymous = await client.get("/me")
    assert alice.json() == {"user": "alice", "tags": ["plain"]}
    assert anonymous.json() == {"user": "anonymous", "tags": ["plain"]}


def slow_service():
    async def slow(request, call_next):
        if request.args.get("slow") == "before":
            await trio.sleep_forever()
        response = await call_next(request)
        if request.args.get("slow") == "after":
            await trio.sleep_forever()
        return response

    class Slow:
        name = "slow"

        @http("GET", "/slow", middleware=[slow], timeout=2)
        async def endpoint(self, request):
            return "done"

    return Slow


@pytest.mark.parametrize("where", ["before", "after"])
async def test_a_slow_middleware_times_out_with_504(
    autojump_clock, runner_factory, local_config, asgi_client, where
):
    with trio.fail_after(10):
        runner = await runner_factory(local_config, slow_service())
        async with asgi_client(runner) as client:
            start = trio.current_time()
            response = await client.get(f"/slow?slow={where}")
            elapsed = trio.current_time() - start
            fast = await client.get("/slow")
    assert response.status_code == 504
    assert response.json()["error"] == "Timeout"
    assert 2 <= elapsed < 3
    assert (fast.status_code, fast.text) == (200, "done")


async def test_middleware_runs_in_the_worker_slot(runner_factory, local_config, http_client):
    entered = []
    release = trio.Event()

    async def gate(request, call_next):
        entered.append(request.args["n"])
        if request.args["n"] == "1":
            await release.wait()
        return await call_next(request)

    class Gated:
        name = "gated"

        @http("GET", "/gated", middleware=[gate])
        async def endpoint(self, request):
            return request.args["n"]

    results = {}
    with trio.fail_after(10):
        runner = await runner_factory({**local_config, "WEB_SERVER_MAX_WORKERS": 1}, Gated)
        container = runner.containers["gated"]
        async with http_client(runner) as client:

            async def fetch(n):
                results[n] = (await client.get(f"/gated?n={n}")).text

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch, "1")
                while entered != ["1"]:
                    await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(fetch, "2")
                while container.statistics().waiting_calls != 1:
                    await trio.testing.wait_all_tasks_blocked()
                # the second call waits for the slot the first one's middleware holds
                assert entered == ["1"]
                assert container.statistics().busy_workers == 1
                release.set()
    assert results == {"1": "1", "2": "2"}
    assert entered == ["1", "2"]

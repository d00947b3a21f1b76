"""What a handler raises, and the error response the client gets (SPEC §4.2)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import pytest
import trio
import werkzeug.exceptions as wz

from triosvc import exceptions
from triosvc.extensions import DependencyProvider
from triosvc.web.handlers import http

JSON = "application/json"
INTERNAL_ERROR = {"error": "InternalServerError", "message": "internal server error"}
SECRET = "db password is hunter2"


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as client``: the services on a real socket."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield client

    return serve


class PaymentRequired(exceptions.HttpError):
    status_code = 402


class Invalid(Exception):
    """An application error a handler expects (no status of its own)."""


class Subinvalid(Invalid):
    pass


class Unprocessable(Exception):
    status_code = 422


class NotAStatus(Exception):
    status_code = "teapot"


class Success(Exception):
    status_code = 200


class Boom(Exception):
    pass


async def raise_in_child(exc):
    async def child():
        await trio.lowlevel.checkpoint()
        raise exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)


#: name -> the exception a handler raises
RAISES = {
    "http_error": lambda: exceptions.HttpError("custom failure", status_code=418),
    "http_error_default": lambda: exceptions.HttpError("no status given"),
    "bad_request": lambda: exceptions.BadRequest("missing field"),
    "unauthorized": lambda: exceptions.Unauthorized("log in first"),
    "forbidden": lambda: exceptions.Forbidden("not yours"),
    "not_found": lambda: exceptions.NotFound("no user 7"),
    "method_not_allowed": lambda: exceptions.MethodNotAllowed("read only"),
    "conflict": lambda: exceptions.Conflict("already exists"),
    "conflict_with_status": lambda: exceptions.Conflict("gone now", status_code=410),
    "user_subclass": lambda: PaymentRequired("pay up"),
    "wz_forbidden": wz.Forbidden,
    "wz_too_many": lambda: wz.TooManyRequests("slow down", retry_after=30),
    "wz_teapot": wz.ImATeapot,
    "wz_not_found": lambda: wz.NotFound("no such thing"),
    "wz_method_not_allowed": lambda: wz.MethodNotAllowed(valid_methods=["GET", "HEAD"]),
    "wz_abort": lambda: wz_abort(410),
    "expected": lambda: Invalid("bad input: 42"),
    "expected_key_error": lambda: KeyError("user"),
    "expected_subclass": lambda: Subinvalid("a subclass of an expected one"),
    "expected_status": lambda: Unprocessable("cannot process"),
    "expected_bad_status": lambda: NotAStatus("status attribute is not a number"),
    "expected_success_status": lambda: Success("an error is not a success"),
    "unexpected": lambda: Boom(SECRET),
    "unexpected_runtime": lambda: RuntimeError(SECRET),
    "unexpected_type_error": lambda: TypeError(SECRET),
}


def wz_abort(code):
    try:
        wz.abort(code)
    except wz.HTTPException as exc:
        return exc
    raise AssertionError("abort did not raise")


EXPECTED = (Invalid, KeyError, Unprocessable, NotAStatus, Success)


class Raising:
    name = "raising"

    @http("GET", "/async/<name>", expected_exceptions=EXPECTED)
    async def raise_async(self, request, name):
        raise RAISES[name]()

    @http("GET", "/sync/<name>", expected_exceptions=EXPECTED)
    def raise_sync(self, request, name):
        raise RAISES[name]()

    @http("GET", "/group/<name>", expected_exceptions=EXPECTED)
    async def raise_in_nursery(self, request, name):
        await raise_in_child(RAISES[name]())

    @http("GET", "/nested-group/<name>", expected_exceptions=EXPECTED)
    def raise_nested_group(self, request, name):
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [RAISES[name]()])])

    @http("GET", "/two-in-a-group")
    async def two_in_a_group(self, request):
        async def fail(exc):
            raise exc  # before any checkpoint: the nursery's cancellation cannot stop it

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, exceptions.Forbidden("one"))
            nursery.start_soon(fail, exceptions.Conflict("two"))

    @http("GET", "/single", expected_exceptions=Invalid)
    async def single_expected(self, request):
        raise Invalid("a single class, not a tuple")

    @http("GET", "/not-expected-here")
    async def not_expected_here(self, request):
        raise Invalid(SECRET)

    @http("GET", "/ok")
    async def ok(self, request):
        return "ok"


#: name -> (status, error, message); message None: check it is a non-empty string
ANSWERS = {
    "http_error": (418, "HttpError", "custom failure"),
    "http_error_default": (500, "HttpError", "no status given"),
    "bad_request": (400, "BadRequest", "missing field"),
    "unauthorized": (401, "Unauthorized", "log in first"),
    "forbidden": (403, "Forbidden", "not yours"),
    "not_found": (404, "NotFound", "no user 7"),
    "method_not_allowed": (405, "MethodNotAllowed", "read only"),
    "conflict": (409, "Conflict", "already exists"),
    "conflict_with_status": (410, "Conflict", "gone now"),
    "user_subclass": (402, "PaymentRequired", "pay up"),
    "wz_forbidden": (403, "Forbidden", wz.Forbidden.description),
    "wz_too_many": (429, "TooManyRequests", "slow down"),
    "wz_teapot": (418, "ImATeapot", wz.ImATeapot.description),
    "wz_not_found": (404, "NotFound", "no such thing"),
    "wz_method_not_allowed": (405, "MethodNotAllowed", wz.MethodNotAllowed.description),
    "wz_abort": (410, "Gone", wz.Gone.description),
    "expected": (400, "Invalid", "bad input: 42"),
    "expected_key_error": (400, "KeyError", str(KeyError("user"))),
    "expected_subclass": (400, "Subinvalid", "a subclass of an expected one"),
    "expected_status": (422, "Unprocessable", "cannot process"),
    "expected_bad_status": (400, "NotAStatus", "status attribute is not a number"),
    "expected_success_status": (400, "Success", "an error is not a success"),
    "unexpected": (500, *INTERNAL_ERROR.values()),
    "unexpected_runtime": (500, *INTERNAL_ERROR.values()),
    "unexpected_type_error": (500, *INTERNAL_ERROR.values()),
}


def check_answer(response, name):
    status, error, message = ANSWERS[name]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == {"error": error, "message": message}
    assert SECRET not in response.text


@pytest.mark.parametrize("name", list(RAISES))
async def test_raised_exceptions_map_to_responses(serve, name):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            responses = {
                kind: await client.get(f"/{kind}/{name}")
                for kind in ("async", "sync", "group", "nested-group")
            }
    for response in responses.values():
        check_answer(response, name)


async def test_werkzeug_exceptions_keep_their_headers(serve):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            too_many = await client.get("/async/wz_too_many")
            not_allowed = await client.get("/sync/wz_method_not_allowed")
    assert too_many.headers["retry-after"] == "30"
    assert not_allowed.headers["allow"] == "GET, HEAD"
    # werkzeug's own text/html Content-Type does not come along
    assert too_many.headers.get_list("content-type") == [JSON]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_expected_exceptions_are_logged_at_warning_without_traceback(serve, caplog, kind):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            response = await client.get(f"/{kind}/expected")
    assert response.status_code == 400
    records = [r for r in caplog.records if "bad input: 42" in r.getMessage()]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.exc_text is None
    assert f"raising.raise_{kind}" in record.getMessage()
    assert "Invalid" in record.getMessage()
    assert "Traceback" not in caplog.text


async def test_expected_exceptions_given_as_one_class(serve):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            response = await client.get("/single")
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid", "message": "a single class, not a tuple"}


async def test_an_exception_expected_elsewhere_is_unexpected_here(serve):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            response = await client.get("/not-expected-here")
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR


@pytest.mark.parametrize("kind", ["async", "sync", "group"])
async def test_unexpected_exceptions_log_a_traceback_and_leak_nothing(serve, caplog, kind):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            response = await client.get(f"/{kind}/unexpected")
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    assert SECRET not in response.text
    assert "Boom" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    record = errors[0]
    assert record.exc_info is not None
    assert "raising.raise" in record.getMessage()
    assert "Traceback" in caplog.text
    assert SECRET in caplog.text


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_debug_mode_shows_the_details(serve, kind):
    with trio.fail_after(10):
        async with serve(Raising, WEB_SERVER_DEBUG=True) as client:
            response = await client.get(f"/{kind}/unexpected")
            handled = await client.get(f"/{kind}/forbidden")
    assert response.status_code == 500
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["error"] == "InternalServerError"
    assert "Boom" in body["message"]
    assert SECRET in body["message"]
    assert "Traceback" in body["traceback"]
    assert f"raise_{kind}" in body["traceback"]
    # debug changes nothing for errors that have their own answer
    check_answer(handled, "forbidden")


async def test_a_group_of_several_exceptions_is_a_500(serve, caplog):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            response = await client.get("/two-in-a-group")
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    assert "one" not in response.text
    assert any(r.exc_info is not None for r in caplog.records if r.levelno >= logging.ERROR)


async def test_one_failing_request_never_affects_the_next(serve):
    with trio.fail_after(10):
        async with serve(Raising) as client:
            statuses = []
            for path in ["/async/unexpected", "/ok", "/sync/unexpected", "/ok", "/group/forbidden"]:
                response = await client.get(path)
                statuses.append(response.status_code)
            last = await client.get("/ok")
    assert statuses == [500, 200, 500, 200, 403]
    assert (last.status_code, last.text) == (200, "ok")


async def test_failing_and_succeeding_requests_at_once(serve):
    results = {}
    with trio.fail_after(10):
        async with serve(Raising) as client:

            async def fetch(index, path):
                results[index] = (await client.get(path)).status_code

            async with trio.open_nursery() as nursery:
                for index in range(30):
                    path = ["/ok", "/async/unexpected", "/sync/unexpected"][index % 3]
                    nursery.start_soon(fetch, index, path)
    assert [results[index] for index in range(30)] == [200, 500, 500] * 10


class FailsOnDemand(DependencyProvider):
    """A provider whose per-worker hooks fail when the request asks them to."""

    async def get_dependency(self, worker_ctx):
        return worker_ctx.args[0].args.get("fail")

    async def worker_setup(self, worker_ctx):
        if worker_ctx.args[0].args.get("fail") == "setup":
            raise Boom(SECRET)

    async def worker_result(self, worker_ctx, result=None, exc=None):
        if worker_ctx.args[0].args.get("fail") == "result":
            raise Boom(SECRET)

    async def worker_teardown(self, worker_ctx):
        if worker_ctx.args[0].args.get("fail") == "teardown":
            raise exceptions.Forbidden("refused in teardown")


class WithFailingProvider:
    name = "with_failing_provider"
    hooks = FailsOnDemand()
    ran: list[str] = []

    @http("GET", "/work")
    async def work(self, request):
        WithFailingProvider.ran.append(self.hooks)
        return "done"


async def test_a_failing_worker_hook_fails_that_call_only(serve):
    WithFailingProvider.ran.clear()
    with trio.fail_after(10):
        async with serve(WithFailingProvider) as client:
            setup = await client.get("/work?fail=setup")
            result = await client.get("/work?fail=result")
            teardown = await client.get("/work?fail=teardown")
            ok = await client.get("/work")
    assert setup.status_code == 500
    assert setup.json() == INTERNAL_ERROR
    assert result.status_code == 500
    assert result.json() == INTERNAL_ERROR
    assert teardown.status_code == 403
    assert teardown.json() == {"error": "Forbidden", "message": "refused in teardown"}
    assert (ok.status_code, ok.text) == (200, "done")
    # the method never ran when its setup failed
    assert WithFailingProvider.ran == ["result", "teardown", None]


class AbortWithResponse:
    name = "abort_with_response"

    @http("GET", "/teapot")
    async def teapot(self, request):
        from werkzeug.wrappers import Response

        wz.abort(Response("short and stout", status=418, headers={"X-Teapot": "yes"}))


async def test_werkzeug_abort_with_a_response_sends_that_response(serve):
    async with serve(AbortWithResponse) as client:
        with trio.fail_after(10):
            response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.text == "short and stout"
    assert response.headers["X-Teapot"] == "yes"

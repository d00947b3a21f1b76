"""Definition errors (SPEC §2): ConfigurationError naming class and attribute, before listening."""

from __future__ import annotations

import types

import pytest
import trio

from triosvc.exceptions import ConfigurationError
from triosvc.extensions import DependencyProvider
from triosvc.runners import ServiceRunner, run_services
from triosvc.web.handlers import http


def add(config, *services):
    """Add ``services`` to a fresh runner; check that nothing listens, and return it."""
    runner = ServiceRunner(config)
    try:
        for service in services:
            runner.add_service(service)
    finally:
        assert runner.url is None
    return runner


def make_service(**attributes):
    """A service class named Made, with a working endpoint and ``attributes``."""

    async def endpoint(self, request):
        return "ok"

    return type("Made", (), {"endpoint": http("GET", "/made")(endpoint), **attributes})


class Valid:
    name = "valid"

    @http("GET", "/valid/<int:item>")
    async def get(self, request, item):
        return {"item": item}


# -- the service's name -------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [{}, {"name": None}, {"name": 42}, {"name": b"made"}, {"name": ""}, {"name": ["made"]}],
    ids=["missing", "none", "int", "bytes", "empty", "list"],
)
def test_missing_or_non_string_name(local_config, attributes):
    service = make_service(**attributes)
    with pytest.raises(ConfigurationError, match=r"\bMade\.name\b"):
        add(local_config, service)


def test_a_name_inherited_from_a_base_class_is_fine(local_config):
    class Child(Valid):
        pass

    runner = add(local_config, Child)
    assert runner.service_names == ["valid"]


def test_two_services_with_one_name(local_config):
    class Other:
        name = "valid"

        @http("GET", "/other")
        async def other(self, request):
            return "other"

    with pytest.raises(ConfigurationError) as caught:
        add(local_config, Valid, Other)
    message = str(caught.value)
    assert "Other.name" in message
    assert "'valid'" in message
    assert "Valid" in message


@pytest.mark.parametrize("not_a_class", [Valid(), "valid", None])
def test_a_service_is_a_class(local_config, not_a_class):
    with pytest.raises(ConfigurationError, match="class"):
        add(local_config, not_a_class)


def test_a_service_must_be_instantiable_without_arguments(local_config):
    class NeedsArguments:
        name = "needs_arguments"

        def __init__(self, database):
            self.database = database

        @http("GET", "/needs")
        async def needs(self, request):
            return "never"

    with pytest.raises(ConfigurationError, match=r"NeedsArguments\b.*instantiable"):
        add(local_config, NeedsArguments)


# -- @http arguments ----------------------------------------------------------------------


def declare(*args, **kwargs):
    """Declare a class ``Declared`` whose method ``endpoint`` carries ``@http(*args, **kwargs)``."""

    class Declared:
        name = "declared"

        @http(*args, **kwargs)
        async def endpoint(self, request, **arguments):
            return "never"

    return Declared


@pytest.mark.parametrize(
    ("method", "named"),
    [
        ("FETCH", "FETCH"),
        ("GET,FETCH", "FETCH"),
        ("GET POST", "GET POST"),
        ("GET;POST", "GET;POST"),
        ("", "''"),
        (" , ", "' , '"),
        (None, "method"),
        (["GET"], "method"),
    ],
)
def test_unknown_http_method(method, named):
    with pytest.raises(ConfigurationError) as caught:
        declare(method, "/x")
    message = str(caught.value)
    assert "Declared.endpoint" in message
    assert "method" in message
    assert named in message


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("no-leading-slash", "slash"),
        ("", "slash"),
        ("/x/<unknown:value>", "unknown"),
        ("/x/<int:value", "malformed"),
        ("/x/<>", "malformed"),
        ("/x/<1value>", "malformed"),
        ("/x/<value>/<value>", "value"),
        ("/x/<int(nonsense=1):value>", "nonsense"),
        (None, "url"),
        (b"/x", "url"),
    ],
)
def test_bad_url_rule(url, named):
    with pytest.raises(ConfigurationError) as caught:
        declare("GET", url)
    message = str(caught.value)
    assert "Declared.endpoint" in message
    assert named in message


def test_bare_http_without_arguments():
    with pytest.raises(ConfigurationError) as caught:

        class Bare:
            name = "bare"

            @http
            async def endpoint(self, request):
                return "never"

    assert "Bare.endpoint" in str(caught.value)
    assert "@http('GET', '/path')" in str(caught.value)


def test_http_without_a_url():
    with pytest.raises(ConfigurationError) as caught:

        class NoUrl:
            name = "no_url"

            @http("GET")
            async def endpoint(self, request):
                return "never"

    assert "NoUrl.endpoint" in str(caught.value)
    assert "url" in str(caught.value)


def other_name(self, request, id): ...
def no_argument(self, request): ...
def no_request(self): ...
def extra_required(self, request, extra): ...
def one_of_two(self, request, a): ...
async def keyword_only_other(self, request, *, b): ...


@pytest.mark.parametrize(
    ("url", "function", "named"),
    [
        ("/u/<int:user_id>", other_name, "user_id"),
        ("/u/<int:user_id>", no_argument, "user_id"),
        ("/u", no_request, "request"),
        ("/u", extra_required, "extra"),
        ("/u/<a>/<b>", one_of_two, "b"),
        ("/u/<a>", keyword_only_other, "b"),
    ],
)
def test_handler_signature_that_cannot_take_the_url_arguments(local_config, url, function, named):
    endpoint = http("GET", url)(copy_function(function))
    service = type("Mismatched", (), {"name": "mismatched", "endpoint": endpoint})
    with pytest.raises(ConfigurationError) as caught:
        add(local_config, service)
    message = str(caught.value)
    assert "Mismatched.endpoint" in message
    assert named in message


def positional(self, request, user_id): ...
async def with_defaults(self, request, user_id=None, other=1): ...
def var_keyword(self, request, **arguments): ...
def var_everything(self, *args, **kwargs): ...
async def keyword_only(self, request, *, user_id): ...


@pytest.mark.parametrize(
    "function", [positional, with_defaults, var_keyword, var_everything, keyword_only]
)
def test_handler_signatures_that_can_take_the_url_arguments(local_config, function):
    endpoint = http("GET", "/u/<int:user_id>")(copy_function(function))
    service = type("Matching", (), {"name": "matching", "endpoint": endpoint})
    add(local_config, service)


def copy_function(function):
    """A fresh copy, so that each test's ``@http`` declares its own entrypoint on it."""
    copy = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def test_http_on_a_staticmethod_below_it():
    with pytest.raises(ConfigurationError) as caught:

        class Static:
            name = "static"

            @http("GET", "/static")
            @staticmethod
            def endpoint(request):
                return "never"

    assert "Static.endpoint" in str(caught.value)
    assert "staticmethod" in str(caught.value)


@pytest.mark.parametrize("wrapper", [staticmethod, classmethod])
def test_http_below_a_staticmethod_or_classmethod(local_config, wrapper):
    def endpoint(request):
        return "never"

    endpoint.__qualname__ = "Wrapped.endpoint"
    service = type(
        "Wrapped", (), {"name": "wrapped", "endpoint": wrapper(http("GET", "/w")(endpoint))}
    )
    with pytest.raises(ConfigurationError) as caught:
        add(local_config, service)
    assert "Wrapped.endpoint" in str(caught.value)
    assert "static or class methods" in str(caught.value)


def test_http_on_something_that_is_not_a_function():
    with pytest.raises(ConfigurationError, match="decorates methods"):

        class NotAFunction:
            name = "not_a_function"

            @http("GET", "/property")
            @property
            def endpoint(self):
                return "never"


@pytest.mark.parametrize(
    "expected",
    ["ValueError", ValueError("instance"), (ValueError, 3), (ValueError, "KeyError"), 42, int],
)
def test_bad_expected_exceptions(expected):
    with pytest.raises(ConfigurationError) as caught:
        declare("GET", "/x", expected_exceptions=expected)
    message = str(caught.value)
    assert "Declared.endpoint" in message
    assert "expected_exceptions" in message


@pytest.mark.parametrize(
    "expected", [ValueError, (ValueError, KeyError), (), (BaseExceptionGroup,)]
)
def test_good_expected_exceptions(local_config, expected):
    add(local_config, declare("GET", "/x", expected_exceptions=expected))


@pytest.mark.parametrize("timeout", [0, -1, "5", True, float("nan"), float("inf"), -0.5, [1]])
def test_bad_timeout(timeout):
    with pytest.raises(ConfigurationError) as caught:
        declare("GET", "/x", timeout=timeout)
    message = str(caught.value)
    assert "Declared.endpoint" in message
    assert "timeout" in message


@pytest.mark.parametrize("timeout", [0.001, 1, 2.5, 3600])
def test_good_timeout(local_config, timeout):
    add(local_config, declare("GET", "/x", timeout=timeout))


async def passing(request, call_next):
    return await call_next(request)


@pytest.mark.parametrize(
    "middleware", [passing, "passing", [42], [passing, None], {"mw": passing}, 7]
)
def test_bad_endpoint_middleware(middleware):
    with pytest.raises(ConfigurationError) as caught:
        declare("GET", "/x", middleware=middleware)
    message = str(caught.value)
    assert "Declared.endpoint" in message
    assert "middleware" in message


@pytest.mark.parametrize(
    "middleware", [passing, "passing", [42], (passing, None), {"mw": passing}, None]
)
def test_bad_service_middleware(local_config, middleware):
    service = make_service(name="made", http_middleware=middleware)
    with pytest.raises(ConfigurationError) as caught:
        add(local_config, service)
    assert "Made.http_middleware" in str(caught.value)


def test_good_middleware(local_config):
    service = make_service(name="made", http_middleware=(passing,))
    add(local_config, service, declare("GET", "/x", middleware=[passing, passing]))


# -- clashes and the runner ---------------------------------------------------------------


def test_two_handlers_of_one_service_on_one_route(local_config):
    class Clashing:
        name = "clashing"

        @http("GET", "/same/<int:item>")
        async def first(self, request, item):
            return "first"

        @http("PUT,GET", "/same/<int:other>")
        async def second(self, request, other):
            return "second"

    with pytest.raises(ConfigurationError) as caught:
        add(local_config, Clashing)
    message = str(caught.value)
    assert "Clashing.second" in message
    assert "Clashing.first" in message
    assert "GET" in message


class Unready(DependencyProvider):
    """Records whether the service was ever set up."""

    set_up: list[str] = []

    async def setup(self):
        Unready.set_up.append(self.container.name)


async def test_definition_errors_stop_run_services_before_anything_starts(local_config):
    class Starts:
        name = "starts"
        unready = Unready()

        @http("GET", "/starts")
        async def starts(self, request):
            return "never"

    Unready.set_up.clear()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigurationError, match=r"Made\.name"):
                await nursery.start(run_services, local_config, Starts, make_service())
    assert Unready.set_up == []

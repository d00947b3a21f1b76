"""CORS (SPEC §4.4): actual requests, preflights, defaults from config, bad options."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from triosvc.exceptions import ConfigurationError, Forbidden
from triosvc.runners import ServiceRunner
from triosvc.web.handlers import http

APP = "https://app.example"
OTHER = "https://other.example"
EVIL = "https://evil.example"

FULL = {
    "origins": [APP, OTHER],
    "methods": ["GET", "POST", "PUT"],
    "headers": ["X-Token", "Authorization"],
    "expose_headers": ["X-Total", "X-Page"],
    "credentials": True,
    "max_age": 600,
}


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as client``: the services on a real socket."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield client

    return serve


def cors_headers(response):
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-")
    }


def tokens(value):
    return {token.strip().lower() for token in value.split(",")}


class Api:
    name = "api"
    calls: list[str] = []

    @http("GET,POST", "/full", cors=FULL)
    async def full(self, request):
        Api.calls.append(request.method)
        return {"ok": True}, 200, {"X-Total": "3"}

    @http("GET", "/full/fails", cors=FULL)
    async def full_fails(self, request):
        raise Forbidden("not for you")

    @http("GET", "/full/crashes", cors=FULL)
    def full_crashes(self, request):
        raise RuntimeError("crash")

    @http("GET,POST", "/star", cors={"origins": "*"})
    async def star(self, request):
        return "star"

    @http("GET", "/star-in-a-list", cors={"origins": ["*"]})
    async def star_in_a_list(self, request):
        return "star"

    @http("GET", "/star-credentials", cors={"origins": "*", "credentials": True})
    async def star_credentials(self, request):
        return "star with credentials"

    @http("GET,DELETE", "/minimal/<int:item>", cors={"origins": [APP]})
    async def minimal(self, request, item):
        Api.calls.append(request.method)
        return {"item": item}

    @http("GET", "/split", cors={"origins": [APP]})
    async def split_get(self, request):
        return "get"

    @http("POST", "/split")
    async def split_post(self, request):
        return "post without cors"

    @http("GET,POST", "/plain")
    async def plain(self, request):
        Api.calls.append(request.method)
        return "plain"


@pytest.fixture(autouse=True)
def _clear_calls():
    Api.calls.clear()


async def test_actual_request_from_an_allowed_origin(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get("/full", headers={"Origin": APP})
            other = await client.post("/full", headers={"Origin": OTHER})
    assert response.status_code == 200
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Total, X-Page",
    }
    assert response.headers.get_list("vary") == ["Origin"]
    assert response.headers["x-total"] == "3"
    assert other.headers["access-control-allow-origin"] == OTHER
    assert other.headers.get_list("vary") == ["Origin"]


async def test_actual_request_with_minimal_options(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get("/minimal/4", headers={"Origin": APP})
    assert response.json() == {"item": 4}
    assert cors_headers(response) == {"access-control-allow-origin": APP}
    assert response.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize("path", ["/star", "/star-in-a-list"])
async def test_any_origin_without_credentials_is_a_star(serve, path):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get(path, headers={"Origin": EVIL})
    assert response.status_code == 200
    assert cors_headers(response) == {"access-control-allow-origin": "*"}


async def test_any_origin_with_credentials_echoes_the_origin(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get("/star-credentials", headers={"Origin": EVIL})
    assert cors_headers(response) == {
        "access-control-allow-origin": EVIL,
        "access-control-allow-credentials": "true",
    }
    assert response.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/full/fails", 403), ("/full/crashes", 500)],
)
async def test_error_responses_carry_the_same_headers(serve, path, status):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get(path, headers={"Origin": APP})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Total, X-Page",
    }
    assert response.headers.get_list("vary") == ["Origin"]


async def test_a_refused_body_carries_the_same_headers(serve):
    with trio.fail_after(10):
        async with serve(Api, WEB_SERVER_MAX_BODY_SIZE=10) as client:
            response = await client.post("/full", headers={"Origin": APP}, content=b"x" * 11)
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == APP
    assert Api.calls == []


async def test_actual_request_from_another_origin_is_served_without_cors(serve):
    origins = [EVIL, "https://app.example.evil", "http://app.example", "null", None]
    with trio.fail_after(10):
        async with serve(Api) as client:
            responses = {
                origin: await client.post("/full", headers={"Origin": origin} if origin else {})
                for origin in origins
            }
    for response in responses.values():
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert cors_headers(response) == {}
    assert Api.calls == ["POST"] * len(origins)


def preflight(origin, method, headers=None):
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    return request_headers


async def test_preflight_allowed(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options(
                "/full", headers=preflight(APP, "POST", "X-Token, content-type")
            )
    assert response.status_code == 204
    assert response.content == b""
    found = cors_headers(response)
    assert found.keys() == {
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
        "access-control-allow-credentials",
    }
    assert found["access-control-allow-origin"] == APP
    assert tokens(found["access-control-allow-methods"]) == {"get", "post", "put"}
    assert tokens(found["access-control-allow-headers"]) >= {"x-token", "content-type"}
    assert tokens(found["access-control-allow-headers"]) <= {
        "x-token",
        "content-type",
        "authorization",
    }
    assert found["access-control-max-age"] == "600"
    assert found["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers.get_list("vary")
    assert Api.calls == []  # a preflight never reaches the handler


async def test_preflight_with_defaults(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options("/minimal/1", headers=preflight(APP, "DELETE"))
            safelisted = await client.options(
                "/minimal/1", headers=preflight(APP, "GET", "Accept, Content-Type")
            )
    assert response.status_code == 204
    found = cors_headers(response)
    assert found["access-control-allow-origin"] == APP
    # methods default to the endpoint's own
    assert tokens(found["access-control-allow-methods"]) >= {"get", "delete"}
    assert "post" not in tokens(found["access-control-allow-methods"])
    assert "access-control-max-age" not in found
    assert "access-control-allow-credentials" not in found
    assert safelisted.status_code == 204
    assert safelisted.headers["access-control-allow-origin"] == APP


async def test_preflight_for_any_origin(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options("/star", headers=preflight(EVIL, "POST"))
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"


REFUSED_PREFLIGHTS = {
    "origin": ("/full", preflight(EVIL, "GET")),
    "method": ("/full", preflight(APP, "DELETE")),
    "header": ("/full", preflight(APP, "POST", "X-Token, X-Evil")),
    # allowed by the policy, but no handler serves PUT there
    "method without a handler": ("/full", preflight(APP, "PUT")),
    "method not the endpoint's": ("/minimal/1", preflight(APP, "POST")),
    "header beyond the safelisted": ("/minimal/1", preflight(APP, "GET", "Authorization")),
    "origin not listed": ("/minimal/1", preflight(OTHER, "GET")),
    "method of a handler without cors": ("/split", preflight(APP, "POST")),
}


async def test_preflight_refused_is_403_without_allow_origin(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            responses = {
                case: await client.options(path, headers=headers)
                for case, (path, headers) in REFUSED_PREFLIGHTS.items()
            }
    assert {case: r.status_code for case, r in responses.items()} == dict.fromkeys(
        REFUSED_PREFLIGHTS, 403
    )
    for response in responses.values():
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-methods" not in response.headers
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "Forbidden"
    assert Api.calls == []


async def test_preflight_on_an_unknown_path_is_404(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options("/nowhere", headers=preflight(APP, "GET"))
    assert response.status_code == 404
    assert cors_headers(response) == {}


async def test_preflight_for_the_method_of_another_handler_uses_its_policy(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            get = await client.options("/split", headers=preflight(APP, "GET"))
            post = await client.post("/split", headers={"Origin": APP})
    assert get.status_code == 204
    assert get.headers["access-control-allow-origin"] == APP
    assert post.text == "post without cors"
    assert cors_headers(post) == {}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": APP}, preflight(APP, "POST"), preflight(APP, "GET", "X-Token")],
)
async def test_endpoint_without_cors_answers_options_with_allow(serve, headers):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options("/plain", headers=headers)
    assert response.status_code == 204
    assert tokens(response.headers["allow"]) == {"get", "head", "post", "options"}
    assert cors_headers(response) == {}
    assert Api.calls == []


async def test_endpoint_without_cors_sends_no_cors_headers(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.get("/plain", headers={"Origin": APP})
    assert response.text == "plain"
    assert cors_headers(response) == {}


async def test_options_without_preflight_headers_on_a_cors_endpoint(serve):
    with trio.fail_after(10):
        async with serve(Api) as client:
            response = await client.options("/full")
    assert response.status_code == 204
    assert tokens(response.headers["allow"]) == {"get", "head", "post", "options"}
    assert "access-control-allow-origin" not in response.headers


class Configured:
    name = "configured"

    @http("GET", "/default")
    async def default(self, request):
        return "default"

    @http("GET", "/replaced", cors={"origins": [OTHER]})
    async def replaced(self, request):
        return "replaced"

    @http("GET", "/disabled", cors=False)
    async def disabled(self, request):
        return "disabled"


CONFIG_CORS = {"origins": [APP], "expose_headers": ["X-Config"], "credentials": True}


async def test_web_server_cors_is_the_default_for_every_endpoint(serve):
    with trio.fail_after(10):
        async with serve(Configured, WEB_SERVER_CORS=CONFIG_CORS) as client:
            actual = await client.get("/default", headers={"Origin": APP})
            refused = await client.get("/default", headers={"Origin": OTHER})
            allowed = await client.options("/default", headers=preflight(APP, "GET"))
    assert cors_headers(actual) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Config",
    }
    assert cors_headers(refused) == {}
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == APP


async def test_decorator_cors_replaces_web_server_cors(serve):
    with trio.fail_after(10):
        async with serve(Configured, WEB_SERVER_CORS=CONFIG_CORS) as client:
            config_origin = await client.get("/replaced", headers={"Origin": APP})
            own_origin = await client.get("/replaced", headers={"Origin": OTHER})
            preflight_config_origin = await client.options(
                "/replaced", headers=preflight(APP, "GET")
            )
    assert cors_headers(config_origin) == {}
    # replaced, not merged: no credentials, no expose_headers from the config
    assert cors_headers(own_origin) == {"access-control-allow-origin": OTHER}
    assert preflight_config_origin.status_code == 403


async def test_cors_false_opts_out_of_web_server_cors(serve):
    with trio.fail_after(10):
        async with serve(Configured, WEB_SERVER_CORS=CONFIG_CORS) as client:
            actual = await client.get("/disabled", headers={"Origin": APP})
            options = await client.options("/disabled", headers=preflight(APP, "GET"))
    assert cors_headers(actual) == {}
    assert options.status_code == 204
    assert cors_headers(options) == {}
    assert "allow" in options.headers


async def test_without_any_cors_no_cors_headers(serve):
    with trio.fail_after(10):
        async with serve(Configured) as client:
            actual = await client.get("/default", headers={"Origin": APP})
            options = await client.options("/default", headers=preflight(APP, "GET"))
    assert cors_headers(actual) == {}
    assert options.status_code == 204
    assert cors_headers(options) == {}


BAD_OPTIONS = [
    ("*", "mapping"),
    (["https://a.example"], "mapping"),
    ({}, "origins"),
    ({"methods": ["GET"]}, "origins"),
    ({"origins": "https://a.example"}, "origins"),
    ({"origins": [1]}, "origins"),
    ({"origins": [""]}, "origins"),
    ({"origins": "*", "origin": ["x"]}, "origin"),
    ({"origins": "*", "methods": "GET"}, "methods"),
    ({"origins": "*", "headers": "X-Token"}, "headers"),
    ({"origins": "*", "expose_headers": [None]}, "expose_headers"),
    ({"origins": "*", "credentials": "yes"}, "credentials"),
    ({"origins": "*", "credentials": 1}, "credentials"),
    ({"origins": "*", "max_age": -1}, "max_age"),
    ({"origins": "*", "max_age": "600"}, "max_age"),
    ({"origins": "*", "max_age": True}, "max_age"),
]


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_invalid_cors_options_on_the_decorator(options, named):
    with pytest.raises(ConfigurationError) as caught:

        class Bad:
            name = "bad"

            @http("GET", "/bad", cors=options)
            async def endpoint(self, request):
                return "never"

    message = str(caught.value)
    assert "Bad.endpoint" in message
    assert "cors" in message
    assert named in message


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS)
def test_invalid_web_server_cors(local_config, options, named):
    def add_service():
        ServiceRunner({**local_config, "WEB_SERVER_CORS": options}).add_service(Configured)

    with pytest.raises(ConfigurationError) as caught:
        add_service()
    message = str(caught.value)
    assert "WEB_SERVER_CORS" in message
    assert named in message

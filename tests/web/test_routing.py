"""Routing (SPEC §4): converters, methods, 404/405, HEAD, OPTIONS, slashes, several services."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import pytest
import trio

from triosvc.exceptions import ConfigurationError
from triosvc.runners import ServiceRunner, run_services
from triosvc.web.handlers import http

SOME_UUID = uuid.UUID("6f1c3a52-2b7e-4d0c-9a51-0d6c1e8b2f90")


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as client``: the services on a real socket."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield client

    return serve


def describe(value):
    return {"type": type(value).__name__, "value": str(value)}


class Converters:
    name = "converters"

    @http("GET", "/string/<value>")
    async def string(self, request, value):
        return describe(value)

    @http("GET", "/explicit-string/<string:value>")
    def explicit_string(self, request, value):
        return describe(value)

    @http("GET", "/int/<int:value>")
    async def integer(self, request, value):
        return describe(value)

    @http("GET", "/float/<float:value>")
    async def floating(self, request, value):
        return describe(value)

    @http("GET", "/uuid/<uuid:value>")
    async def uuid_(self, request, value):
        return describe(value)

    @http("GET", "/path/<path:value>")
    async def path(self, request, value):
        return describe(value)

    @http("GET", "/any/<any(red, blue):value>")
    async def any_(self, request, value):
        return describe(value)

    @http("GET", "/multi/<int:first>/<second>")
    async def multi(self, request, *, second, first):
        # keyword-only, in the other order: values arrive by name, after `request`
        return {"first": describe(first), "second": describe(second)}


#: converter -> ({path: (type, value)} served, [paths refused with 404])
CONVERTERS = {
    "string": (
        {
            "/string/hello": ("str", "hello"),
            "/string/caf%C3%A9": ("str", "café"),
            "/string/a%20b": ("str", "a b"),
            "/explicit-string/hello": ("str", "hello"),
        },
        ["/string/a/b", "/explicit-string/a/b"],
    ),
    "int": (
        {"/int/42": ("int", "42"), "/int/0": ("int", "0")},
        ["/int/abc", "/int/1.5", "/int/-3", "/int/"],
    ),
    "float": ({"/float/1.5": ("float", "1.5")}, ["/float/abc", "/float/1.5.5"]),
    "uuid": (
        {f"/uuid/{SOME_UUID}": ("UUID", str(SOME_UUID))},
        ["/uuid/not-a-uuid", "/uuid/1234"],
    ),
    "path": (
        {"/path/a": ("str", "a"), "/path/a/b/c.txt": ("str", "a/b/c.txt")},
        ["/path"],
    ),
    "any": (
        {"/any/red": ("str", "red"), "/any/blue": ("str", "blue")},
        ["/any/green", "/any/redblue"],
    ),
    "several": ({}, ["/multi/x/seven", "/multi/7"]),
    "none": ({}, ["/nothing-here", "/"]),
}


@pytest.mark.parametrize("converter", list(CONVERTERS))
async def test_converters(serve, converter):
    served, refused = CONVERTERS[converter]
    with trio.fail_after(10):
        async with serve(Converters) as client:
            answers = {path: await client.get(path) for path in [*served, *refused]}
    # values arrive as keyword arguments, converted
    assert {path: (answers[path].status_code, answers[path].json()) for path in served} == {
        path: (200, {"type": kind, "value": value}) for path, (kind, value) in served.items()
    }
    # values a converter refuses: no rule matches
    assert {path: answers[path].status_code for path in refused} == dict.fromkeys(refused, 404)
    for path in refused:
        assert answers[path].headers["content-type"] == "application/json"
        body = answers[path].json()
        assert body["error"] == "NotFound"
        assert isinstance(body["message"], str)
        assert body["message"]


async def test_several_arguments_arrive_by_name(serve):
    with trio.fail_after(10):
        async with serve(Converters) as client:
            response = await client.get("/multi/7/seven")
    assert response.status_code == 200
    assert response.json() == {
        "first": {"type": "int", "value": "7"},
        "second": {"type": "str", "value": "seven"},
    }


class Methods:
    name = "methods"

    @http("GET", "/one")
    @http("GET", "/two/<int:number>")
    @http("POST", "/three")
    async def shared(self, request, number=None):
        return {"path": request.path, "method": request.method, "number": number}

    @http("GET", "/items")
    async def list_items(self, request):
        return "listed"

    @http("POST", "/items")
    async def create_item(self, request):
        return "created", 201

    @http("DELETE", "/items")
    def delete_items(self, request):
        return None

    @http("GET, POST", "/spaced")
    async def spaced(self, request):
        return request.method

    @http(" put ,patch,  DELETE ", "/lowercase")
    async def lowercase(self, request):
        return request.method

    @http("POST", "/post-only")
    async def post_only(self, request):
        return "posted"

    @http("OPTIONS", "/own-options")
    async def own_options(self, request):
        return "handled by the service", 200, {"X-Own": "yes"}


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/one", {"path": "/one", "method": "GET", "number": None}),
        ("GET", "/two/5", {"path": "/two/5", "method": "GET", "number": 5}),
        ("POST", "/three", {"path": "/three", "method": "POST", "number": None}),
    ],
)
async def test_several_http_decorators_on_one_method(serve, method, path, expected):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            response = await client.request(method, path)
    assert response.status_code == 200
    assert response.json() == expected


async def test_one_url_with_different_methods_on_different_handlers(serve):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            listed = await client.get("/items")
            created = await client.post("/items")
            deleted = await client.delete("/items")
            refused = await client.put("/items")
    assert (listed.status_code, listed.text) == (200, "listed")
    assert (created.status_code, created.text) == (201, "created")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert refused.status_code == 405
    assert allow(refused) == {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}


async def test_repeated_requests_keep_their_own_method_and_arguments(serve):
    """The router remembers recent matches: the same paths and methods, interleaved,
    still reach their own handlers with their own arguments."""
    with trio.fail_after(10):
        async with serve(Methods, Converters) as client:
            for _ in range(3):
                for n in (7, 8):
                    response = await client.get(f"/multi/{n}/x{n}")
                    assert response.json()["first"] == {"type": "int", "value": str(n)}
                    assert response.json()["second"] == {"type": "str", "value": f"x{n}"}
                assert (await client.get("/items")).text == "listed"
                assert (await client.post("/items")).status_code == 201
                assert (await client.put("/items")).status_code == 405


@pytest.mark.parametrize(
    ("path", "methods"),
    [("/spaced", ["GET", "POST"]), ("/lowercase", ["PUT", "PATCH", "DELETE"])],
)
async def test_several_methods_in_one_string(serve, path, methods):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            for method in methods:
                response = await client.request(method, path)
                assert (response.status_code, response.text) == (200, method)
            refused = await client.request("TRACE", path)
    assert refused.status_code == 405


def allow(response):
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/post-only", {"POST", "OPTIONS"}),
        ("PUT", "/post-only", {"POST", "OPTIONS"}),
        ("DELETE", "/spaced", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("HEAD", "/three", {"POST", "OPTIONS"}),
    ],
)
async def test_method_not_allowed_is_405_with_allow(serve, method, path, allowed):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            response = await client.request(method, path)
    assert response.status_code == 405
    assert allow(response) == allowed
    if method != "HEAD":
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"] == "MethodNotAllowed"
        assert isinstance(body["message"], str)
        assert body["message"]


class Heads:
    name = "heads"
    gets: list[str] = []

    @http("GET", "/text")
    async def text(self, request):
        Heads.gets.append(request.method)
        return "some text, é included"

    @http("GET", "/json/<int:n>")
    def json(self, request, n):
        Heads.gets.append(request.method)
        return {"numbers": list(range(n))}

    @http("GET,POST", "/bytes")
    async def raw(self, request):
        Heads.gets.append(request.method)
        return b"\x00\x01\x02" * 10, 202, {"X-Extra": "kept"}


@pytest.mark.parametrize("path", ["/text", "/json/5", "/bytes"])
async def test_head_is_served_for_every_get_rule(serve, path):
    Heads.gets.clear()
    with trio.fail_after(10):
        async with serve(Heads) as client:
            got = await client.get(path)
            head = await client.head(path)
    assert got.content
    assert head.status_code == got.status_code
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers.get("x-extra") == got.headers.get("x-extra")
    # HEAD runs the GET handler, as werkzeug and Flask do
    assert Heads.gets == ["GET", "HEAD"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/items", {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}),
        ("/two/3", {"GET", "HEAD", "OPTIONS"}),
        ("/post-only", {"POST", "OPTIONS"}),
        ("/lowercase", {"PUT", "PATCH", "DELETE", "OPTIONS"}),
    ],
)
async def test_options_is_answered_automatically(serve, path, allowed):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            response = await client.options(path)
    assert response.status_code == 204
    assert response.content == b""
    assert allow(response) == allowed
    assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_options_on_an_unknown_path_is_404(serve):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            response = await client.options("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


async def test_a_declared_options_handler_answers_instead(serve):
    with trio.fail_after(10):
        async with serve(Methods) as client:
            response = await client.options("/own-options")
    assert response.status_code == 200
    assert response.text == "handled by the service"
    assert response.headers["x-own"] == "yes"


class Slashes:
    name = "slashes"

    @http("GET,POST", "/folder/")
    async def folder(self, request):
        return {"method": request.method, "path": request.path, "q": request.args.get("q")}

    @http("GET", "/files/<int:number>/")
    async def file(self, request, number):
        return {"number": number}

    @http("GET", "/leaf")
    async def leaf(self, request):
        return "leaf"

    @http("GET", "/café/")
    async def cafe(self, request):
        return request.path


@pytest.mark.parametrize(
    ("method", "path", "location"),
    [
        ("GET", "/folder", "/folder/"),
        ("GET", "/folder?q=1&q=2", "/folder/?q=1&q=2"),
        ("POST", "/folder", "/folder/"),
        ("GET", "/files/3", "/files/3/"),
        ("GET", "/caf%C3%A9?q=%C3%A9", "/caf%C3%A9/?q=%C3%A9"),
    ],
)
async def test_missing_trailing_slash_is_a_308(serve, method, path, location):
    with trio.fail_after(10):
        async with serve(Slashes) as client:
            response = await client.request(method, path)
    assert response.status_code == 308
    assert response.headers["location"] == location


async def test_following_the_308_reaches_the_handler_with_method_and_query(serve):
    with trio.fail_after(10):
        async with serve(Slashes) as client:
            response = await client.post("/folder?q=x", follow_redirects=True)
    assert response.status_code == 200
    assert response.json() == {"method": "POST", "path": "/folder/", "q": "x"}
    assert [r.status_code for r in response.history] == [308]


async def test_slash_rules_still_answer_their_exact_url(serve):
    with trio.fail_after(10):
        async with serve(Slashes) as client:
            folder = await client.get("/folder/")
            leaf = await client.get("/leaf")
            leaf_slash = await client.get("/leaf/")
    assert folder.status_code == 200
    assert leaf.status_code == 200
    # A rule without a slash does not answer one with it (werkzeug's strict slashes).
    assert leaf_slash.status_code == 404
    assert leaf_slash.json()["error"] == "NotFound"


class Users:
    name = "users"

    @http("GET", "/users/<int:user_id>")
    async def get_user(self, request, user_id):
        return {"service": "users", "id": user_id}

    @http("GET", "/shared")
    async def shared_get(self, request):
        return "users: GET"


class Orders:
    name = "orders"

    @http("GET", "/orders/<uuid:order_id>")
    def get_order(self, request, order_id):
        return {"service": "orders", "id": str(order_id)}

    @http("POST", "/shared")
    async def shared_post(self, request):
        return "orders: POST"


async def test_routes_of_two_services_share_one_server(serve):
    with trio.fail_after(10):
        async with serve(Users, Orders) as client:
            user = await client.get("/users/1")
            order = await client.get(f"/orders/{SOME_UUID}")
            shared_get = await client.get("/shared")
            shared_post = await client.post("/shared")
            options = await client.options("/shared")
    assert user.json() == {"service": "users", "id": 1}
    assert order.json() == {"service": "orders", "id": str(SOME_UUID)}
    assert shared_get.text == "users: GET"
    assert shared_post.text == "orders: POST"
    assert allow(options) == {"GET", "HEAD", "POST", "OPTIONS"}


class UsersAgain:
    name = "users_again"

    @http("POST,GET", "/users/<int:user_id>")
    async def other_get_user(self, request, user_id):
        return "clash"


class UsersRenamed:
    name = "users_renamed"

    @http("GET", "/users/<int:uid>")
    async def renamed_get_user(self, request, uid):
        return "clash"


@pytest.mark.parametrize("clashing", [UsersAgain, UsersRenamed])
def test_two_services_declaring_one_route_fail_before_listening(local_config, clashing):
    runner = ServiceRunner(local_config)
    runner.add_service(Users)
    with pytest.raises(ConfigurationError) as caught:
        runner.add_service(clashing)
    message = str(caught.value)
    assert "GET" in message
    assert "/users/<int:" in message
    assert clashing.__qualname__ in message
    assert runner.url is None


async def test_a_route_clash_stops_run_services_before_it_listens(local_config):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigurationError, match="GET /users/<int:user_id>"):
                await nursery.start(run_services_for_test, local_config)


async def run_services_for_test(config, *, task_status):
    await run_services(config, Users, UsersAgain, task_status=task_status)


def test_two_methods_of_one_service_declaring_one_route_fail(local_config):
    class Twice:
        name = "twice"

        @http("GET", "/same")
        async def first(self, request):
            return "first"

        @http("GET,POST", "/same")
        async def second(self, request):
            return "second"

    with pytest.raises(ConfigurationError, match=r"GET /same") as caught:
        ServiceRunner(local_config).add_service(Twice)
    assert "Twice" in str(caught.value)
    assert "second" in str(caught.value)

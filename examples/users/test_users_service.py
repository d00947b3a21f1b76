"""Tests of the users example, written the way we suggest writing yours.

triosvc's pytest plugin (installed with triosvc) gives three fixtures:

- ``web_config``: a config dict listening on 127.0.0.1 and a free port; add keys to it;
- ``runner_factory``: ``await runner_factory(web_config, UsersService)`` starts the
  service in the test's nursery, and stops it after the test;
- ``web_session``: an ``httpx.AsyncClient`` pointed at that server.

Tests run under pytest-trio (``trio_mode = true`` in pyproject.toml). Each one that
talks over a socket runs under ``trio.fail_after``, so that a hang fails the test
instead of stalling the run.

The last section uses ``triosvc.testing``'s helpers: ``worker_factory`` for unit tests of
a handler with its store mocked, ``entrypoint_hook`` to call a handler of the running
service without a client, and ``replace_dependencies`` to make the store fail.
"""

import httpx
import pytest
import trio
from users_service import Store, UserNotFound, UsersService
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from triosvc.testing.services import entrypoint_hook, replace_dependencies, worker_factory

#: Seconds any one test may take: a local server answers in milliseconds.
TIMEOUT = 10

FRONT_END = "http://localhost:3000"

ADA = {"name": "Ada Lovelace", "email": "ada@example.com"}
GRACE = {"name": "Grace Hopper", "email": "grace@example.com"}


@pytest.fixture
async def users(runner_factory, web_config, web_session) -> httpx.AsyncClient:
    """The users service, running; the client to call it with."""
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, UsersService)
    return web_session


async def create(client: httpx.AsyncClient, user: dict[str, str]) -> dict[str, object]:
    response = await client.post("/users", json=user)
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    """triosvc answers every error with ``{"error": <name>, "message": <text>}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert body["message"]


# --- create ----------------------------------------------------------------------------------


async def test_create_user(users):
    with trio.fail_after(TIMEOUT):
        response = await users.post("/users", json=ADA)

    assert response.status_code == 201
    assert response.json() == {"id": 1, **ADA}
    assert response.headers["location"] == "/users/1"


async def test_create_user_normalises_email(users):
    with trio.fail_after(TIMEOUT):
        user = await create(users, {"name": "  Ada ", "email": "Ada@Example.COM"})

    assert user["name"] == "Ada"
    assert user["email"] == "ada@example.com"


async def test_duplicate_email_is_a_conflict(users):
    with trio.fail_after(TIMEOUT):
        await create(users, ADA)
        response = await users.post("/users", json={"name": "Other", "email": ADA["email"]})
        listing = await users.get("/users")

    assert_error(response, 409, "Conflict")
    assert ADA["email"] in response.json()["message"]
    assert listing.json()["total"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Ada"}, "missing field 'email'"),
        ({"email": "ada@example.com"}, "missing field 'name'"),
        ({**ADA, "age": 36}, "unknown field 'age'"),
        ({"name": "", "email": "ada@example.com"}, "'name' must be a non-empty string"),
        ({"name": 36, "email": "ada@example.com"}, "'name' must be a non-empty string"),
        ({"name": "Ada", "email": "not-an-email"}, "is not an email address"),
        ([ADA], "expected a JSON object"),
    ],
)
async def test_create_user_validates_the_body(users, body, message):
    with trio.fail_after(TIMEOUT):
        response = await users.post("/users", json=body)

    assert_error(response, 400, "ValidationError")
    assert message in response.json()["message"]


async def test_invalid_json_is_a_bad_request(users):
    with trio.fail_after(TIMEOUT):
        response = await users.post(
            "/users", content=b"{not json", headers={"Content-Type": "application/json"}
        )

    assert_error(response, 400, "BadRequest")


# --- read ------------------------------------------------------------------------------------


async def test_get_user(users):
    with trio.fail_after(TIMEOUT):
        await create(users, ADA)
        grace = await create(users, GRACE)
        response = await users.get(f"/users/{grace['id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"id": 2, **GRACE}


async def test_get_missing_user_is_not_found(users):
    with trio.fail_after(TIMEOUT):
        response = await users.get("/users/42")

    assert_error(response, 404, "UserNotFound")
    assert response.json()["message"] == "no user with id 42"


async def test_user_id_must_be_an_integer(users):
    # <int:user_id> matches digits only: anything else finds no route.
    with trio.fail_after(TIMEOUT):
        response = await users.get("/users/ada")

    assert_error(response, 404, "NotFound")


# --- list ------------------------------------------------------------------------------------


async def test_list_users(users):
    with trio.fail_after(TIMEOUT):
        empty = await users.get("/users")
        ada = await create(users, ADA)
        grace = await create(users, GRACE)
        response = await users.get("/users")

    assert empty.json() == {"users": [], "total": 0, "limit": 20, "offset": 0}
    assert response.status_code == 200
    assert response.json() == {"users": [ada, grace], "total": 2, "limit": 20, "offset": 0}


async def test_list_users_with_limit_and_offset(users):
    with trio.fail_after(TIMEOUT):
        created = [
            await create(users, {"name": f"User {n}", "email": f"user{n}@example.com"})
            for n in range(5)
        ]
        first = await users.get("/users", params={"limit": 2})
        second = await users.get("/users", params={"limit": 2, "offset": 2})
        last = await users.get("/users", params={"limit": 2, "offset": 4})

    assert first.json()["users"] == created[0:2]
    assert second.json()["users"] == created[2:4]
    assert last.json()["users"] == created[4:]
    assert {page.json()["total"] for page in (first, second, last)} == {5}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": 0}, "limit must be from 1 to 100"),
        ({"limit": 101}, "limit must be from 1 to 100"),
        ({"offset": -1}, "offset must be from 0"),
    ],
)
async def test_list_users_validates_the_query(users, params, message):
    with trio.fail_after(TIMEOUT):
        response = await users.get("/users", params=params)

    assert_error(response, 400, "ValidationError")
    assert message in response.json()["message"]


async def test_max_page_size_comes_from_the_config(runner_factory, web_config, web_session):
    # Application keys in the config reach the service's dependency providers.
    web_config["USERS_MAX_PAGE_SIZE"] = 3
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, UsersService)
        default = await web_session.get("/users")
        too_many = await web_session.get("/users", params={"limit": 4})

    assert default.json()["limit"] == 3
    assert_error(too_many, 400, "ValidationError")


# --- update ----------------------------------------------------------------------------------


async def test_update_user(users):
    with trio.fail_after(TIMEOUT):
        ada = await create(users, ADA)
        response = await users.patch(f"/users/{ada['id']}", json={"name": "Ada King"})
        fetched = await users.get(f"/users/{ada['id']}")

    assert response.status_code == 200
    assert response.json() == {**ada, "name": "Ada King"}
    assert fetched.json() == response.json()


async def test_update_user_to_a_taken_email_is_a_conflict(users):
    with trio.fail_after(TIMEOUT):
        ada = await create(users, ADA)
        await create(users, GRACE)
        taken = await users.patch(f"/users/{ada['id']}", json={"email": GRACE["email"]})
        own = await users.patch(f"/users/{ada['id']}", json={"email": ADA["email"]})

    assert_error(taken, 409, "Conflict")
    assert own.status_code == 200


async def test_update_user_validates_the_body(users):
    with trio.fail_after(TIMEOUT):
        ada = await create(users, ADA)
        empty = await users.patch(f"/users/{ada['id']}", json={})
        unknown = await users.patch(f"/users/{ada['id']}", json={"id": 7})

    assert_error(empty, 400, "ValidationError")
    assert_error(unknown, 400, "ValidationError")


async def test_update_missing_user_is_not_found(users):
    with trio.fail_after(TIMEOUT):
        response = await users.patch("/users/42", json={"name": "Nobody"})

    assert_error(response, 404, "UserNotFound")


# --- delete (a blocking handler) -------------------------------------------------------------


async def test_delete_user(users):
    with trio.fail_after(TIMEOUT):
        ada = await create(users, ADA)
        response = await users.delete(f"/users/{ada['id']}")
        fetched = await users.get(f"/users/{ada['id']}")
        again = await users.delete(f"/users/{ada['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_error(fetched, 404, "UserNotFound")
    assert_error(again, 404, "UserNotFound")


async def test_a_deleted_email_can_be_used_again(users):
    with trio.fail_after(TIMEOUT):
        ada = await create(users, ADA)
        await users.delete(f"/users/{ada['id']}")
        again = await create(users, ADA)

    assert again["id"] != ada["id"]


async def test_method_not_allowed(users):
    with trio.fail_after(TIMEOUT):
        response = await users.put("/users/1", json=ADA)

    assert_error(response, 405, "MethodNotAllowed")
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed


# --- CORS ------------------------------------------------------------------------------------


async def test_cors_headers_for_the_front_end(users):
    with trio.fail_after(TIMEOUT):
        response = await users.post("/users", json=ADA, headers={"Origin": FRONT_END})

    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == FRONT_END
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-expose-headers"] == "Location"
    assert "Origin" in response.headers["vary"]


async def test_cors_headers_on_errors_too(users):
    # Else the browser hides the error body from the front end.
    with trio.fail_after(TIMEOUT):
        response = await users.get("/users/42", headers={"Origin": FRONT_END})

    assert_error(response, 404, "UserNotFound")
    assert response.headers["access-control-allow-origin"] == FRONT_END


async def test_cors_preflight(users):
    with trio.fail_after(TIMEOUT):
        response = await users.options(
            "/users",
            headers={
                "Origin": FRONT_END,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == FRONT_END
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-max-age"] == "600"


async def test_other_origins_get_no_cors_headers(users):
    evil = "http://evil.example"
    with trio.fail_after(TIMEOUT):
        actual = await users.get("/users", headers={"Origin": evil})
        preflight = await users.options(
            "/users/1",
            headers={"Origin": evil, "Access-Control-Request-Method": "DELETE"},
        )

    # The request is served (CORS is the browser's rule), but without the headers that
    # would let a page from that origin read the answer.
    assert actual.status_code == 200
    assert "access-control-allow-origin" not in actual.headers
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


# --- with triosvc.testing's helpers ----------------------------------------------------------


def make_request(method: str, path: str, json: object = None) -> Request:
    """The werkzeug Request a handler gets, for calling it directly."""
    return EnvironBuilder(method=method, path=path, json=json).get_request()


async def test_list_users_asks_the_store_for_one_page():
    # A unit test: no server, the store is a mock. Its spec is Store (get_dependency's
    # return annotation), so misspelled methods fail; max_page_size is set in
    # Store.__init__, which the spec cannot see: give it a value.
    service = worker_factory(UsersService)
    service.store.max_page_size = 50
    service.store.page.return_value = ([], 31)

    result = await service.list_users(make_request("GET", "/users?limit=10&offset=30"))

    assert result == {"users": [], "total": 31, "limit": 10, "offset": 30}
    service.store.page.assert_called_once_with(10, 30)


async def test_create_user_normalises_before_storing():
    # Or a real object of yours in place of a dependency.
    service = worker_factory(UsersService, store=Store(max_page_size=10))

    body = {"name": " Ada ", "email": "Ada@Example.com"}
    user, status, headers = await service.create_user(make_request("POST", "/users", body))

    assert user == {"id": 1, "name": "Ada", "email": "ada@example.com"}
    assert (status, headers) == (201, {"Location": "/users/1"})


async def test_handlers_through_the_hook(runner_factory, web_config):
    # The running service's own store and worker machinery, without a client: the hook
    # returns what the handler returns, and raises what it raises; .http() gives the
    # response a client would get.
    with trio.fail_after(TIMEOUT):
        runner = await runner_factory(web_config, UsersService)
        async with (
            entrypoint_hook(runner, "users", "create_user") as create_user,
            entrypoint_hook(runner, "users", "delete_user") as delete_user,
            entrypoint_hook(runner, "users", "get_user") as get_user,
        ):
            user, status, _ = await create_user(make_request("POST", "/users", ADA))
            assert await delete_user(make_request("DELETE", "/users/1"), user_id=1) is None
            with pytest.raises(UserNotFound):
                await delete_user(make_request("DELETE", "/users/1"), user_id=1)
            response = await get_user.http("/users/1")

    assert (user, status) == ({"id": 1, **ADA}, 201)
    assert_error(response, 404, "UserNotFound")


async def test_a_failing_store_is_a_500_that_tells_the_client_nothing(
    runner_factory, web_config, web_session
):
    # The class's store is replaced for this test (the plugin undoes it afterwards).
    store = replace_dependencies(UsersService, "store")
    store.get.side_effect = RuntimeError("lost the connection to db.internal:5432")
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, UsersService)
        response = await web_session.get("/users/1")

    assert_error(response, 500, "InternalServerError")
    assert "db.internal" not in response.text

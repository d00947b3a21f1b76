"""Calls between services (SPEC §6): async and blocking callers and callees, arguments,
results of every JSON type, values JSON cannot hold, and declaration errors."""

from __future__ import annotations

import math
import threading

import pytest
import trio

import triosvc.rpc
from triosvc.exceptions import (
    ConfigurationError,
    IncorrectSignature,
    MethodNotFound,
    RemoteError,
)
from triosvc.rpc import (
    BlockingServiceProxy,
    RpcClient,
    RpcProxy,
    ServiceProxy,
    rpc,
)
from triosvc.runners import ServiceRunner


class Users:
    name = "users"

    handled: list[object]

    @rpc
    async def get_user(self, user_id, verbose=False):
        return {"id": user_id, "verbose": verbose, "callee": "async"}

    @rpc
    def get_user_blocking(self, user_id, verbose=False):
        in_thread = threading.current_thread() is not threading.main_thread()
        return {"id": user_id, "verbose": verbose, "callee": "blocking", "in_thread": in_thread}

    @rpc
    async def echo(self, *args, **kwargs):
        type(self).handled.append((args, kwargs))
        return {"args": list(args), "kwargs": kwargs}

    @rpc
    async def identity(self, value):
        return value

    @rpc
    async def unencodable_result(self, kind):
        return {"set": {1, 2}, "object": object(), "nan": math.nan, "bytes": b"x"}[kind]

    @rpc
    def blocking_unencodable_result(self):
        return {"nested": [1, {"when": threading.Lock()}]}


class Front:
    """Calls ``users`` from async and blocking methods."""

    name = "front"
    users = RpcProxy("users")

    @rpc
    async def call(self, method, user_id):
        return await getattr(self.users, method)(user_id, verbose=True)

    @rpc
    def call_blocking(self, method, user_id):
        in_thread = threading.current_thread() is not threading.main_thread()
        return {**getattr(self.users, method)(user_id, verbose=True), "caller_in_thread": in_thread}

    @rpc
    async def proxy_type(self):
        return type(self.users).__name__

    @rpc
    def proxy_type_blocking(self):
        return type(self.users).__name__


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    Users.handled = []


@pytest.fixture
async def users(runner_factory, rpc_config) -> ServiceRunner:
    return await runner_factory(rpc_config, Users, Front)


# -- callers and callees of both kinds ---------------------------------------------------------


@pytest.mark.parametrize("caller", ["call", "call_blocking"])
@pytest.mark.parametrize("callee", ["get_user", "get_user_blocking"])
async def test_async_and_blocking_callers_reach_async_and_blocking_callees(
    users, client: RpcClient, caller: str, callee: str
):
    result = await client.call("front", caller, callee, 7)
    assert result["id"] == 7
    assert result["verbose"] is True
    assert result["callee"] == ("async" if callee == "get_user" else "blocking")
    if callee == "get_user_blocking":
        assert result["in_thread"] is True
    if caller == "call_blocking":
        assert result["caller_in_thread"] is True


async def test_async_workers_get_an_async_proxy_and_blocking_ones_a_blocking_proxy(
    users, client: RpcClient
):
    assert await client.front.proxy_type() == ServiceProxy.__name__
    assert await client.front.proxy_type_blocking() == BlockingServiceProxy.__name__


async def test_positional_and_keyword_arguments_arrive_as_sent(users, client: RpcClient):
    result = await client.users.echo(1, "two", [3], four=4, five={"six": 6})
    assert result == {"args": [1, "two", [3]], "kwargs": {"four": 4, "five": {"six": 6}}}
    assert await client.users.get_user(user_id=3) == {"id": 3, "verbose": False, "callee": "async"}
    assert await client.users.get_user(3, verbose=1) == {"id": 3, "verbose": 1, "callee": "async"}


JSON_VALUES = [
    None,
    True,
    False,
    0,
    -17,
    2**100,
    1.5,
    -2.5e-300,
    1e308,
    "",
    "plain",
    "h\u00e9llo \u2603 \U0001f600",
    "\ud800 a lone surrogate",
    'quotes " and \\ and \n newlines \x00',
    [],
    {},
    [1, "a", None, True, 2.5, [], {}],
    {"a": {"b": [1, 2, {"c": None}]}, "": "empty key"},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
async def test_every_json_value_goes_there_and_back_with_its_type(users, client, value):
    result = await client.users.identity(value)
    assert result == value
    assert type(result) is type(value)


async def test_deeply_nested_values_go_there_and_back(users, client: RpcClient):
    value: object = "bottom"
    for _ in range(200):
        value = {"down": [value]}
    assert await client.users.identity(value) == value


async def test_values_arrive_as_json_gives_them_back(users, client: RpcClient):
    assert await client.users.identity((1, (2, 3))) == [1, [2, 3]]
    assert await client.users.identity({1: "a", 2.5: "b", None: "c", False: "d"}) == {
        "1": "a",
        "2.5": "b",
        "null": "c",
        "false": "d",
    }


# -- values JSON cannot hold -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (({1, 2},), {}, r"users\.echo: argument 0 cannot be sent as JSON: the value has type set"),
        ((1, object()), {}, r"users\.echo: argument 1 .* has type object"),
        ((), {"when": b"x"}, r"users\.echo: keyword argument 'when' .* has type bytes"),
        (([1, {"a": {3}}],), {}, r"argument 0 .* the value at \[1\]\['a'\] has type set"),
        ((math.nan,), {}, r"argument 0 .* is nan"),
        ((), {"x": [math.inf]}, r"keyword argument 'x' .* at \[0\] is inf"),
        (({(1, 2): "tuple key"},), {}, r"argument 0 .* has a key of type tuple"),
        ((10**5000,), {}, r"argument 0 .* more digits than Python writes"),
    ],
)
async def test_an_argument_json_cannot_hold_is_a_type_error_naming_it_and_nothing_is_sent(
    users, client: RpcClient, args, kwargs, expected
):
    with pytest.raises(TypeError, match=expected) as caught:
        await client.users.echo(*args, **kwargs)
    assert "JSON values" in str(caught.value)
    assert Users.handled == []
    # The client and the service are fine afterwards.
    await client.users.echo(1)
    assert Users.handled == [((1,), {})]


async def test_a_circular_argument_is_named_too(users, client: RpcClient):
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(TypeError, match=r"argument 0 .* at \[1\] is a circular reference"):
        await client.users.echo(loop)
    assert Users.handled == []


async def test_a_worker_sending_an_unencodable_argument_gets_the_type_error(
    runner_factory, rpc_config, client: RpcClient
):
    class Sender:
        name = "sender"
        users = RpcProxy("users")

        @rpc
        async def send(self):
            try:
                await self.users.echo(when=object())
            except TypeError as exc:
                return str(exc)
            return "sent"

        @rpc
        def send_blocking(self):
            try:
                self.users.echo(when={1, 2})
            except TypeError as exc:
                return str(exc)
            return "sent"

    await runner_factory(rpc_config, Users, Sender)
    assert "keyword argument 'when'" in await client.sender.send()
    assert "keyword argument 'when'" in await client.sender.send_blocking()
    assert Users.handled == []


@pytest.mark.parametrize("kind", ["set", "object", "nan", "bytes"])
async def test_a_result_json_cannot_hold_reaches_the_caller_as_a_remote_error(
    users, client: RpcClient, kind: str
):
    with pytest.raises(RemoteError) as caught:
        await client.users.unencodable_result(kind)
    assert caught.value.exc_type == "TypeError"
    assert "the result of users.unencodable_result cannot be sent as JSON" in caught.value.value
    assert await client.users.identity(kind) == kind  # the service still answers


async def test_a_blocking_method_s_unencodable_result_says_where_in_it(users, client: RpcClient):
    with pytest.raises(RemoteError, match=r"at \['nested'\]\[1\]\['when'\] has type _thread"):
        await client.users.blocking_unencodable_result()


# -- calls that do not fit ---------------------------------------------------------------------


async def test_an_unknown_method_is_method_not_found(users, client: RpcClient):
    with pytest.raises(MethodNotFound, match="service 'users' has no @rpc method 'nope'"):
        await client.users.nope()


async def test_a_method_that_is_not_an_rpc_entrypoint_cannot_be_called(
    runner_factory, rpc_config, client: RpcClient
):
    class Partly:
        name = "partly"

        @rpc
        async def public(self):
            return "public"

        async def helper(self):
            return "helper"

    await runner_factory(rpc_config, Partly)
    assert await client.partly.public() == "public"
    with pytest.raises(MethodNotFound):
        await client.partly.helper()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, 3), {}), ((1,), {"colour": "red"}), ((1,), {"user_id": 1})],
)
async def test_arguments_that_do_not_fit_are_an_incorrect_signature(
    users, client: RpcClient, args, kwargs
):
    with pytest.raises(IncorrectSignature, match=r"users\.get_user: "):
        await client.users.get_user(*args, **kwargs)


async def test_proxies_refuse_private_names_and_say_what_they_are(users, client: RpcClient):
    with pytest.raises(AttributeError):
        _ = client.users._private
    with pytest.raises(AttributeError):
        _ = client._users
    assert repr(client.users) == "<ServiceProxy users>"
    assert repr(client.users.get_user) == "<MethodProxy users.get_user>"


# -- declarations ------------------------------------------------------------------------------


def test_rpc_and_rpc_proxy_live_at_the_public_path() -> None:
    from triosvc.web.websocket import rpc as websocket_rpc

    assert triosvc.rpc.rpc is rpc
    assert triosvc.rpc.RpcProxy is RpcProxy
    assert rpc is not websocket_rpc


def test_bare_and_configured_rpc_both_leave_the_method_callable() -> None:
    class Plain:
        name = "plain"

        @rpc
        def bare(self, x):
            return x + 1

        @rpc(timeout=3, expected_exceptions=KeyError)
        async def configured(self):
            return "configured"

    assert Plain().bare(1) == 2
    assert trio.run(Plain().configured) == "configured"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -1}, "timeout must be a number of seconds > 0"),
        ({"timeout": math.inf}, "timeout must be a number of seconds > 0"),
        ({"timeout": "5"}, "timeout must be a number of seconds > 0"),
        ({"expected_exceptions": 42}, "expected_exceptions must be exception classes"),
        ({"expected_exceptions": (KeyError, str)}, "expected_exceptions must be exception"),
    ],
)
def test_bad_rpc_options_are_configuration_errors(options, message) -> None:
    with pytest.raises(ConfigurationError, match=message):

        @rpc(**options)
        async def method(self):
            pass


def test_rpc_decorates_functions_only() -> None:
    with pytest.raises(ConfigurationError, match="decorates methods"):
        rpc(42)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("",), {}, "expected the name of a service"),
        ((None,), {}, "expected the name of a service"),
        (("users",), {"timeout": 0}, "timeout must be a number of seconds > 0"),
    ],
)
def test_bad_rpc_proxies_are_configuration_errors(args, kwargs, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RpcProxy(*args, **kwargs)


def test_rpc_twice_on_one_method_is_a_configuration_error() -> None:
    class Twice:
        name = "twice"

        @rpc
        @rpc
        async def method(self):
            pass

    runner = ServiceRunner()
    with pytest.raises(ConfigurationError, match=r"Twice\.method: @rpc is applied twice"):
        runner.add_service(Twice)


async def test_services_of_different_names_may_share_method_names(
    runner_factory, rpc_config, client: RpcClient
):
    class One:
        name = "one"

        @rpc
        async def ping(self):
            return "one"

    class Two:
        name = "two"

        @rpc
        async def ping(self):
            return "two"

    await runner_factory(rpc_config, One, Two)
    assert [await client.one.ping(), await client.two.ping()] == ["one", "two"]


async def test_a_runner_with_only_proxies_connects_once_and_serves_nothing(
    runner_factory, rpc_config
):
    class OnlyCalls:
        name = "only_calls"
        users = RpcProxy("users")
        more_users = RpcProxy("users")

    runner = await runner_factory(rpc_config, OnlyCalls)
    server = runner.shared_extension(triosvc.rpc.RpcServer)
    assert isinstance(server, triosvc.rpc.RpcServer)
    assert server.transport is not None
    assert server.statistics().services == ()
    assert server.proxy_containers == [runner.containers["only_calls"]]

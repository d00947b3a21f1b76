"""Remote exceptions (SPEC §6): RemoteError, registered classes rebuilt as themselves,
triosvc's own classes across a chain of services, and how failures are logged."""

from __future__ import annotations

import logging

import pytest
import trio

from triosvc.exceptions import (
    Conflict,
    HttpError,
    NotFound,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownService,
)
from triosvc.rpc import RpcClient, RpcProxy, _errors, is_registered, remote_error, rpc


@remote_error
class OutOfStock(Exception):
    """A registered class: the caller gets an OutOfStock back."""

    def __init__(self, item: str, left: int) -> None:
        super().__init__(item, left)
        self.item = item
        self.left = left


class NotRegistered(Exception):
    """An unregistered class: the caller gets a RemoteError."""


@remote_error
class PickyConstructor(Exception):
    """Registered, but its constructor refuses what crosses the wire: RemoteError then."""

    def __init__(self, *, reason: str) -> None:
        super().__init__(reason)


class Failing:
    name = "failing"

    @rpc
    async def value_error(self):
        raise ValueError("bad value", 42)

    @rpc
    def blocking_key_error(self):
        raise KeyError("missing")

    @rpc
    async def not_found(self):
        raise NotFound("no such user")

    @rpc
    async def conflict(self):
        raise Conflict("taken", status_code=409)

    @rpc
    async def teapot(self):
        raise HttpError("short and stout", status_code=418)

    @rpc
    async def out_of_stock(self):
        raise OutOfStock("widget", 3)

    @rpc
    async def not_registered(self):
        raise NotRegistered("nobody knows me")

    @rpc
    async def picky(self):
        raise PickyConstructor(reason="keywords only")

    @rpc
    async def in_a_nursery(self):
        async def fail():
            raise ValueError("from a child task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)

    @rpc(expected_exceptions=(KeyError, OutOfStock))
    async def expected(self):
        raise KeyError("expected one")

    @rpc
    async def unexpected(self):
        raise KeyError("unexpected one")


class Middle:
    """Calls on without catching: what reaches the front is the original failure."""

    name = "middle"
    failing = RpcProxy("failing")
    nobody = RpcProxy("nobody")

    @rpc
    async def relay(self, method):
        return await getattr(self.failing, method)()

    @rpc
    def relay_blocking(self, method):
        return getattr(self.failing, method)()

    @rpc
    async def call_nobody(self):
        return await self.nobody.anything()


@pytest.fixture
async def services(runner_factory, rpc_config) -> None:
    await runner_factory(rpc_config, Failing, Middle)


async def test_an_exception_comes_back_as_remote_error_with_type_and_value(
    services, client: RpcClient
):
    with pytest.raises(RemoteError) as caught:
        await client.failing.value_error()
    error = caught.value
    assert (error.exc_type, error.value) == ("ValueError", "('bad value', 42)")
    assert str(error) == "ValueError ('bad value', 42)"
    assert "raised remotely, by failing.value_error" in error.__notes__


async def test_a_blocking_method_s_exception_comes_back_too(services, client: RpcClient):
    with pytest.raises(RemoteError) as caught:
        await client.failing.blocking_key_error()
    assert (caught.value.exc_type, caught.value.value) == ("KeyError", "'missing'")


async def test_an_exception_group_of_one_is_seen_through(services, client: RpcClient):
    with pytest.raises(RemoteError) as caught:
        await client.failing.in_a_nursery()
    assert (caught.value.exc_type, caught.value.value) == ("ValueError", "from a child task")


@pytest.mark.parametrize(
    ("method", "cls", "message"),
    [("not_found", NotFound, "no such user"), ("conflict", Conflict, "taken")],
)
async def test_triosvc_s_own_exceptions_come_back_as_themselves(
    services, client: RpcClient, method, cls, message
):
    with pytest.raises(cls) as caught:
        await client.call("failing", method)
    assert str(caught.value) == message
    assert caught.value.status_code == cls.status_code


async def test_an_http_error_comes_back_with_its_own_status(services, client: RpcClient):
    with pytest.raises(HttpError) as caught:
        await client.failing.teapot()
    assert (str(caught.value), caught.value.status_code) == ("short and stout", 418)


async def test_a_registered_class_comes_back_as_itself_with_its_arguments(
    services, client: RpcClient
):
    with pytest.raises(OutOfStock) as caught:
        await client.failing.out_of_stock()
    assert (caught.value.item, caught.value.left) == ("widget", 3)


async def test_an_unregistered_class_comes_back_as_remote_error(services, client: RpcClient):
    with pytest.raises(RemoteError) as caught:
        await client.failing.not_registered()
    assert (caught.value.exc_type, caught.value.value) == ("NotRegistered", "nobody knows me")


async def test_a_registered_class_that_cannot_be_rebuilt_comes_back_as_remote_error(
    services, client: RpcClient
):
    with pytest.raises(RemoteError) as caught:
        await client.failing.picky()
    assert (caught.value.exc_type, caught.value.value) == ("PickyConstructor", "keywords only")


async def test_registering_a_builtin_class_rebuilds_it(
    services, client: RpcClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(_errors, "_REGISTRY", dict(_errors._REGISTRY))
    assert remote_error(ValueError) is ValueError
    with pytest.raises(ValueError) as caught:
        await client.failing.value_error()
    assert caught.value.args == ("bad value", 42)


@pytest.mark.parametrize("relay", ["relay", "relay_blocking"])
async def test_a_remote_error_passed_on_keeps_the_original_type_and_value(
    services, client: RpcClient, relay: str
):
    with pytest.raises(RemoteError) as caught:
        await client.call("middle", relay, "value_error")
    assert (caught.value.exc_type, caught.value.value) == ("ValueError", "('bad value', 42)")
    with pytest.raises(NotFound, match="no such user"):
        await client.call("middle", relay, "not_found")
    with pytest.raises(OutOfStock):
        await client.call("middle", relay, "out_of_stock")


async def test_unknown_service_raised_in_a_callee_reaches_its_caller_as_itself(
    services, client: RpcClient
):
    with pytest.raises(UnknownService, match="'nobody'"):
        await client.middle.call_nobody()


async def test_expected_exceptions_are_logged_as_warnings_and_others_as_errors(
    services, client: RpcClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="triosvc.rpc")
    with pytest.raises(RemoteError, match="expected one"):
        await client.failing.expected()
    with pytest.raises(RemoteError, match="unexpected one"):
        await client.failing.unexpected()
    with pytest.raises(NotFound):
        await client.failing.not_found()
    records = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        (logging.WARNING, "failing.expected raised KeyError: 'expected one'", False),
        (logging.ERROR, "failing.unexpected failed", True),
        (logging.INFO, "failing.not_found: NotFound: no such user", False),
    ]


# -- the registry ------------------------------------------------------------------------------


def test_every_class_of_triosvc_exceptions_is_registered() -> None:
    from triosvc import exceptions

    for name in exceptions.__all__:
        assert is_registered(getattr(exceptions, name)), name
    assert not is_registered(NotRegistered)
    assert not is_registered(ValueError)


@pytest.mark.parametrize("value", [42, "KeyError", KeyboardInterrupt, BaseException])
def test_remote_error_registers_exception_classes_only(value) -> None:
    with pytest.raises(TypeError, match="registers exception classes"):
        remote_error(value)


@pytest.mark.parametrize(
    "fields",
    [
        None,
        "text",
        {},
        {"exc_type": 42, "value": None},
        {"exc_path": "tests.nowhere.Thing", "exc_args": []},
    ],
)
def test_error_fields_that_make_no_sense_become_an_unknown_remote_error(fields) -> None:
    error = _errors.rebuild_error(fields)
    assert isinstance(error, RemoteError)
    assert error.exc_type == "UnknownError"


def test_a_registered_class_with_arguments_that_are_not_a_list_is_a_remote_error() -> None:
    fields = _errors.error_fields(NotFound("gone"))
    assert fields == {
        "exc_type": "NotFound",
        "exc_path": "triosvc.exceptions.NotFound",
        "value": "gone",
        "exc_args": ["gone"],
    }
    rebuilt = _errors.rebuild_error({**fields, "exc_args": "gone"})
    assert type(rebuilt) is RemoteError
    assert (rebuilt.exc_type, rebuilt.value) == ("NotFound", "gone")


def test_arguments_json_cannot_hold_cross_as_their_repr() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    fields = _errors.error_fields(ValueError(Odd(), {1, 2}, "fine"))
    assert fields["exc_args"] == ["<odd>", "{1, 2}", "fine"]


def test_an_exception_whose_str_fails_still_crosses() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert _errors.error_fields(Broken())["value"] == "<Broken: str() failed>"


@pytest.mark.parametrize(
    "cls", [HttpError, NotFound, RpcTimeout, UnknownService, ServiceUnavailable, RemoteError]
)
def test_triosvc_classes_survive_a_round_trip(cls) -> None:
    original = cls("RemoteError", "inner") if cls is RemoteError else cls("message")
    rebuilt = _errors.rebuild_error(_errors.error_fields(original))
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(original)

"""Running services embedded in a trio program (SPEC §8 "Embedded"): ``run_services`` in
the caller's nursery, ``open_services``, stopping, killing, several runners at once."""

from __future__ import annotations

import re

import httpx
import pytest
import trio
import trio.testing

from triosvc.exceptions import ConfigurationError
from triosvc.extensions import DependencyProvider
from triosvc.runners import ServiceRunner, open_services, run_services
from triosvc.web.handlers import http

#: Upper bound, in seconds, for a test that talks over a real socket.
SOCKET_TEST_TIMEOUT = 10


class Lifecycle(DependencyProvider):
    """Logs its service-level hooks as ``<service>.setup`` and ``<service>.stop``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def setup(self) -> None:
        self.log.append(f"{self.container.name}.setup")

    async def stop(self) -> None:
        self.log.append(f"{self.container.name}.stop")


def make_service(name: str, log: list[str] | None = None) -> type:
    """A service answering ``GET /<name>`` with its name."""

    async def hello(self, request):
        return {"service": name}

    namespace: dict[str, object] = {"name": name, name: http("GET", f"/{name}")(hello)}
    if log is not None:
        namespace["lifecycle"] = Lifecycle(log)
    return type(f"{name.title()}Service", (), namespace)


async def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        return True
    await stream.aclose()
    return False


async def get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.get(path)


async def test_run_services_in_my_nursery_returns_a_runner_whose_url_answers(local_config):
    log: list[str] = []
    users, orders = make_service("users", log), make_service("orders", log)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, local_config, users, orders)
            assert isinstance(runner, ServiceRunner)
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", runner.url)
            assert not runner.url.endswith(":0")  # the port the OS picked
            assert runner.service_names == ["users", "orders"]
            assert runner.containers["users"].service_cls is users
            assert log == ["users.setup", "orders.setup"]
            for name in ("users", "orders"):
                response = await get(runner.url, f"/{name}")
                assert response.status_code == 200
                assert response.json() == {"service": name}
            url = runner.url
            await runner.stop()
            assert runner.stopped
            assert await refuses_connections(url)
    assert log == ["users.setup", "orders.setup", "orders.stop", "users.stop"]


async def test_service_runner_can_be_built_and_served_by_hand(local_config):
    log: list[str] = []
    runner = ServiceRunner(local_config)
    container = runner.add_service(make_service("users", log))
    assert runner.containers == {"users": container}
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(runner.serve) is runner
            assert (await get(runner.url, "/users")).json() == {"service": "users"}
            with pytest.raises(RuntimeError):
                runner.add_service(make_service("late"))
            with pytest.raises(RuntimeError):
                await nursery.start(runner.serve)  # a runner serves once
            runner.request_stop()
    assert runner.stopped
    assert log == ["users.setup", "users.stop"]


async def test_open_services_runs_the_services_for_the_block(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with open_services(local_config, make_service("users", log)) as runner:
            assert log == ["users.setup"]
            response = await get(runner.url, "/users")
            assert response.json() == {"service": "users"}
            url = runner.url
        assert runner.stopped
        assert log == ["users.setup", "users.stop"]
        assert await refuses_connections(url)


async def test_open_services_raises_a_failure_to_start_as_itself(local_config):
    class Broken(DependencyProvider):
        async def setup(self) -> None:
            raise OSError("database unreachable")

    class Service:
        name = "service"
        db = Broken()

    with pytest.raises(OSError, match="database unreachable") as caught:
        async with open_services(local_config, Service):
            pytest.fail("the block must not run")
    assert type(caught.value) is OSError


async def test_open_services_lets_an_exception_from_the_block_through_as_itself(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT), pytest.raises(KeyError, match="from the block"):
        async with open_services(local_config, make_service("users", log)):
            raise KeyError("from the block")
    assert log == ["users.setup", "users.stop"]  # and the services were stopped


async def test_stop_is_safe_to_call_twice_and_concurrently(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, local_config, make_service("users", log))
            async with trio.open_nursery() as stoppers:
                stoppers.start_soon(runner.stop)
                stoppers.start_soon(runner.stop)
            assert runner.stopped
            await runner.stop()  # already stopped: returns at once
    assert log == ["users.setup", "users.stop"]


async def test_cancelling_the_nursery_stops_gracefully(local_config):
    log: list[str] = []
    entered = trio.Event()
    release = trio.Event()

    class Service:
        name = "service"
        lifecycle = Lifecycle(log)

        @http("GET", "/slow")
        async def slow(self, request):
            entered.set()
            await release.wait()
            log.append("handler finished")
            return "finished"

    responses: list[httpx.Response] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as outside:
            async with trio.open_nursery() as services:
                runner = await services.start(run_services, local_config, Service)
                url = runner.url

                async def call() -> None:
                    responses.append(await get(url, "/slow"))

                async def check_then_release() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    assert await refuses_connections(url)  # stopping: no new connections
                    assert log == ["service.setup"]  # the call is still running
                    release.set()

                outside.start_soon(call)
                await entered.wait()
                outside.start_soon(check_then_release)
                services.cancel_scope.cancel()
            # the nursery has waited for the graceful stop
            assert runner.stopped
            log.append("nursery exited")
    assert [(r.status_code, r.text) for r in responses] == [(200, "finished")]
    assert log == ["service.setup", "handler finished", "service.stop", "nursery exited"]


async def test_kill_stops_at_once(local_config):
    entered = trio.Event()
    cancelled: list[bool] = []

    class Service:
        name = "service"

        @http("GET", "/hang")
        async def hang(self, request):
            entered.set()
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                cancelled.append(True)
                raise

    config = {**local_config, "SHUTDOWN_GRACE_PERIOD": 60, "WEB_SERVER_TIMEOUT": 60}
    outcome: list[object] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, config, Service)

            async def call() -> None:
                try:
                    outcome.append((await get(runner.url, "/hang")).status_code)
                except httpx.TransportError as exc:
                    outcome.append(type(exc))

            nursery.start_soon(call)
            await entered.wait()
            start = trio.current_time()
            runner.kill()
            await runner.stop()
            assert runner.stopped
            assert trio.current_time() - start < 5  # not the 60 s grace period
    assert cancelled == [True]
    # the call got no answer (its connection dropped), or an error status: never a 200
    [result] = outcome
    if isinstance(result, int):
        assert result >= 500
    else:
        assert issubclass(result, httpx.TransportError)  # type: ignore[arg-type]


async def test_two_runners_in_one_process_on_different_ports(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(run_services, local_config, make_service("users", log))
            second = await nursery.start(run_services, local_config, make_service("orders", log))
            # one service class may even run in two runners at once
            third = await nursery.start(run_services, local_config, make_service("users"))
            urls = {first.url, second.url, third.url}
            assert len(urls) == 3
            assert (await get(first.url, "/users")).json() == {"service": "users"}
            assert (await get(second.url, "/orders")).json() == {"service": "orders"}
            assert (await get(first.url, "/orders")).status_code == 404
            assert (await get(third.url, "/users")).status_code == 200
            first_url = first.url
            await first.stop()
            assert await refuses_connections(first_url)
            assert (await get(second.url, "/orders")).status_code == 200
            assert not second.stopped
            await second.stop()
            await third.stop()
    assert sorted(log) == sorted(["users.setup", "orders.setup", "users.stop", "orders.stop"])


async def test_a_port_in_use_is_a_configuration_error_from_start(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(run_services, local_config, make_service("users"))
            taken = first.url.removeprefix("http://")
            with pytest.raises(ConfigurationError) as caught:
                await nursery.start(
                    run_services, {"WEB_SERVER_ADDRESS": taken}, make_service("orders", log)
                )
            message = str(caught.value)
            assert "WEB_SERVER_ADDRESS" in message
            assert taken.rsplit(":", 1)[1] in message
            assert "in use" in message
            # the providers set up for the failed runner were stopped again
            assert log == ["orders.setup", "orders.stop"]
            # and the runner already there keeps serving
            assert (await get(first.url, "/users")).status_code == 200
            await first.stop()


async def test_a_definition_error_is_raised_before_anything_runs(local_config):
    log: list[str] = []
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigurationError, match="users"):
                await nursery.start(
                    run_services,
                    local_config,
                    make_service("users", log),
                    make_service("users", log),
                )
    assert log == []


async def test_a_runner_without_http_entrypoints_has_no_url(local_config):
    log: list[str] = []

    class Background:
        name = "background"
        lifecycle = Lifecycle(log)

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            runner = await nursery.start(run_services, local_config, Background)
            assert runner.url is None
            assert runner.service_names == ["background"]
            assert log == ["background.setup"]
            await runner.stop()
    assert log == ["background.setup", "background.stop"]

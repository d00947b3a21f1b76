"""Timeouts and worker limits (SPEC §4.3).

Timing runs under ``autojump_clock`` through the in-memory ASGI client, so that nothing
really waits; the tests of blocking handlers, whose threads the virtual clock cannot
see, use a short real timeout instead.
"""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from triosvc.web.handlers import http

#: Upper bound, in real seconds, for the tests that run on the real clock.
REAL_TIME_LIMIT = 10


def make_sleeper(log: list[str], *, release: trio.Event | None = None) -> type:
    """A service whose handlers sleep (virtual time) or wait for ``release``."""

    class Sleeper:
        name = "sleeper"

        @http("GET", "/sleep")
        async def sleep(self, request):
            seconds = float(request.args["seconds"])
            log.append(f"sleeping {seconds}")
            try:
                await trio.sleep(seconds)
            except trio.Cancelled:
                log.append("cancelled")
                raise
            log.append("after the sleep")
            return "slept"

        @http("GET", "/short", timeout=2)
        async def short(self, request):
            await trio.sleep(float(request.args["seconds"]))
            log.append("short finished")
            return "short"

        @http("GET", "/long", timeout=60)
        async def long(self, request):
            await trio.sleep(float(request.args["seconds"]))
            return "long"

        @http("GET", "/hold", timeout=600)
        async def hold(self, request):
            assert release is not None
            log.append("holding")
            await release.wait()
            return "released"

        @http("GET", "/quick")
        async def quick(self, request):
            return "quick"

    return Sleeper


class Other:
    name = "other"

    @http("GET", "/other")
    async def other(self, request):
        return "other"


async def timed_get(client, path: str, **params: object):
    start = trio.current_time()
    response = await client.get(path, params=params)
    return response, trio.current_time() - start


# -- timeouts -----------------------------------------------------------------------------------


async def test_a_handler_past_the_timeout_gets_504_and_is_cancelled(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    runner = await runner_factory({**local_config, "WEB_SERVER_TIMEOUT": 5}, make_sleeper(log))
    async with asgi_client(runner) as client:
        response, elapsed = await timed_get(client, "/sleep", seconds=100)
        assert response.status_code == 504
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"] == "Timeout"
        assert isinstance(body["message"], str)
        assert body["message"]
        assert elapsed == pytest.approx(5)
        await trio.sleep(200)  # long past the moment the handler would have woken
    assert log == ["sleeping 100.0", "cancelled"]


async def test_a_handler_within_the_timeout_is_answered(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    runner = await runner_factory({**local_config, "WEB_SERVER_TIMEOUT": 5}, make_sleeper(log))
    async with asgi_client(runner) as client:
        response, elapsed = await timed_get(client, "/sleep", seconds=4.9)
    assert (response.status_code, response.text) == (200, "slept")
    assert elapsed == pytest.approx(4.9)
    assert log == ["sleeping 4.9", "after the sleep"]


async def test_the_decorator_timeout_overrides_the_config(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    runner = await runner_factory({**local_config, "WEB_SERVER_TIMEOUT": 5}, make_sleeper(log))
    async with asgi_client(runner) as client:
        # shorter than the config's
        response, elapsed = await timed_get(client, "/short", seconds=3)
        assert response.status_code == 504
        assert response.json()["error"] == "Timeout"
        assert elapsed == pytest.approx(2)
        # longer than the config's
        response, elapsed = await timed_get(client, "/long", seconds=10)
        assert (response.status_code, response.text) == (200, "long")
        assert elapsed == pytest.approx(10)
        await trio.sleep(10)
    assert "short finished" not in log


async def test_the_timeout_counts_from_the_requests_arrival(
    autojump_clock, local_config, runner_factory, asgi_client
):
    """Time spent waiting for a worker slot is part of the call's time."""
    log: list[str] = []
    config = {**local_config, "WEB_SERVER_TIMEOUT": 5, "WEB_SERVER_MAX_WORKERS": 1}
    runner = await runner_factory(config, make_sleeper(log))
    results: dict[str, tuple[int, float]] = {}
    async with asgi_client(runner) as client, trio.open_nursery() as nursery:

        async def call(label: str, seconds: float) -> None:
            response, elapsed = await timed_get(client, "/sleep", seconds=seconds)
            results[label] = (response.status_code, elapsed)

        nursery.start_soon(call, "first", 3)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "second", 3)  # gets the slot after 3 s, needs 3 more
    assert results["first"] == (200, pytest.approx(3))
    assert results["second"] == (504, pytest.approx(5))


# -- worker limits -------------------------------------------------------------------------------


async def test_a_request_with_no_free_slot_by_its_deadline_gets_503(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    release = trio.Event()
    config = {**local_config, "WEB_SERVER_TIMEOUT": 5, "WEB_SERVER_MAX_WORKERS": 2}
    runner = await runner_factory(config, make_sleeper(log, release=release))
    container = runner.containers["sleeper"]
    held: list[int] = []
    async with asgi_client(runner) as client, trio.open_nursery() as nursery:

        async def hold() -> None:
            held.append((await client.get("/hold")).status_code)

        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        assert container.statistics().busy_workers == 2

        waiting: list[tuple[object, float]] = []

        async def third() -> None:
            waiting.append(await timed_get(client, "/quick"))

        nursery.start_soon(third)
        await trio.sleep(1)
        stats = container.statistics()
        assert (stats.max_workers, stats.busy_workers, stats.waiting_calls) == (2, 2, 1)
        assert waiting == []
        await trio.sleep(10)
        [(response, elapsed)] = waiting
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "ServiceUnavailable"
        assert elapsed == pytest.approx(5)
        assert container.statistics().waiting_calls == 0
        release.set()
    assert held == [200, 200]
    assert log == ["holding", "holding"]
    assert container.statistics().busy_workers == 0
    async with asgi_client(runner) as client:
        assert (await client.get("/quick")).status_code == 200


async def test_a_waiting_request_is_served_when_a_slot_frees_in_time(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    config = {**local_config, "WEB_SERVER_TIMEOUT": 5, "WEB_SERVER_MAX_WORKERS": 2}
    runner = await runner_factory(config, make_sleeper(log))
    results: dict[str, tuple[int, float]] = {}
    async with asgi_client(runner) as client, trio.open_nursery() as nursery:

        async def call(label: str, path: str, seconds: float | None = None) -> None:
            params = {} if seconds is None else {"seconds": seconds}
            response, elapsed = await timed_get(client, path, **params)
            results[label] = (response.status_code, elapsed)

        nursery.start_soon(call, "first", "/sleep", 3)
        nursery.start_soon(call, "second", "/sleep", 4)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "third", "/quick")
    assert results == {
        "first": (200, pytest.approx(3)),
        "second": (200, pytest.approx(4)),
        "third": (200, pytest.approx(3)),  # got the first slot that freed
    }


async def test_the_limit_counts_the_workers_of_one_service(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    release = trio.Event()
    config = {**local_config, "WEB_SERVER_TIMEOUT": 5, "WEB_SERVER_MAX_WORKERS": 2}

    class Busy:
        name = "busy"

        @http("GET", "/busy", timeout=600)
        async def busy(self, request):
            await release.wait()
            return "done"

        @http("GET", "/busy-quick")
        async def busy_quick(self, request):
            return "done"

    runner = await runner_factory(config, make_sleeper(log), Busy)
    held: list[int] = []
    async with asgi_client(runner) as client, trio.open_nursery() as nursery:

        async def hold() -> None:
            held.append((await client.get("/busy")).status_code)

        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        assert runner.containers["busy"].statistics().busy_workers == 2
        # another service of the same runner is not limited by it...
        sleeper_results: list[tuple[int, float]] = []

        async def sleep_call() -> None:
            response, elapsed = await timed_get(client, "/sleep", seconds=1)
            sleeper_results.append((response.status_code, elapsed))

        nursery.start_soon(sleep_call)
        nursery.start_soon(sleep_call)
        await trio.testing.wait_all_tasks_blocked()
        assert runner.containers["sleeper"].statistics().busy_workers == 2
        response, elapsed = await timed_get(client, "/busy-quick")
        # ...while the saturated one refuses
        assert response.status_code == 503
        assert elapsed == pytest.approx(5)
        assert sleeper_results == [(200, pytest.approx(1))] * 2
        release.set()
    assert held == [200, 200]


async def test_other_requests_are_answered_while_handlers_hang(
    autojump_clock, local_config, runner_factory, asgi_client
):
    log: list[str] = []
    release = trio.Event()
    config = {**local_config, "WEB_SERVER_TIMEOUT": 5}
    runner = await runner_factory(config, make_sleeper(log, release=release), Other)
    async with asgi_client(runner) as client, trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(client.get, "/hold")
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["holding"] * 3
        for path, text in [("/quick", "quick"), ("/other", "other"), ("/quick", "quick")]:
            response, elapsed = await timed_get(client, path)
            assert (response.status_code, response.text) == (200, text)
            assert elapsed == 0
        response, _ = await timed_get(client, "/nowhere")
        assert response.status_code == 404
        release.set()


# -- blocking handlers (real clock) ------------------------------------------------------------


def make_blocking(release: threading.Event, log: list[str]) -> type:
    class Blocking:
        name = "blocking"

        @http("GET", "/stuck", timeout=0.2)
        def stuck(self, request):
            log.append("thread started")
            assert release.wait(timeout=REAL_TIME_LIMIT)
            log.append("thread returned")
            return "too late"

        @http("GET", "/quick", timeout=0.2)
        async def quick(self, request):
            return "quick"

        @http("GET", "/quick-blocking", timeout=5)
        def quick_blocking(self, request):
            return "quick blocking"

    return Blocking


async def test_a_blocking_handler_past_its_deadline_gets_504_and_keeps_its_slot(
    local_config, runner_factory, asgi_client
):
    release = threading.Event()
    log: list[str] = []
    config = {**local_config, "WEB_SERVER_MAX_WORKERS": 1}
    with trio.fail_after(REAL_TIME_LIMIT):
        runner = await runner_factory(config, make_blocking(release, log))
        container = runner.containers["blocking"]
        async with asgi_client(runner) as client:
            start = trio.current_time()
            response = await client.get("/stuck")
            assert trio.current_time() - start >= 0.2
            assert response.status_code == 504
            assert response.json()["error"] == "Timeout"
            # the thread still runs: it keeps the only slot
            assert log == ["thread started"]
            assert container.statistics().busy_workers == 1
            response = await client.get("/quick")
            assert response.status_code == 503
            assert response.json()["error"] == "ServiceUnavailable"
            release.set()
            await container.wait_idle()
            assert log == ["thread started", "thread returned"]
            assert container.statistics().busy_workers == 0
            response = await client.get("/quick")
            assert (response.status_code, response.text) == (200, "quick")


async def test_abandoned_threads_do_not_block_other_services_or_free_slots(
    local_config, runner_factory, asgi_client
):
    release = threading.Event()
    log: list[str] = []
    config = {**local_config, "WEB_SERVER_MAX_WORKERS": 2}
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            runner = await runner_factory(config, make_blocking(release, log), Other)
            container = runner.containers["blocking"]
            async with asgi_client(runner) as client:
                assert (await client.get("/stuck")).status_code == 504
                assert container.statistics().busy_workers == 1
                # one slot left for this service; the other service is untouched
                response = await client.get("/quick-blocking")
                assert (response.status_code, response.text) == (200, "quick blocking")
                assert (await client.get("/other")).text == "other"
                assert container.statistics().busy_workers == 1
    finally:
        release.set()

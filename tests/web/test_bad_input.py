"""Bad input over a real socket: each gets a clear answer, and the server goes on answering."""

from __future__ import annotations

import trio

from triosvc.web.handlers import http

from ..conftest import SOCKET_TEST_TIMEOUT


class EchoService:
    name = "echo"

    @http("GET,POST", "/echo")
    async def echo(self, request):
        return {"method": request.method, "body": request.get_data(as_text=True)}


async def raw_exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes or stays silent after an answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        received = b""
        while True:
            with trio.move_on_after(2) as idle:
                chunk = await stream.receive_some(65536)
            if idle.cancelled_caught or not chunk:
                return received
            received += chunk


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def assert_still_serving(http_client, runner) -> None:
    async with http_client(runner) as client:
        response = await client.post("/echo", content=b"ok")
    assert response.status_code == 200
    assert response.json() == {"method": "POST", "body": "ok"}


async def test_unknown_method_is_405_with_allow(runner_factory, local_config, http_client):
    runner = await runner_factory(local_config, EchoService)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        answer = await raw_exchange(
            runner.url, b"BREW /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 405
        assert b"allow: GET, HEAD, OPTIONS, POST" in answer
        assert b'"error": "MethodNotAllowed"' in answer
        await assert_still_serving(http_client, runner)


async def test_headers_over_the_limit_are_refused(runner_factory, local_config, http_client):
    runner = await runner_factory(local_config, EchoService)
    huge = b"X-Huge: " + b"a" * 70_000 + b"\r\n"
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        answer = await raw_exchange(
            runner.url, b"GET /echo HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n"
        )
        assert answer == b"" or status_of(answer) in (400, 431)
        await assert_still_serving(http_client, runner)


async def test_garbage_request_line_is_refused(runner_factory, local_config, http_client):
    runner = await runner_factory(local_config, EchoService)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        answer = await raw_exchange(runner.url, b"\x00\x01\x02 not http at all\r\n\r\n")
        assert answer == b"" or status_of(answer) == 400
        await assert_still_serving(http_client, runner)


async def test_invalid_header_name_is_refused(runner_factory, local_config, http_client):
    runner = await runner_factory(local_config, EchoService)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        answer = await raw_exchange(
            runner.url, b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"
        )
        assert status_of(answer) == 400
        await assert_still_serving(http_client, runner)


async def test_non_utf8_path_and_query_do_not_break_the_server(
    runner_factory, local_config, http_client
):
    runner = await runner_factory(local_config, EchoService)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        answer = await raw_exchange(
            runner.url, b"GET /%ff%fe?q=%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 404
        assert b'"error": "NotFound"' in answer
        await assert_still_serving(http_client, runner)


async def test_client_leaving_mid_body_loses_nothing_else(
    runner_factory, local_config, http_client
):
    runner = await runner_factory(local_config, EchoService)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        host, port = runner.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await stream.aclose()
        await assert_still_serving(http_client, runner)

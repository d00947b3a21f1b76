"""The triosvc engine's HTTP/1.1, driven directly with small ASGI apps over raw TCP."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from .conftest import TIMEOUT, raw


async def read_body(receive: Any) -> bytes:
    body = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body.append(message["body"])
        if not message.get("more_body"):
            return b"".join(body)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's method, path, query and body."""
    body = await read_body(receive)
    answer = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "body": body.decode("latin-1"),
            "version": scope["http_version"],
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (path.encode(), extra)


async def test_keep_alive_serves_2000_requests_on_one_connection(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            for n in range(2000):
                await client.send(get(f"/n/{n}?x={n}"))
                response = await client.response()
                assert response.status == 200
                assert json.loads(response.body)["path"] == f"/n/{n}"
                assert response.header("connection") is None


async def test_pipelined_requests_are_answered_in_order(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"".join(get(f"/{n}") for n in range(100)))
            for n in range(100):
                assert json.loads((await client.response()).body)["path"] == f"/{n}"


async def test_chunked_request_body_is_decoded(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(
                b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
            )
            assert json.loads((await client.response()).body)["body"] == "hello world"
            await client.send(get("/after"))  # the connection stays usable
            assert json.loads((await client.response()).body)["path"] == "/after"


async def test_expect_100_continue_is_answered_when_the_app_reads(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(
                b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await client.response()
            assert interim.status == 100
            await client.send(b"data")
            assert json.loads((await client.response()).body)["body"] == "data"


async def test_head_keeps_content_length_and_sends_no_body(engine):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
            response = await client.response(head=True)
            assert response.header("content-length") == "5"
            await client.send(get())  # nothing of a body came between the two answers
            assert (await client.response()).body == b"hello"


async def test_http_1_0_closes_unless_keep_alive_asked(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"GET /old HTTP/1.0\r\n\r\n")
            response = await client.response()
            assert json.loads(response.body)["version"] == "1.0"
            assert response.header("connection") == "close"
            assert await client.closed()
        async with raw(running) as client:
            for _ in range(2):
                await client.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = await client.response()
                assert response.header("connection") == "keep-alive"


async def test_connection_close_is_honoured(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get("/", b"Connection: close\r\n"))
            response = await client.response()
            assert response.status == 200
            assert response.header("connection") == "close"
            assert await client.closed()


async def test_streamed_response_is_chunked_on_1_1_and_close_delimited_on_1_0(engine):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"bb", b"ccc"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get())
            response = await client.response()
            assert response.header("transfer-encoding") == "chunked"
            assert response.body == b"abbccc"
        async with raw(running) as client:
            await client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = await client.response()
            assert response.header("connection") == "close"
            assert response.body == b"abbccc"


SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two different content-lengths": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "invalid header name": b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 0\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: t\n\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n",
    "unknown transfer-encoding": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_ambiguous_requests_are_refused_with_400_and_closed(engine, request_bytes):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(request_bytes)
            response = await client.response()
            assert response.status == 400
            assert json.loads(response.body)["error"] == "BadRequest"
            assert response.header("connection") == "close"
            assert await client.closed()


async def test_requests_before_a_bad_one_are_answered_first(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get("/fine") + SMUGGLING["obs-fold"])
            assert (await client.response()).status == 200
            assert (await client.response()).status == 400
            assert await client.closed()


async def test_headers_over_the_limit_are_431(engine):
    running = await engine(echo, max_header_size=1024)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get("/", b"X-Big: %s\r\n" % (b"a" * 2000)))
            response = await client.response()
            assert response.status == 431
            assert await client.closed()
        async with raw(running) as client:  # a header that never ends is cut off too
            await client.send(b"GET / HTTP/1.1\r\nX-Big: ")
            try:
                for _ in range(100):
                    await client.send(b"a" * 1000)
            except trio.BrokenResourceError:
                pass
            assert await client.closed()


async def test_http_0_9_is_refused(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"GET /\r\n\r\n")
            assert (await client.response()).status == 505


async def test_incomplete_headers_are_dropped_after_the_read_timeout(engine):
    running = await engine(echo, read_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            start = trio.current_time()
            await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
            assert await client.closed()
            assert 0.25 < trio.current_time() - start < 3


async def test_a_slow_loris_is_dropped_even_if_it_keeps_dribbling(engine):
    running = await engine(echo, read_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            start = trio.current_time()
            with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):  # noqa: PT012
                for _ in range(100):
                    await client.send(b"X-A: b\r\n" if _ else b"GET / HTTP/1.1\r\n")
                    await trio.sleep(0.1)  # the pace is the subject here
            assert trio.current_time() - start < 3


async def test_a_stalled_body_disconnects_the_app(engine):
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    running = await engine(app, read_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            assert await client.closed()
    assert seen[-1] == {"type": "http.disconnect"}
    assert b"".join(m.get("body", b"") for m in seen) == b"abc"


async def test_an_idle_keep_alive_connection_is_closed(engine):
    running = await engine(echo, keep_alive_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get())
            await client.response()
            start = trio.current_time()
            assert await client.closed()
            assert trio.current_time() - start < 2


async def test_the_body_flows_only_as_fast_as_the_app_takes_it(engine):
    release = trio.Event()
    received = trio.Event()
    total = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal total
        await release.wait()
        total = len(await read_body(receive))
        received.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    running = await engine(app)
    size = 64 * 1024 * 1024
    chunk = b"x" * (64 * 1024)
    sent = 0

    async def upload(client: Any) -> None:
        nonlocal sent
        for _ in range(size // len(chunk)):
            await client.send(chunk)
            sent += len(chunk)

    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload, client)
                await trio.sleep(1)  # what the upload achieves meanwhile is the subject here
                assert sent < size // 4  # socket buffers only: the engine read nothing more
                release.set()
                await received.wait()
            assert total == size
            assert (await client.response()).status == 204


async def test_app_error_before_the_answer_is_a_500_and_closes(engine, caplog):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("boom")

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get())
            response = await client.response()
            assert response.status == 500
            assert json.loads(response.body) == {
                "error": "InternalServerError",
                "message": "internal server error",
            }
            assert await client.closed()
    assert "boom" in caplog.text


async def test_the_app_sees_the_client_go_away(engine):
    gone = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        assert (await receive()) == {"type": "http.disconnect"}
        gone.set()

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get())
        await gone.wait()


async def test_shutdown_finishes_in_flight_refuses_new_and_closes_idle(engine):
    started = trio.Event()
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            started.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    running = await engine(app)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as slow, raw(running) as idle, raw(running) as arriving:
            await idle.send(get("/warm"))
            await idle.response()
            await arriving.send(get("/warm"))
            await arriving.response()
            await slow.send(get("/slow"))
            await started.wait()
            running.stop.set()
            await trio.testing.wait_all_tasks_blocked()
            # A request arriving on an open connection during the grace is still answered.
            await arriving.send(get("/late"))
            late = await arriving.response()
            assert late.body == b"/late"
            assert late.header("connection") == "close"
            with trio.socket.socket() as probe, pytest.raises(OSError):  # the listener is closed
                await probe.connect(("127.0.0.1", running.port))
            assert await idle.closed()  # idle keep-alive connections go after a grace
            release.set()
            response = await slow.response()
            assert response.body == b"/slow"
            assert response.header("connection") == "close"


async def test_shutdown_cancels_what_outlives_the_grace_period(engine):
    started = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await trio.sleep_forever()

    running = await engine(app, graceful_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get())
            await started.wait()
            running.stop.set()
            assert await client.closed()


async def test_a_method_llhttp_does_not_know_reaches_the_app(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(b"BREW /pot HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntea")
            answer = json.loads((await client.response()).body)
            assert (answer["method"], answer["path"], answer["body"]) == ("BREW", "/pot", "tea")
            # in pieces, on the same connection
            await client.send(b"BR")
            await trio.testing.wait_all_tasks_blocked()
            await client.send(b"EW /again HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = json.loads((await client.response()).body)
            assert (answer["method"], answer["path"]) == ("BREW", "/again")
            await client.send(get("/after"))
            assert json.loads((await client.response()).body)["method"] == "GET"


@pytest.mark.parametrize(
    "request_line",
    [b"BR(EW / HTTP/1.1", b"X" * 40 + b" / HTTP/1.1", b"\x00\x01 / HTTP/1.1"],
    ids=["not-a-token", "too-long", "binary"],
)
async def test_a_method_that_is_not_a_token_is_refused(engine, request_line):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(request_line + b"\r\nHost: t\r\n\r\n")
            assert (await client.response()).status == 400
            assert await client.closed()


async def test_an_unknown_method_pipelined_behind_another_request_is_refused(engine):
    running = await engine(echo)
    with trio.fail_after(TIMEOUT):
        async with raw(running) as client:
            await client.send(get("/first") + b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n")
            assert json.loads((await client.response()).body)["path"] == "/first"
            assert (await client.response()).status == 400
            assert await client.closed()

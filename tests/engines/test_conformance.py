"""HTTP/1.1 conformance of both engines, through a real service (SPEC §8, RFC 9112).

Each check starts a small service with ``runner_factory`` on ``hypercorn`` and on
triosvc's own engine and asserts what a client sees on the wire: raw bytes over TCP
(:class:`~.conftest.RawClient`), so that nothing a client library smooths over (framing,
which connection an answer travels on, when the server closes) is hidden. What hypercorn
(h11) does not give is a strict xfail on hypercorn naming what it does instead.
"""

from __future__ import annotations

import gc
import logging
import socket
import struct
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from werkzeug.wrappers import Response as WerkzeugResponse

from tests.conftest import SOCKET_TEST_TIMEOUT, on_both_engines
from tests.web.test_shutdown import address_of
from triosvc.web import server as web_server
from triosvc.web.handlers import http
from triosvc.web.server import WebServer

from .conftest import RawClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from _pytest.mark.structures import ParameterSet

    from triosvc.runners import ServiceRunner
    from triosvc.testing.pytest_plugin import RunnerFactory

ENGINES = ("hypercorn", "triosvc")

#: Every check on both engines (what hypercorn cannot give: ``on_both_engines``).
both_engines = pytest.mark.parametrize("engine", ENGINES)

GREETING = b"hello, world"

#: The streamed answer (32 MiB): far more than any socket buffer holds.
STREAM_CHUNK = b"s" * (128 * 1024)
STREAM_CHUNKS = 256


@attrs.define
class Probe:
    """What the test service lets a test steer."""

    #: Set by the test: the gated handler answers then.
    gate: trio.Event = attrs.Factory(trio.Event)
    #: Set by the gated handler once it runs.
    entered: trio.Event = attrs.Factory(trio.Event)


def make_service(probe: Probe) -> type:
    class Conformance:
        name = "conformance"

        @http("GET,POST", "/echo/<ident>")
        async def echo(self, request: Any, ident: str) -> str:
            return f"{ident} {request.method} {request.get_data(as_text=True)}"

        @http("GET", "/greeting")
        async def greeting(self, request: Any) -> bytes:
            return GREETING

        @http("POST", "/gated")
        async def gated(self, request: Any) -> str:
            probe.entered.set()
            await probe.gate.wait()
            return f"gated {request.get_data(as_text=True)}"

        @http("GET", "/stream")
        async def stream(self, request: Any) -> WerkzeugResponse:
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(STREAM_CHUNKS):
                    yield STREAM_CHUNK

            return WerkzeugResponse(chunks(), mimetype="application/octet-stream")

    return Conformance


async def start(
    runner_factory: RunnerFactory, engine: str, probe: Probe | None = None, **config: object
) -> ServiceRunner:
    """The test service on ``engine``, on a port the OS picks."""
    settings = {"WEB_SERVER_ADDRESS": "127.0.0.1:0", "WEB_SERVER_ENGINE": engine, **config}
    return await runner_factory(settings, make_service(probe or Probe()))


@asynccontextmanager
async def connect(runner: ServiceRunner) -> AsyncIterator[RawClient]:
    assert runner.url is not None
    stream = await trio.open_tcp_stream(*address_of(runner.url))
    async with stream:
        yield RawClient(stream)


def request(method: str, path: str, body: bytes | None = None, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (body or b"")


def get(path: str, *headers: str) -> bytes:
    return request("GET", path, None, *headers)


def chunked_post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


async def read_to_eof(client: RawClient) -> bytes:
    """What the server still sends before it closes the connection (a reset ends it too)."""
    await client.closed()
    rest = bytes(client.buffer)
    client.buffer.clear()
    return rest


async def assert_serves(client: RawClient, ident: str = "ok") -> None:
    await client.send(get(f"/echo/{ident}"))
    response = await client.response()
    assert (response.status, response.body) == (200, f"{ident} GET ".encode())


def abort(client: RawClient) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed client or a middlebox does."""
    client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.stream.socket.close()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records carrying a traceback, or at ERROR and above."""
    return [
        f"{record.name} {record.levelname}: {record.getMessage()}"
        for record in caplog.records
        if record.exc_info or record.levelno >= logging.ERROR
    ]


# Request smuggling: refused, the connection closed, nothing after the refusal read.

CL_AND_TE = "content-length and transfer-encoding"

#: Refused with 400 by both engines.
REFUSED = {
    CL_AND_TE: (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two different content-lengths": (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "space before the colon": (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nContent-Length : 4\r\n\r\nabcd"
    ),
    "space in a header name": b"GET /echo/bad HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    "non-token header name": b"GET /echo/bad HTTP/1.1\r\nHost: t\r\nX-A(b): x\r\n\r\n",
    "non-hex chunk size": (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabcd\r\n0\r\n\r\n"
    ),
    "negative chunk size": (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"-3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk longer than its size": (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabcd\r\n0\r\n\r\n"
    ),
}

#: A request pipelined behind a refused one: it must never be answered.
SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


async def assert_refused(
    runner: ServiceRunner, bad: bytes, *, pipelined: bool = True, status: int = 400
) -> None:
    """``bad`` (with a request pipelined behind it) is refused with ``status`` and the
    connection closed, nothing answered after; a connection opened before, and a new one,
    are still served."""
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as other, connect(runner) as client:
            await assert_serves(other, "before")
            await client.send(bad + (SMUGGLED if pipelined else b""))
            response = await client.response()
            assert response.status == status, response
            assert response.header("connection") == "close", response
            assert await read_to_eof(client) == b""  # nothing for the smuggled request
            await assert_serves(other, "after")
        async with connect(runner) as client:
            await assert_serves(client, "new")


@pytest.mark.parametrize("bad", REFUSED.values(), ids=REFUSED.keys())
@both_engines
async def test_smuggling_attempts_are_refused_with_400_and_closed(
    runner_factory: RunnerFactory, engine: str, bad: bytes
) -> None:
    await assert_refused(await start(runner_factory, engine), bad, pipelined=False)


def _pipelined_cases() -> list[ParameterSet]:
    cases = []
    for name, bad in REFUSED.items():
        for engine in ENGINES:
            marks = []
            if engine == "hypercorn" and name == CL_AND_TE:
                # Not an xfail: which of the two happens depends on trio's scheduling.
                marks.append(
                    pytest.mark.skip(
                        reason="BUG (nondeterministic): the 400 comes from triosvc's guard app "
                        "while h11 reads on; h11 refuses the pipelined bytes ('Got data when "
                        "expecting EOF') and hypercorn closes the socket, racing the 400 "
                        "being written: the client gets the 400, or nothing at all",
                    )
                )
            cases.append(pytest.param(engine, bad, id=f"{engine}-{name}", marks=marks))
    return cases


@pytest.mark.parametrize(("engine", "bad"), _pipelined_cases())
async def test_a_request_pipelined_behind_a_refused_one_is_never_answered(
    runner_factory: RunnerFactory, engine: str, bad: bytes
) -> None:
    await assert_refused(await start(runner_factory, engine), bad)


@on_both_engines("h11 unfolds an obs-fold header line and serves the request (200)")
async def test_obs_fold_is_refused(runner_factory: RunnerFactory, engine: str) -> None:
    bad = b"GET /echo/bad HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n"
    await assert_refused(await start(runner_factory, engine), bad)


@on_both_engines("h11 takes bare LF as a line ending and serves the request (200)")
async def test_bare_lf_line_endings_are_refused(runner_factory: RunnerFactory, engine: str) -> None:
    bad = b"GET /echo/bad HTTP/1.1\nHost: t\n\n"
    await assert_refused(await start(runner_factory, engine), bad)


@on_both_engines(
    "h11 answers 501 to any Transfer-Encoding but chunked, where RFC 9112 §6.3 asks 400 "
    "when chunked is not the final coding (the body length cannot be determined)"
)
@pytest.mark.parametrize(
    "coding", ["gzip", "chunked, gzip", "identity"], ids=["gzip", "chunked-not-last", "identity"]
)
async def test_a_transfer_encoding_not_ending_in_chunked_is_refused_with_400(
    runner_factory: RunnerFactory, engine: str, coding: str
) -> None:
    bad = f"POST /echo/bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {coding}\r\n\r\n".encode()
    await assert_refused(await start(runner_factory, engine), bad + b"4\r\nabcd\r\n0\r\n\r\n")


@both_engines
async def test_chunked_over_a_coding_the_server_lacks_is_refused_with_501(
    runner_factory: RunnerFactory, engine: str
) -> None:
    # Framed (chunked is last) but not decodable: RFC 9112 §6.1 says 501; served, the
    # app would take gzip bytes for the body.
    bad = (
        b"POST /echo/bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"4\r\nabcd\r\n0\r\n\r\n"
    )
    await assert_refused(await start(runner_factory, engine), bad, status=501)


# Requests that end the connection.


@both_engines
async def test_http_1_0_without_keep_alive_is_answered_and_closed(
    runner_factory: RunnerFactory, engine: str
) -> None:
    runner = await start(runner_factory, engine)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(b"GET /echo/old HTTP/1.0\r\n\r\n")
            response = await client.response()
            assert (response.status, response.body) == (200, b"old GET ")
            assert (response.header("connection") or "close").lower() == "close"
            assert await read_to_eof(client) == b""


@both_engines
async def test_connection_close_is_honoured(runner_factory: RunnerFactory, engine: str) -> None:
    runner = await start(runner_factory, engine)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(get("/echo/last", "Connection: close"))
            response = await client.response()
            assert (response.status, response.body) == (200, b"last GET ")
            assert response.header("connection") == "close"
            assert await read_to_eof(client) == b""


CLOSING = {
    "http/1.0": b"GET /echo/last HTTP/1.0\r\n\r\n",
    "connection close": get("/echo/last", "Connection: close"),
}


@on_both_engines(
    "h11 refuses the bytes pipelined behind a request that ends the connection ('Got data "
    "when expecting EOF'): hypercorn answers that request 400, or closes without answering"
)
@pytest.mark.parametrize("closing", CLOSING.values(), ids=CLOSING.keys())
async def test_a_request_that_ends_the_connection_is_answered_and_the_next_is_not(
    runner_factory: RunnerFactory, engine: str, closing: bytes
) -> None:
    runner = await start(runner_factory, engine)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(closing + get("/echo/ignored"))  # RFC 9112 §9.6
            response = await client.response()
            assert (response.status, response.body) == (200, b"last GET ")
            assert await read_to_eof(client) == b""


# Clients that go away.


@both_engines
async def test_a_half_closed_client_still_gets_its_answer(
    runner_factory: RunnerFactory, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe()
    runner = await start(runner_factory, engine, probe)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(request("POST", "/gated", b"payload"))
            await client.stream.send_eof()  # the client has said all it will say
            await probe.entered.wait()
            await trio.testing.wait_all_tasks_blocked()  # what the EOF sets off, done
            probe.gate.set()
            response = await client.response()
            assert (response.status, response.body) == (200, b"gated payload")
        async with connect(runner) as client:
            await assert_serves(client)
    assert tracebacks(caplog) == []


async def assert_a_reset_leaves_the_server_serving(
    runner: ServiceRunner,
    caplog: pytest.LogCaptureFixture,
    before_the_reset: Callable[[RawClient], Awaitable[None]],
) -> None:
    """A client reset once ``before_the_reset`` has run on its connection: a connection
    opened before, and a new one, are still served, and nothing logs a traceback."""
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as other:
            await assert_serves(other, "before")
            async with connect(runner) as client:
                await before_the_reset(client)
                abort(client)
                await trio.testing.wait_all_tasks_blocked()  # the server sees the reset
            await assert_serves(other, "after")
        async with connect(runner) as client:
            await assert_serves(client)
    assert tracebacks(caplog) == []


@both_engines
async def test_a_client_reset_mid_request_leaves_the_server_serving(
    runner_factory: RunnerFactory, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def half_a_body(client: RawClient) -> None:
        await client.send(request("POST", "/echo/cut", b"x" * 1000)[:-500])
        await trio.testing.wait_all_tasks_blocked()  # the server reads the body

    runner = await start(runner_factory, engine)
    await assert_a_reset_leaves_the_server_serving(runner, caplog, half_a_body)


@both_engines
async def test_a_client_reset_mid_response_leaves_the_server_serving(
    runner_factory: RunnerFactory, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def part_of_the_answer(client: RawClient) -> None:
        await client.send(get("/stream"))
        await client._until(b"\r\n\r\n")  # the head, then some of the 32 MiB body
        await client._exactly(len(STREAM_CHUNK))

    runner = await start(runner_factory, engine)
    await assert_a_reset_leaves_the_server_serving(runner, caplog, part_of_the_answer)


# Pipelining and keep-alive.


@both_engines
async def test_twenty_pipelined_requests_are_answered_in_order(
    runner_factory: RunnerFactory, engine: str
) -> None:
    runner = await start(runner_factory, engine)
    requests: list[bytes] = []
    expected: list[bytes] = []
    for n in range(20):
        if n % 3 == 0:
            requests.append(get(f"/echo/{n}"))
            expected.append(f"{n} GET ".encode())
        elif n % 3 == 1:
            requests.append(request("POST", f"/echo/{n}", f"body {n}".encode()))
            expected.append(f"{n} POST body {n}".encode())
        else:
            requests.append(chunked_post(f"/echo/{n}", f"chunked {n}".encode()))
            expected.append(f"{n} POST chunked {n}".encode())
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(b"".join(requests))  # one write
            answers = [await client.response() for _ in requests]
            assert [(a.status, a.body) for a in answers] == [(200, body) for body in expected]
            await assert_serves(client)


#: Requests on one keep-alive connection (SPEC §8: at least 10,000), pipelined in batches.
KEEP_ALIVE_REQUESTS = 10_000
KEEP_ALIVE_BATCH = 100
#: Where memory is first read: caches filled, lazy imports done.
EARLY_READING = 1_000
#: Memory blocks (Python objects, mostly) kept more after 10,000 requests than after
#: 1,000. One object kept per request would be 9,000 over; what varies by chance is
#: trio's deadline heap, which keeps up to ~1,000 stale entries of a few blocks each
#: before it prunes them (measured growth here: 10 to 20 blocks).
BLOCK_GROWTH_BOUND = 5_000
#: hypercorn serves about 1,000 requests a second here, less on a busy machine.
KEEP_ALIVE_TIMEOUT = 60


async def exchange_batches(client: RawClient, first: int, last: int) -> None:
    """Requests ``first`` to ``last`` (excluded), ``KEEP_ALIVE_BATCH`` per write."""
    for batch in range(first, last, KEEP_ALIVE_BATCH):
        idents = range(batch, min(batch + KEEP_ALIVE_BATCH, last))
        await client.send(b"".join(get(f"/echo/{n}") for n in idents))
        for n in idents:
            response = await client.response()
            if (response.status, response.body) != (200, f"{n} GET ".encode()):
                raise AssertionError(f"request {n} got {response}")


async def settle() -> None:
    """A point where memory can be compared: every task parked, garbage collected."""
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()


@pytest.mark.slow
@both_engines
async def test_one_connection_serves_10000_requests_in_flat_memory(
    runner_factory: RunnerFactory, engine: str
) -> None:
    """All answered, in order; the objects the server keeps do not grow with the requests
    (``sys.getallocatedblocks()``, server and client in this process, after 1,000 and
    after 10,000 requests)."""
    runner = await start(runner_factory, engine)
    with trio.fail_after(KEEP_ALIVE_TIMEOUT):
        async with connect(runner) as client:
            await exchange_batches(client, 0, EARLY_READING)
            await settle()
            early_blocks = sys.getallocatedblocks()
            await exchange_batches(client, EARLY_READING, KEEP_ALIVE_REQUESTS)
            await settle()
            late_blocks = sys.getallocatedblocks()
    assert late_blocks - early_blocks < BLOCK_GROWTH_BOUND, (
        f"{late_blocks - early_blocks} more blocks after {KEEP_ALIVE_REQUESTS} requests "
        f"than after {EARLY_READING}"
    )


# Slow clients.

#: The read timeout the slow-client tests run with (seconds).
READ_TIMEOUT = 1.5


@pytest.fixture
def short_read_timeout(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Config (and a patch) for a READ_TIMEOUT read timeout.

    No config key sets it: the server derives it as the longer of ``SILENCE_TIMEOUT``
    (30 s) and one second past the longest handler timeout (``WEB_SERVER_TIMEOUT`` for
    handlers without their own). Both are brought down.
    """
    monkeypatch.setattr(web_server, "SILENCE_TIMEOUT", READ_TIMEOUT)
    return {"WEB_SERVER_TIMEOUT": READ_TIMEOUT - 1}


def engine_read_timeout(runner: ServiceRunner) -> float:
    server = runner.shared_extension(WebServer)
    assert isinstance(server, WebServer)
    return server._engine_options().read_timeout


@on_both_engines(
    "hypercorn's read_timeout bounds each read, not the request's head: a client sending "
    "a byte every 50 ms is dropped only by its keep-alive timeout, 5 s later"
)
async def test_a_client_dribbling_its_headers_is_dropped_after_the_read_timeout(
    runner_factory: RunnerFactory, engine: str, short_read_timeout: dict[str, object]
) -> None:
    runner = await start(runner_factory, engine, **short_read_timeout)
    assert engine_read_timeout(runner) == READ_TIMEOUT
    head = b"GET /echo/slow HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000  # never complete
    answer = None
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client, trio.open_nursery() as nursery:

            async def dribble() -> None:
                for byte in head:
                    try:
                        await client.send(bytes([byte]))
                    except trio.BrokenResourceError:
                        return
                    await trio.sleep(0.05)  # the pace is what is tested here

            began = trio.current_time()
            nursery.start_soon(dribble)
            with trio.move_on_after(READ_TIMEOUT + 0.75):
                answer = await read_to_eof(client)
            elapsed = trio.current_time() - began
            nursery.cancel_scope.cancel()
    assert answer is not None, "still connected well past the read timeout"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert elapsed > READ_TIMEOUT * 0.9


@both_engines
async def test_a_slow_client_within_the_read_timeout_is_served(
    runner_factory: RunnerFactory, engine: str, short_read_timeout: dict[str, object]
) -> None:
    runner = await start(runner_factory, engine, **short_read_timeout)
    data = get("/echo/slow")
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            for byte in data:  # about 0.4 s in all: well within the read timeout
                await client.send(bytes([byte]))
                await trio.sleep(0.01)  # the pace is what is tested here
            response = await client.response()
            assert (response.status, response.body) == (200, b"slow GET ")


# What answers look like.


@both_engines
async def test_head_carries_gets_content_length_and_no_body(
    runner_factory: RunnerFactory, engine: str
) -> None:
    runner = await start(runner_factory, engine)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(get("/greeting") + request("HEAD", "/greeting") + get("/echo/next"))
            got = await client.response()
            assert (got.status, got.body) == (200, GREETING)
            head = await client.response(head=True)
            assert head.status == 200
            assert head.header("content-length") == str(len(GREETING))
            # No body came between the HEAD answer and the next one.
            following = await client.response()
            assert (following.status, following.body) == (200, b"next GET ")


@both_engines
async def test_expect_100_continue_gets_100_then_the_answer(
    runner_factory: RunnerFactory, engine: str
) -> None:
    runner = await start(runner_factory, engine)
    head = request("POST", "/echo/e", None, "Expect: 100-continue", "Content-Length: 4")
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        async with connect(runner) as client:
            await client.send(head)
            interim = await client.response()  # the body is sent only once it came
            assert interim.status == 100
            await client.send(b"data")
            response = await client.response()
            assert (response.status, response.body) == (200, b"e POST data")
            await assert_serves(client)

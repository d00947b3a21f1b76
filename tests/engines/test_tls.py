"""TLS on both engines: ``WEB_SERVER_CERTFILE`` and ``WEB_SERVER_KEYFILE`` (SPEC §7-8).

A throwaway CA (``trustme``) signs a certificate for 127.0.0.1; clients trust that CA
only. Every check runs on ``hypercorn`` and on triosvc's own engine; the last ones
drive the native engine's TLS transport directly.
"""

from __future__ import annotations

import json
import logging
import ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio
import trio.testing
import trustme
import websockets.sync.client

from tests.conftest import SOCKET_TEST_TIMEOUT
from triosvc.web import server as web_server
from triosvc.web.engines.native.transport import TLSTransport
from triosvc.web.handlers import http
from triosvc.web.server import WebServer
from triosvc.web.websocket import WebSocketHubProvider, open_websocket_client, rpc

from .conftest import RawClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from triosvc.runners import ServiceRunner
    from triosvc.testing.pytest_plugin import RunnerFactory

both_engines = pytest.mark.parametrize("engine", ["triosvc", "hypercorn"])

#: The engines' read timeout in the silence tests (see ``short_read_timeout``).
READ_TIMEOUT = 1.5


@attrs.frozen
class Certs:
    ca: trustme.CA
    certfile: str
    keyfile: str

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA only (not the system's CAs: faster)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(context)
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    directory: Path = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    return Certs(ca, str(certfile), str(keyfile))


class Secure:
    name = "secure"
    hub = WebSocketHubProvider()

    @http("GET", "/hello")
    async def hello(self, request: Any) -> dict[str, str]:
        return {"scheme": request.scheme, "url": request.url}

    @http("POST", "/echo")
    async def echo(self, request: Any) -> bytes:
        data: bytes = request.get_data()
        return data

    @rpc
    async def add(self, socket_id: str, a: int, b: int) -> int:
        return a + b


async def start(
    runner_factory: RunnerFactory,
    local_config: dict[str, object],
    engine: str,
    certs: Certs,
    **config: object,
) -> ServiceRunner:
    settings = {
        **local_config,
        "WEB_SERVER_ENGINE": engine,
        "WEB_SERVER_CERTFILE": certs.certfile,
        "WEB_SERVER_KEYFILE": certs.keyfile,
        **config,
    }
    return await runner_factory(settings, Secure)


def address_of(runner: ServiceRunner) -> tuple[str, int]:
    assert runner.url is not None
    host, port = runner.url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


@asynccontextmanager
async def tls_client(
    runner: ServiceRunner, context: ssl.SSLContext
) -> AsyncIterator[tuple[RawClient, trio.SSLStream[trio.SocketStream]]]:
    """Raw HTTP/1.1 over one TLS connection: which connection carries what is the point."""
    host, port = address_of(runner)
    stream = await trio.open_ssl_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    async with stream:
        await stream.do_handshake()
        yield RawClient(stream), stream  # type: ignore[arg-type]  # it only sends and receives


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """What the server sends until it closes the connection (a reset ends it too)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"


# -- HTTPS ------------------------------------------------------------------------------------


@both_engines
async def test_https_get_and_post(
    runner_factory: RunnerFactory, local_config: dict[str, object], engine: str, certs: Certs
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs)
        assert runner.url is not None
        assert runner.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=runner.url, verify=certs.client_context()) as client:
            hello = await client.get("/hello")
            body = bytes(range(256)) * 1000  # larger than one TLS record
            echoed = await client.post("/echo", content=body)
    assert hello.status_code == 200
    assert hello.json() == {"scheme": "https", "url": f"{runner.url}/hello"}
    assert (echoed.status_code, echoed.content) == (200, body)


@both_engines
async def test_keep_alive_and_pipelining_over_tls(
    runner_factory: RunnerFactory, local_config: dict[str, object], engine: str, certs: Certs
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs)
        context = certs.client_context(alpn=["http/1.1"])
        async with tls_client(runner, context) as (client, stream):
            assert stream.selected_alpn_protocol() == "http/1.1"
            for _ in range(3):  # one after the other, on the one connection
                await client.send(GET_HELLO)
                response = await client.response()
                assert response.status == 200
                assert response.header("connection") != "close"
            await client.send(GET_HELLO * 2)  # pipelined
            statuses = [(await client.response()).status for _ in range(2)]
    assert statuses == [200, 200]


# -- WebSocket --------------------------------------------------------------------------------


@both_engines
async def test_websocket_rpc_over_wss_with_the_triosvc_client(
    runner_factory: RunnerFactory, local_config: dict[str, object], engine: str, certs: Certs
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs)
        assert runner.url is not None
        async with open_websocket_client(runner.url, ssl_context=certs.client_context()) as ws:
            assert ws.url.startswith("wss://127.0.0.1:")
            assert await ws.rpc("add", a=2, b=3) == 5


@both_engines
async def test_websocket_rpc_over_wss_with_the_websockets_library(
    runner_factory: RunnerFactory, local_config: dict[str, object], engine: str, certs: Certs
) -> None:
    def call(url: str) -> tuple[object, object]:
        with websockets.sync.client.connect(
            url, ssl=certs.client_context(), open_timeout=SOCKET_TEST_TIMEOUT
        ) as ws:
            connected = json.loads(ws.recv(timeout=SOCKET_TEST_TIMEOUT))
            ws.send(json.dumps({"method": "add", "data": {"a": 2, "b": 3}, "correlation_id": 7}))
            return connected, json.loads(ws.recv(timeout=SOCKET_TEST_TIMEOUT))

    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs)
        assert runner.url is not None
        url = runner.url.replace("https://", "wss://") + "/ws"
        connected, reply = await trio.to_thread.run_sync(call, url)
    assert isinstance(connected, dict)
    assert connected["event"] == "connected"
    assert reply == {"type": "result", "success": True, "data": 5, "correlation_id": 7}


@pytest.fixture
def web_config(web_config: dict[str, object], certs: Certs) -> dict[str, object]:
    """The plugin's ``web_config`` with TLS, before ``web_session`` and ``websocket`` read it."""
    return {
        **web_config,
        "WEB_SERVER_CERTFILE": certs.certfile,
        "WEB_SERVER_KEYFILE": certs.keyfile,
    }


@both_engines
async def test_the_plugin_fixtures_speak_tls_when_the_config_has_a_certificate(
    runner_factory: RunnerFactory,
    web_config: dict[str, object],
    web_session: httpx.AsyncClient,
    websocket: Any,
    engine: str,
    certs: Certs,
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        await runner_factory({**web_config, "WEB_SERVER_ENGINE": engine}, Secure)
        hello = await web_session.get("/hello")
        ws = await websocket(ssl_context=certs.client_context())
        assert await ws.rpc("add", a=1, b=2) == 3
    assert hello.json()["scheme"] == "https"


# -- clients that never make it through the handshake ----------------------------------------


@pytest.fixture
def short_read_timeout(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Config (and patch) giving the engines a read timeout of READ_TIMEOUT: the longer of
    SILENCE_TIMEOUT and one second past the longest handler timeout, with no heartbeat."""
    monkeypatch.setattr(web_server, "SILENCE_TIMEOUT", READ_TIMEOUT)
    return {"WEB_SERVER_TIMEOUT": 0.5, "WEBSOCKET_HUB_CONFIG": {"heartbeat_interval": 0}}


@both_engines
async def test_a_client_that_never_handshakes_is_dropped_while_others_are_served(
    runner_factory: RunnerFactory,
    local_config: dict[str, object],
    engine: str,
    certs: Certs,
    short_read_timeout: dict[str, object],
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs, **short_read_timeout)
        server = runner.shared_extension(WebServer)
        assert isinstance(server, WebServer)
        assert server._engine_options().read_timeout == READ_TIMEOUT
        silent = await trio.open_tcp_stream(*address_of(runner))
        async with silent:
            began = trio.current_time()
            async with httpx.AsyncClient(
                base_url=runner.url or "", verify=certs.client_context()
            ) as client:
                served = await client.get("/hello")  # while the silent one waits
            rest = await read_to_eof(silent)
            elapsed = trio.current_time() - began
    assert served.status_code == 200
    assert rest == b""
    assert READ_TIMEOUT * 0.8 < elapsed < READ_TIMEOUT + 1.5, elapsed


@both_engines
async def test_bad_handshakes_neither_disturb_others_nor_log_warnings(
    runner_factory: RunnerFactory,
    local_config: dict[str, object],
    engine: str,
    certs: Certs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="triosvc")
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, engine, certs)
        assert runner.url is not None
        # Plain HTTP to the TLS port: no HTTP answer, the connection closed.
        plain = await trio.open_tcp_stream(*address_of(runner))
        async with plain:
            await plain.send_all(GET_HELLO)
            answer = await read_to_eof(plain)
        # A client that does not trust the certificate gives up on the handshake.
        distrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        with pytest.raises(trio.BrokenResourceError) as refused:
            async with tls_client(runner, distrusting):
                pass
        # Garbage instead of a ClientHello.
        garbage = await trio.open_tcp_stream(*address_of(runner))
        async with garbage:
            await garbage.send_all(b"\x16\x03\x01\x00\x05hello" + bytes(300))
            await read_to_eof(garbage)
        async with httpx.AsyncClient(base_url=runner.url, verify=certs.client_context()) as client:
            served = await client.get("/hello")
    assert not answer.startswith(b"HTTP/"), answer
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    assert served.status_code == 200
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


# -- the native engine's TLS transport --------------------------------------------------------


async def test_the_native_engine_offers_http_1_1_only(
    runner_factory: RunnerFactory, local_config: dict[str, object], certs: Certs
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        runner = await start(runner_factory, local_config, "triosvc", certs)
        context = certs.client_context(alpn=["h2", "http/1.1"])
        async with tls_client(runner, context) as (client, stream):
            assert stream.selected_alpn_protocol() == "http/1.1"
            await client.send(GET_HELLO)
            assert (await client.response()).status == 200


async def test_a_tls_peer_that_never_reads_is_aborted_at_the_write_deadline(
    engine: Any, certs: Certs
) -> None:
    """``engine`` here is tests/engines/conftest.py's fixture: the native engine alone."""
    finished = trio.Event()
    outcome: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(10_000):  # far more than the socket buffers hold
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        outcome.append(await receive())
        finished.set()

    running = await engine(app, write_timeout=0.3, certfile=certs.certfile, keyfile=certs.keyfile)
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", running.port, ssl_context=certs.client_context(), https_compatible=True
        )
        async with stream:
            await stream.send_all(GET_HELLO)  # and never reads a byte
            await finished.wait()
    assert outcome == [{"type": "http.disconnect"}]


async def _transport_pair(
    certs: Certs, nursery: trio.Nursery
) -> tuple[TLSTransport, trio.SSLStream[trio.SocketStream]]:
    """A server-side TLSTransport and the client end of it, handshaken, over a socketpair."""
    server_sock, client_sock = trio.socket.socketpair()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.certfile, certs.keyfile)
    server = trio.SSLStream(trio.SocketStream(server_sock), context, server_side=True)
    client = trio.SSLStream(
        trio.SocketStream(client_sock), certs.client_context(), server_hostname="localhost"
    )
    nursery.start_soon(client.do_handshake)
    await server.do_handshake()
    return TLSTransport(server, write_timeout=10), client


async def test_a_tls_write_cancelled_from_outside_closes_the_connection(
    certs: Certs, nursery: trio.Nursery
) -> None:
    with trio.fail_after(SOCKET_TEST_TIMEOUT):
        transport, client = await _transport_pair(certs, nursery)
        async with client:
            assert await transport.write(b"small")
            assert await client.receive_some(100) == b"small"
            with trio.CancelScope() as scope:

                async def cancel_once_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(cancel_once_blocked)
                await transport.write(b"x" * (16 << 20))  # blocks: the client is not reading
            assert scope.cancelled_caught
            # Part of a record may have gone out: the connection cannot be used any more.
            assert transport.closed
            assert await transport.write(b"more") is False
            assert await transport.receive() == b""

"""What a handler returns, and the response the client gets (SPEC §4.1)."""

from __future__ import annotations

import datetime
import logging
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
from werkzeug.wrappers import Response

from triosvc.web.handlers import http

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
JSON = "application/json"
INTERNAL_ERROR = {"error": "InternalServerError", "message": "internal server error"}


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as client``: the services on a real socket."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield client

    return serve


class Teapot(Response):
    default_status = 418
    default_mimetype = "text/x-tea"


#: name -> what the handler returns
RETURNS = {
    "str": "héllo wörld",
    "empty_str": "",
    "bytes": b"\x00\xff binary",
    "dict": {"a": 1, "b": [True, None], "ü": "é"},
    "empty_dict": {},
    "list": [1, "two", {"three": 3.0}],
    "none": None,
    "body_status": ("created", 201),
    "dict_status": ({"id": 7}, 201),
    "none_status": (None, 202),
    "body_status_dict_headers": ("ok", 200, {"X-One": "1", "X-Two": "2"}),
    "body_status_list_headers": (b"ok", 203, [("X-One", "1"), ("X-Multi", "a"), ("X-Multi", "b")]),
    "content_type_wins": ("<p>hi</p>", 200, {"Content-Type": "text/html; charset=utf-8"}),
    "content_type_wins_lower": ({"a": 1}, 200, [("content-type", "application/vnd.x+json")]),
    "nameko_status_body": (201, "created"),
    "nameko_status_dict": (404, {"missing": True}),
    "nameko_status_headers_body": (202, {"X-One": "1"}, "accepted"),
    "nameko_status_list_headers_body": (409, [("X-Multi", "a"), ("X-Multi", "b")], [1, 2]),
    "nameko_status_none": (200, None),
    "response": Response("plain werkzeug", status=299, headers={"X-Own": "yes"}),
    "response_subclass": Teapot("short and stout"),
}

#: name -> (status, content type or None, body, {header: values})
EXPECTED = {
    "str": (200, TEXT, "héllo wörld".encode(), {}),
    "empty_str": (200, TEXT, b"", {}),
    "bytes": (200, BINARY, b"\x00\xff binary", {}),
    "dict": (200, JSON, {"a": 1, "b": [True, None], "ü": "é"}, {}),
    "empty_dict": (200, JSON, {}, {}),
    "list": (200, JSON, [1, "two", {"three": 3.0}], {}),
    "none": (204, None, b"", {}),
    "body_status": (201, TEXT, b"created", {}),
    "dict_status": (201, JSON, {"id": 7}, {}),
    "none_status": (202, None, b"", {}),
    "body_status_dict_headers": (200, TEXT, b"ok", {"x-one": ["1"], "x-two": ["2"]}),
    "body_status_list_headers": (203, BINARY, b"ok", {"x-one": ["1"], "x-multi": ["a", "b"]}),
    "content_type_wins": (200, "text/html; charset=utf-8", b"<p>hi</p>", {}),
    "content_type_wins_lower": (200, "application/vnd.x+json", {"a": 1}, {}),
    "nameko_status_body": (201, TEXT, b"created", {}),
    "nameko_status_dict": (404, JSON, {"missing": True}, {}),
    "nameko_status_headers_body": (202, TEXT, b"accepted", {"x-one": ["1"]}),
    "nameko_status_list_headers_body": (409, JSON, [1, 2], {"x-multi": ["a", "b"]}),
    "nameko_status_none": (204, None, b"", {}),
    "response": (299, "text/plain; charset=utf-8", b"plain werkzeug", {"x-own": ["yes"]}),
    "response_subclass": (418, "text/x-tea; charset=utf-8", b"short and stout", {}),
}


class Returns:
    name = "returns"

    @http("GET", "/async/<name>")
    async def returns_async(self, request, name):
        return RETURNS[name]

    @http("GET", "/sync/<name>")
    def returns_sync(self, request, name):
        return RETURNS[name]


@pytest.mark.parametrize("name", list(RETURNS))
async def test_return_values(serve, name):
    status, content_type, body, headers = EXPECTED[name]
    with trio.fail_after(10):
        async with serve(Returns) as client:
            responses = [await client.get(f"/{kind}/{name}") for kind in ("async", "sync")]
    for response in responses:
        assert response.status_code == status
        assert response.headers.get("content-type") == content_type
        if isinstance(body, bytes):
            assert response.content == body
        else:
            assert response.json() == body
        if not response.content:
            assert response.headers.get("content-length", "0") == "0"
        else:
            assert response.headers["content-length"] == str(len(response.content))
        for header, values in headers.items():
            assert response.headers.get_list(header) == values
        assert len(response.headers.get_list("content-type")) <= 1


def streaming_service():
    """A service streaming from a generator that waits for the client to read the first chunk."""
    first_chunk_read = trio.Event()
    closed = []

    def chunks():
        try:
            yield "first,"
            trio.from_thread.run(first_chunk_read.wait)
            yield "second,"
            yield b"third"
        finally:
            closed.append(True)

    async def async_chunks():
        yield b"first,"
        await first_chunk_read.wait()
        yield "second,"
        yield b"third"

    class Streaming:
        name = "streaming"

        @http("GET", "/stream")
        async def stream(self, request):
            return Response(chunks(), mimetype="text/csv", headers={"X-Streamed": "yes"})

        @http("GET", "/stream-async")
        def stream_async(self, request):
            return Response(async_chunks(), mimetype="text/csv", headers={"X-Streamed": "yes"})

    return Streaming, first_chunk_read, closed


@pytest.mark.parametrize("path", ["/stream", "/stream-async"])
async def test_a_streaming_response_is_sent_as_it_is_produced(serve, path):
    service, first_chunk_read, closed = streaming_service()
    with trio.fail_after(10):
        async with serve(service) as client, client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            assert response.headers["x-streamed"] == "yes"
            assert "content-length" not in response.headers
            received = b""
            async for chunk in response.aiter_raw():
                received += chunk
                # The generator waits for this: a server that buffered the
                # whole body would never send the first chunk.
                first_chunk_read.set()
    assert received == b"first,second,third"
    if path == "/stream":
        assert closed == [True]


class Unsupported:
    name = "unsupported"

    @http("GET", "/async/<name>")
    async def weird_async(self, request, name):
        return UNSUPPORTED[name]

    @http("GET", "/sync/<name>")
    def weird_sync(self, request, name):
        return UNSUPPORTED[name]


UNSUPPORTED = {
    "set": {1, 2},
    "int": 200,
    "float": 1.5,
    "bool": True,
    "object": object(),
    "tuple_of_one": ("body",),
    "tuple_of_four": ("body", 200, {}, "extra"),
    "status_as_string": ("body", "200"),
    "status_out_of_range": ("body", 999),
    "bad_headers": ("body", 200, "X-Header: value"),
    "bad_header_pair": ("body", 200, [("X-Only-Name",)]),
    "body_of_unknown_type": (object(), 200),
    "generator": (x for x in "abc"),
}

#: what the log line names: the returned type, or what is wrong with it
UNSUPPORTED_NAMED = {
    "set": "set",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "object": "object",
    "tuple_of_one": "tuple",
    "tuple_of_four": "tuple",
    "status_as_string": "'200'",
    "status_out_of_range": "999",
    "bad_headers": "X-Header: value",
    "bad_header_pair": "X-Only-Name",
    "body_of_unknown_type": "object",
    "generator": "generator",
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
async def test_unsupported_return_values_are_500_and_logged(serve, caplog, name):
    with trio.fail_after(10):
        async with serve(Unsupported) as client:
            responses = [await client.get(f"/{kind}/{name}") for kind in ("async", "sync")]
            after = await client.get("/no-such-route")
    for response in responses:
        assert response.status_code == 500
        assert response.headers["content-type"] == JSON
        assert response.json() == INTERNAL_ERROR
    assert after.status_code == 404
    for kind in ("async", "sync"):
        handler = f"unsupported.weird_{kind}"
        records = [r for r in caplog.records if handler in r.getMessage()]
        assert len(records) == 1
        assert records[0].levelno == logging.ERROR
        assert UNSUPPORTED_NAMED[name] in records[0].getMessage()


class Unencodable:
    name = "unencodable"

    @http("GET", "/date")
    async def date(self, request):
        return {"when": datetime.date(2024, 1, 1)}

    @http("GET", "/nested")
    def nested(self, request):
        return [{"ok": 1}, {"bad": {1, 2}}], 201

    @http("GET", "/nan")
    async def nan(self, request):
        return {"value": float("nan")}


@pytest.mark.parametrize("path", ["/date", "/nested"])
async def test_a_body_json_cannot_encode_is_500(serve, caplog, path):
    with trio.fail_after(10):
        async with serve(Unencodable) as client:
            response = await client.get(path)
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    assert any(
        f"unencodable.{path[1:]}" in record.getMessage() and record.levelno == logging.ERROR
        for record in caplog.records
    )


async def test_nan_is_encoded_as_python_json_does(serve):
    # Python's json (and Flask's) writes NaN; clients decoding strictly may refuse it.
    with trio.fail_after(10):
        async with serve(Unencodable) as client:
            response = await client.get("/nan")
    assert response.status_code == 200
    assert response.content == b'{"value": NaN}'


class BadHeaderValues:
    name = "bad_header_values"

    @http("GET", "/newline")
    async def newline(self, request):
        return "body", 200, {"X-Injected": "a\r\nSet-Cookie: admin=1"}

    @http("GET", "/not-latin-1")
    async def not_latin_1(self, request):
        return "body", 200, {"X-Arrow": "→"}


@pytest.mark.parametrize("path", ["/newline", "/not-latin-1"])
async def test_header_values_that_cannot_be_sent_are_500(serve, path):
    with trio.fail_after(10):
        async with serve(BadHeaderValues) as client:
            response = await client.get(path)
            after = await client.get(path)
    assert response.status_code == 500
    assert response.json() == INTERNAL_ERROR
    assert "set-cookie" not in response.headers
    assert "x-injected" not in response.headers
    assert after.status_code == 500


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_endless_stream_stops_when_the_client_goes_away(
    runner_factory, local_config, kind
):
    stopped = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def endless():
        try:
            while True:
                yield "tick,"
        finally:
            token.run_sync_soon(stopped.set)

    async def endless_async():
        try:
            while True:
                yield b"tick,"
                await trio.lowlevel.checkpoint()
        finally:
            stopped.set()

    class Endless:
        name = "endless"

        @http("GET", "/endless")
        async def endless(self, request):
            return Response(endless() if kind == "sync" else endless_async())

    runner = await runner_factory(local_config, Endless)
    host, port = runner.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"tick," not in received:
                received += await stream.receive_some()
        # the client has gone: the generator is closed
        await stopped.wait()

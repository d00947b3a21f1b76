"""The request a handler gets (SPEC §4): werkzeug's Request, body limits, bad JSON, context data."""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager

import pytest
import trio
from werkzeug.wrappers import Request

from triosvc.extensions import DependencyProvider
from triosvc.web.handlers import http

LIMIT = 100


@pytest.fixture
def serve(runner_factory, local_config, http_client):
    """``async with serve(ServiceA, ..., KEY=value) as (runner, client)``."""

    @asynccontextmanager
    async def serve(*services, **config):
        runner = await runner_factory({**local_config, **config}, *services)
        async with http_client(runner) as client:
            yield runner, client

    return serve


def describe(request):
    return {
        "is_werkzeug_request": isinstance(request, Request),
        "method": request.method,
        "url": request.url,
        "path": request.path,
        "header": request.headers.get("X-Custom"),
        "args": {key: request.args.getlist(key) for key in request.args},
        "form": {key: request.form.getlist(key) for key in request.form},
        "cookies": dict(request.cookies),
        "remote_addr": request.remote_addr,
    }


class Echo:
    name = "echo"
    uploads: list = []

    @http("GET,POST,PUT,DELETE", "/echo/<path:rest>")
    async def echo(self, request, rest):
        return describe(request)

    @http("GET,POST", "/echo-sync")
    def echo_sync(self, request):
        return describe(request)

    @http("POST", "/json")
    async def json_body(self, request):
        return {"json": request.json, "get_json": request.get_json()}

    @http("POST", "/json-sync")
    def json_body_sync(self, request):
        return {"json": request.json, "get_json": request.get_json()}

    @http("POST", "/get-json")
    async def get_json(self, request):
        return {"get_json": request.get_json()}

    @http("POST", "/json-property")
    async def json_property(self, request):
        return {"json": request.json}

    @http("POST", "/text")
    async def text(self, request):
        return {"text": request.get_data(as_text=True)}

    @http("POST", "/bytes")
    async def raw(self, request):
        data = request.get_data()
        assert isinstance(data, bytes)
        return data

    @http("POST", "/upload")
    async def upload(self, request):
        Echo.uploads.extend(request.files.values())
        return {
            "form": request.form.to_dict(),
            "files": {
                field: {
                    "filename": storage.filename,
                    "content_type": storage.mimetype,
                    "content": base64.b64encode(storage.read()).decode(),
                }
                for field, storage in request.files.items()
            },
        }


async def test_request_attributes(serve):
    with trio.fail_after(10):
        async with serve(Echo) as (runner, client):
            response = await client.put(
                "/echo/a/b?x=1&x=2&y=ok",
                headers={"X-Custom": "custom value", "Cookie": "session=abc; theme=dark"},
                data={"field": "value"},
            )
    assert response.status_code == 200
    assert response.json() == {
        "is_werkzeug_request": True,
        "method": "PUT",
        "url": f"{runner.url}/echo/a/b?x=1&x=2&y=ok",
        "path": "/echo/a/b",
        "header": "custom value",
        "args": {"x": ["1", "2"], "y": ["ok"]},
        "form": {"field": ["value"]},
        "cookies": {"session": "abc", "theme": "dark"},
        "remote_addr": "127.0.0.1",
    }


async def test_request_attributes_in_a_blocking_handler(serve):
    with trio.fail_after(10):
        async with serve(Echo) as (runner, client):
            response = await client.post(
                "/echo-sync?q=1", data={"a": "1", "b": "2"}, headers={"X-Custom": "v"}
            )
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "POST"
    assert body["url"] == f"{runner.url}/echo-sync?q=1"
    assert body["args"] == {"q": ["1"]}
    assert body["form"] == {"a": ["1"], "b": ["2"]}
    assert body["header"] == "v"


async def test_non_ascii_path_and_query(serve):
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            response = await client.get("/echo/caf%C3%A9?q=%C3%A9t%C3%A9&q=%E2%82%AC")
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/café"
    assert response.json()["args"] == {"q": ["été", "€"]}


@pytest.mark.parametrize("path", ["/json", "/json-sync"])
async def test_json_body(serve, path):
    payload = {"name": "ünïcode", "items": [1, 2.5, None, True], "nested": {"a": []}}
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            response = await client.post(path, json=payload)
    assert response.status_code == 200
    assert response.json() == {"json": payload, "get_json": payload}


async def test_get_data_as_text_and_bytes(serve):
    raw = bytes(range(256))
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            text = await client.post(
                "/text",
                content="héllo wörld".encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            echoed = await client.post("/bytes", content=raw)
    assert text.json() == {"text": "héllo wörld"}
    assert echoed.content == raw


async def test_multipart_upload(serve):
    Echo.uploads.clear()
    content = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            response = await client.post(
                "/upload",
                data={"title": "a picture"},
                files={
                    "picture": ("photo.png", content, "image/png"),
                    "notes": ("notes.txt", b"some notes", "text/plain"),
                },
            )
    assert response.status_code == 200
    assert response.json() == {
        "form": {"title": "a picture"},
        "files": {
            "picture": {
                "filename": "photo.png",
                "content_type": "image/png",
                "content": base64.b64encode(content).decode(),
            },
            "notes": {
                "filename": "notes.txt",
                "content_type": "text/plain",
                "content": base64.b64encode(b"some notes").decode(),
            },
        },
    }
    # The request is closed once answered: no temporary file outlives it.
    assert len(Echo.uploads) == 2
    assert all(upload.stream.closed for upload in Echo.uploads)


@pytest.mark.parametrize("path", ["/get-json", "/json-property", "/json-sync"])
async def test_invalid_json_is_400(serve, path):
    bodies = [b"{not json", b"", b'{"a": 1', b"\xff\xfe"]
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            responses = {
                body: await client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
                for body in bodies
            }
            after = await client.post(path, json={"ok": True})
    assert {body: r.status_code for body, r in responses.items()} == dict.fromkeys(bodies, 400)
    for response in responses.values():
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "BadRequest"
        assert isinstance(response.json()["message"], str)
    assert after.status_code == 200


async def test_get_json_without_a_json_content_type_is_415(serve):
    # werkzeug's (and Flask's) answer: the client did not say it sent JSON
    with trio.fail_after(10):
        async with serve(Echo) as (_, client):
            response = await client.post(
                "/get-json", content=b'{"a": 1}', headers={"Content-Type": "text/plain"}
            )
    assert response.status_code == 415
    assert response.json()["error"] == "UnsupportedMediaType"


def limited_service():
    """A fresh service whose handler records every call it gets."""
    calls = []

    class Limited:
        name = "limited"

        @http("POST", "/upload")
        async def upload(self, request):
            data = request.get_data()
            calls.append(len(data))
            return {"received": len(data)}

    return Limited, calls


async def chunks(*sizes):
    for size in sizes:
        yield b"x" * size


@pytest.mark.parametrize(
    ("sizes", "chunked"),
    [
        ((LIMIT + 1,), False),
        ((LIMIT * 3,), False),
        ((40, 40, 40), True),
        ((LIMIT + 1,), True),
    ],
)
async def test_a_body_over_the_limit_is_413_before_the_handler_runs(serve, sizes, chunked):
    service, calls = limited_service()
    with trio.fail_after(10):
        async with serve(service, WEB_SERVER_MAX_BODY_SIZE=LIMIT) as (_, client):
            content = chunks(*sizes) if chunked else b"x" * sum(sizes)
            response = await client.post("/upload", content=content)
            after = await client.post("/upload", content=b"small")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "PayloadTooLarge"
    assert calls == [5]  # only the request after it
    assert after.json() == {"received": 5}


@pytest.mark.parametrize(("sizes", "chunked"), [((LIMIT,), False), ((50, 30, 20), True)])
async def test_a_body_at_the_limit_is_served(serve, sizes, chunked):
    service, calls = limited_service()
    with trio.fail_after(10):
        async with serve(service, WEB_SERVER_MAX_BODY_SIZE=LIMIT) as (_, client):
            content = chunks(*sizes) if chunked else b"x" * sum(sizes)
            response = await client.post("/upload", content=content)
    assert response.status_code == 200
    assert response.json() == {"received": LIMIT}
    assert calls == [LIMIT]


async def test_a_chunked_body_is_read_whole(serve):
    service, calls = limited_service()
    with trio.fail_after(10):
        async with serve(service) as (_, client):
            response = await client.post("/upload", content=chunks(1, 1000, 7, 70_000))
    assert response.json() == {"received": 71_008}
    assert calls == [71_008]


class ContextData(DependencyProvider):
    """Injects what the worker context holds: its data and call-id stack."""

    async def get_dependency(self, worker_ctx):
        return {"data": dict(worker_ctx.data), "call_id_stack": worker_ctx.call_id_stack}


class WithContext:
    name = "with_context"
    context = ContextData()

    @http("GET", "/context")
    async def context_data(self, request):
        return self.context

    @http("GET", "/context-sync")
    def context_data_sync(self, request):
        return self.context


@pytest.mark.parametrize("path", ["/context", "/context-sync"])
async def test_prefixed_headers_become_context_data(serve, path):
    with trio.fail_after(10):
        async with serve(WithContext) as (_, client):
            response = await client.get(
                path,
                headers={
                    "X-Triosvc-User-Id": "42",
                    "x-triosvc-locale": "fr_FR",
                    "X-Other": "not context",
                    "Authorization": "Bearer secret",
                },
            )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"user_id": "42", "locale": "fr_FR"}
    assert body["call_id_stack"][-1].startswith("with_context.")


async def test_no_prefixed_headers_no_context_data(serve):
    with trio.fail_after(10):
        async with serve(WithContext) as (_, client):
            response = await client.get("/context", headers={"X-Triosvc": "no suffix"})
    body = response.json()
    assert body["data"] == {}
    assert len(body["call_id_stack"]) == 1


async def test_call_id_stack_from_a_header(serve):
    with trio.fail_after(10):
        async with serve(WithContext) as (_, client):
            response = await client.get(
                "/context", headers={"X-Triosvc-Call-Id-Stack": "gateway.entry.1, auth.check.2"}
            )
    stack = response.json()["call_id_stack"]
    assert stack[:2] == ["gateway.entry.1", "auth.check.2"]
    assert len(stack) == 3
    assert stack[2].startswith("with_context.context_data.")


async def test_the_context_header_prefix_is_configurable(serve):
    with trio.fail_after(10):
        async with serve(WithContext, WEB_SERVER_CONTEXT_HEADER_PREFIX="X-Ctx-") as (_, client):
            response = await client.get(
                "/context", headers={"X-Ctx-Tenant": "acme", "X-Triosvc-User-Id": "1"}
            )
    assert response.json()["data"] == {"tenant": "acme"}

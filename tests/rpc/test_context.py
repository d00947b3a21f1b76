"""Worker context across RPC (SPEC §2): context data and the call-id stack travel along a
chain of three services, whatever kind of worker (async, blocking, HTTP) makes each call."""

from __future__ import annotations

import pytest

from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.rpc import RpcClient, RpcProxy, open_rpc_client, rpc
from triosvc.web.handlers import http


class Context(DependencyProvider):
    async def get_dependency(self, worker_ctx: WorkerContext) -> object:
        return worker_ctx


def report(ctx: WorkerContext) -> dict[str, object]:
    return {
        "call_id": ctx.call_id,
        "stack": ctx.call_id_stack,
        "data": {key: value for key, value in ctx.data.items() if key != "call_id_stack"},
    }


class Third:
    name = "third"
    ctx = Context()

    @rpc
    async def report(self):
        return report(self.ctx)

    @rpc
    def report_blocking(self):
        return report(self.ctx)


class Second:
    name = "second"
    ctx = Context()
    third = RpcProxy("third")

    @rpc
    async def relay(self, third_blocking):
        method = "report_blocking" if third_blocking else "report"
        return [report(self.ctx), await getattr(self.third, method)()]

    @rpc
    def relay_blocking(self, third_blocking):
        method = "report_blocking" if third_blocking else "report"
        return [report(self.ctx), getattr(self.third, method)()]


class First:
    name = "first"
    ctx = Context()
    second = RpcProxy("second")

    @rpc
    async def begin(self, second_blocking, third_blocking):
        method = "relay_blocking" if second_blocking else "relay"
        return [report(self.ctx), *await getattr(self.second, method)(third_blocking)]

    @rpc
    def begin_blocking(self, second_blocking, third_blocking):
        method = "relay_blocking" if second_blocking else "relay"
        return [report(self.ctx), *getattr(self.second, method)(third_blocking)]

    @http("GET", "/begin")
    async def begin_http(self, request):
        return [report(self.ctx), *await self.second.relay(False)]


def check_chain(reports: list[dict], parents: list[str], data: dict[str, object]) -> None:
    """Each service's stack is its caller's plus its own id; the data reaches every one."""
    first, second, third = reports
    assert [r["call_id"].split(".")[0] for r in reports] == ["first", "second", "third"]
    assert first["stack"] == [*parents, first["call_id"]]
    assert second["stack"] == [*parents, first["call_id"], second["call_id"]]
    assert third["stack"] == [*parents, first["call_id"], second["call_id"], third["call_id"]]
    assert [r["data"] for r in reports] == [data] * 3


@pytest.mark.parametrize("first_blocking", [False, True])
@pytest.mark.parametrize("second_blocking", [False, True])
@pytest.mark.parametrize("third_blocking", [False, True])
async def test_context_data_and_call_ids_travel_along_a_chain_of_services(
    runner_factory, rpc_config, first_blocking, second_blocking, third_blocking
):
    await runner_factory(rpc_config, First, Second, Third)
    context = {"user": "alice", "call_id_stack": ["outside.1"]}
    async with open_rpc_client(rpc_config, context_data=context) as client:
        method = "begin_blocking" if first_blocking else "begin"
        reports = await client.call("first", method, second_blocking, third_blocking)
    client_id = reports[0]["stack"][1]
    assert client_id.startswith("rpc_client.")
    check_chain(reports, ["outside.1", client_id], {"user": "alice"})


async def test_a_client_without_context_data_starts_the_stack_with_its_own_call_id(
    runner_factory, rpc_config, client: RpcClient
):
    await runner_factory(rpc_config, Third)
    first = await client.third.report()
    second = await client.third.report()
    assert [len(first["stack"]), len(second["stack"])] == [2, 2]
    assert first["stack"][0].startswith("rpc_client.")
    assert first["stack"][0] != second["stack"][0]  # one id per call
    assert first["data"] == {}


async def test_context_from_http_headers_travels_over_rpc(
    runner_factory, rpc_config, local_config, asgi_client
):
    runner = await runner_factory({**local_config, **rpc_config}, First, Second, Third)
    async with asgi_client(runner) as http_client:
        response = await http_client.get("/begin", headers={"X-Triosvc-User": "bob"})
    assert response.status_code == 200
    check_chain(response.json(), [], {"user": "bob"})

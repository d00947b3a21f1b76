"""What a runner's web server tells about itself: access log, health answers, metrics.

An :class:`Observability` layer sits in front of the services' ASGI app
(:class:`~triosvc.web.asgi.ServicesApp`) when any of its parts is on; with all of them off
the engine serves the app directly, and nothing here runs. Its parts:

- ``WEB_SERVER_ACCESS_LOG`` (on by default, as uvicorn's): one line through the
  ``triosvc.access`` logger at INFO per HTTP request and per WebSocket connection (when it
  ends), its fields in the record's ``extra`` for structured formatters. While that logger
  is not enabled for INFO, requests pass straight through: no timing, no formatting.
- ``WEB_SERVER_HEALTH_PATH``: liveness (``<path>/live``, 200 while the process serves) and
  readiness (``<path>/ready``: 200 once the server serves, 503 before and while draining),
  answered before anything else, the drain's 503 included.
- ``WEB_SERVER_METRICS``: Prometheus metrics at a path, through ``prometheus_client`` (the
  ``metrics`` extra), in a registry of this server's own (several runners may share a
  process); prometheus_client's default registry (the process's metrics, and the
  application's own) is exposed with it.

The route label of the request metrics is the werkzeug rule (``/users/<int:user_id>``),
never the raw path, so that their number stays bounded: requests no rule matches share
:data:`UNMATCHED`.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from itertools import accumulate
from time import perf_counter
from typing import TYPE_CHECKING

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from ..core.context import CALL_RECORD, CallRecord
from ..exceptions import ConfigurationError
from .asgi import route_path, send_response
from .responses import JSON, json_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from ..core.context import WorkerContext
    from .asgi import Message, Receive, Scope, Send
    from .server import WebServer

__all__ = ["ACCESS_LOGGER", "UNMATCHED", "Observability"]

#: The access log: one INFO line per HTTP request and per WebSocket connection.
ACCESS_LOGGER = logging.getLogger("triosvc.access")

#: The route label of requests that no rule matched (404s), whatever their path.
UNMATCHED = "<unmatched>"

#: Methods that keep their name as a label; any other is counted as "OTHER" (clients choose
#: methods freely, and every label value is a time series).
_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)

_INFO = logging.INFO
_CLOSE = ("Connection", "close")


class Observability:
    """The access log, health answers and metrics in front of one web server's app."""

    def __init__(self, server: WebServer) -> None:
        settings = server.settings
        self.server = server
        self.app = server.app
        self.access_log = settings.access_log
        #: Set by the server once it serves: readiness answers 200 from then on (until
        #: the drain).
        self.serving = False
        #: The paths answered here, each with the key that asks for it (for messages).
        self.paths: dict[str, str] = {}
        self._answers: dict[str, Callable[[], Response]] = {}
        health = settings.health_paths
        if health is not None:
            live, ready = health
            self._answers[live], self._answers[ready] = self._live, self._ready
            self.paths[live] = self.paths[ready] = "WEB_SERVER_HEALTH_PATH"
        self.metrics: Metrics | None = None
        if settings.metrics_path is not None:
            self.metrics = Metrics(server)
            self._answers[settings.metrics_path] = self._metrics
            self.paths[settings.metrics_path] = "WEB_SERVER_METRICS"

    @classmethod
    def of(cls, server: WebServer) -> Observability | None:
        """The layer for ``server``'s settings; None when every part is off."""
        settings = server.settings
        if settings.access_log or settings.health_path or settings.metrics_path:
            return cls(server)
        return None

    def routes(self) -> list[tuple[str, str, str]]:
        """(methods, path, what) rows for ``triosvc routes``."""
        return [("GET,HEAD", path, f"triosvc ({key})") for path, key in self.paths.items()]

    # -- definition checks ----------------------------------------------------------------

    def check_route(self, url: str, where: str) -> None:
        """ConfigurationError if a route's rule is a path answered here (never reached).

        A rule with variables that matches such a path (``/<name>``) is not refused: as
        werkzeug's static rules do, the path answered here wins for that path alone.
        """
        key = self.paths.get(url)
        if key is not None:
            raise ConfigurationError(
                f"{where}: {url} is answered by triosvc itself ({key}), so the route could "
                f"never be reached; move the route or give {key} another path"
            )

    def check_mount(self, prefix: str, where: str) -> None:
        """ConfigurationError if a path answered here lies under a mounted app's prefix."""
        for path, key in self.paths.items():
            if path == prefix or path.startswith(prefix + "/"):
                raise ConfigurationError(
                    f"{where}: {path} lies under the mount at {prefix}, and triosvc answers "
                    f"it itself ({key}); change the mount's prefix or {key}"
                )

    # -- serving ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._answers:
                answer = self._answers.get(route_path(scope))
                if answer is not None:
                    await self._answer(answer, scope, send)
                    return
            # Inline, not _logging(): this is every request's path, even with the log off.
            if self.metrics is not None or (self.access_log and ACCESS_LOGGER.isEnabledFor(_INFO)):
                await self._observe_http(scope, receive, send)
                return
        elif kind == "websocket" and self._logging():
            await self._observe_websocket(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _logging(self) -> bool:
        # Asked per request: logging may be configured after the server started.
        return self.access_log and ACCESS_LOGGER.isEnabledFor(_INFO)

    async def _observe_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        status: int | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]  # type: ignore[assignment]
            await send(message)

        record = CallRecord()
        token = CALL_RECORD.set(record)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            CALL_RECORD.reset(token)
            self._done(scope, status, perf_counter() - start, record.worker)

    async def _answer(self, answer: Callable[[], Response], scope: Scope, send: Send) -> None:
        """Answer a health or metrics request, ahead of routing and of the drain's 503."""
        start = perf_counter()
        method = str(scope["method"])
        if method in ("GET", "HEAD"):
            response = answer()
        else:
            response = json_error(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed on {route_path(scope)}; allowed: GET, HEAD",
                [("Allow", "GET, HEAD")],
            )
        response.headers["Cache-Control"] = "no-store"
        if self.app.draining:  # as the drain's other answers: the client should move on
            response.headers.add(*_CLOSE)
        app = self.app
        app.in_flight.up()  # the drain waits for this answer too
        try:
            await send_response(send, response, method)
        finally:
            app.in_flight.down()
        self._done(scope, response.status_code, perf_counter() - start, None)

    def _live(self) -> Response:
        return _status_response(200, "alive")

    def _ready(self) -> Response:
        if self.app.draining:
            return _status_response(503, "draining")
        if not self.serving:
            return _status_response(503, "starting")
        return _status_response(200, "ready")

    def _metrics(self) -> Response:
        assert self.metrics is not None
        body, content_type = self.metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    def _done(
        self, scope: Scope, status: int | None, seconds: float, worker: WorkerContext | None
    ) -> None:
        """Count the request and log its line (when the log is on)."""
        method = str(scope["method"])
        if self.metrics is not None:
            self.metrics.count(method, self._route(scope, method, worker), status, seconds)
        if not self._logging():
            return
        path = str(scope["path"])
        query = _latin1(scope.get("query_string"))
        call_id = worker.call_id if worker is not None else None
        ACCESS_LOGGER.info(
            "%s %s %s %.1fms%s",
            method,
            f"{path}?{query}" if query else path,
            "-" if status is None else status,
            seconds * 1000,
            "" if call_id is None else f" call_id={call_id}",
            extra={
                "protocol": "http",
                "method": method,
                "path": path,
                "query": query,
                "status": status,
                "duration_ms": seconds * 1000,
                "call_id": call_id,
                "client": _client(scope),
            },
        )

    def _route(self, scope: Scope, method: str, worker: WorkerContext | None) -> str:
        """The rule that served the request: its handler's, else found again."""
        if worker is not None:
            url = getattr(worker.entrypoint, "url", None)
            if isinstance(url, str):
                return url
        # No handler ran (an error, a refusal, a preflight, a mounted app): rare enough
        # to match the path again.
        path = route_path(scope)
        if path in self.paths:
            return path
        mounts = self.app.mounts
        if mounts is not None:
            mounted = mounts.find(path)
            if mounted is not None:
                return f"{mounted.under}*"
        router = self.server.router
        try:
            return router.match(path, method)[0].url
        except NotFound:
            return UNMATCHED
        except MethodNotAllowed:
            allowed = next(iter(router.adapter.allowed_methods(path)), None)
            return UNMATCHED if allowed is None else router.match(path, allowed)[0].url
        except RequestRedirect:  # a missing trailing slash: the rule has one
            try:
                return router.match(path + "/", method)[0].url
            except Exception:
                return UNMATCHED

    async def _observe_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        status: int | None = None
        close_code: object = None

        async def observed_send(message: Message) -> None:
            nonlocal status, close_code
            kind = message["type"]
            if status is None:
                if kind == "websocket.accept":
                    status = 101
                elif kind == "websocket.http.response.start":
                    status = message["status"]  # type: ignore[assignment]
                elif kind == "websocket.close":
                    status = 403  # a close before the handshake's answer refuses it (ASGI)
            elif kind == "websocket.close" and close_code is None:
                close_code = message.get("code", 1000)
            await send(message)

        async def observed_receive() -> Message:
            nonlocal close_code
            message = await receive()
            if message["type"] == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
            return message

        try:
            await self.app(scope, observed_receive, observed_send)
        finally:
            if self._logging():
                seconds = perf_counter() - start
                path = str(scope["path"])
                query = _latin1(scope.get("query_string"))
                ACCESS_LOGGER.info(
                    "WebSocket %s %s %.1fms%s",
                    f"{path}?{query}" if query else path,
                    "-" if status is None else status,
                    seconds * 1000,
                    "" if close_code is None or status != 101 else f" close={close_code}",
                    extra={
                        "protocol": "websocket",
                        "method": "GET",
                        "path": path,
                        "query": query,
                        "status": status,
                        "duration_ms": seconds * 1000,
                        "call_id": None,
                        "client": _client(scope),
                        "close_code": close_code if status == 101 else None,
                    },
                )


def _status_response(status: int, text: str) -> Response:
    return Response(json.dumps({"status": text}), status=status, content_type=JSON)


def _latin1(raw: object) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes) else ""


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[:2]  # type: ignore[index]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


#: The latency histogram's buckets, in seconds: prometheus_client's default ones.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Latency:
    """One histogram series: counts per bucket (the last one past every bound), and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class Metrics:
    """This server's Prometheus metrics: a registry of its own, and what fills it.

    Requests are counted in plain dicts and lists, read when Prometheus scrapes:
    prometheus_client's own counters and histograms take a lock per update (they may be
    shared between threads), which costs more than the rest of the counting together. Every
    update here happens in trio's thread.
    """

    def __init__(self, server: WebServer) -> None:
        from prometheus_client import CollectorRegistry

        #: The server's own registry: a runner's metrics never mix with another's.
        self.registry: CollectorRegistry = CollectorRegistry()
        self.requests: dict[tuple[str, str, int | None], int] = {}
        self.latency: dict[tuple[str, str], _Latency] = {}
        self.registry.register(_ServerCollector(server, self))

    def count(self, method: str, route: str, status: int | None, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"
        key = (method, route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        latency = self.latency.get((method, route))
        if latency is None:
            latency = self.latency[method, route] = _Latency()
        latency.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.total += seconds

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of this server's metrics and of the default registry."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return generate_latest(_Both(self.registry, REGISTRY)), CONTENT_TYPE_LATEST


class _Both:
    """Two registries as one, for one exposition (their metric names do not overlap)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


class _ServerCollector:
    """Gauges and counters read from the server's parts when Prometheus scrapes."""

    def __init__(self, server: WebServer, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        from ..ws.endpoint import WebSocketEndpoint

        server = self.server
        requests = CounterMetricFamily(
            "triosvc_http_requests",
            "HTTP requests answered, by method, route rule and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in list(self.metrics.requests.items()):
            label = "none" if status is None else str(status)  # the client left first
            requests.add_metric([method, route, label], count)
        yield requests
        latency = HistogramMetricFamily(
            "triosvc_http_request_duration_seconds",
            "Seconds from a request's arrival at the app to the end of its answer",
            labels=["method", "route"],
        )
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        for (method, route), series in list(self.metrics.latency.items()):
            cumulative = list(accumulate(series.counts))
            latency.add_metric(
                [method, route], list(zip(bounds, cumulative, strict=True)), series.total
            )
        yield latency
        busy = GaugeMetricFamily(
            "triosvc_workers_busy",
            "Worker slots taken, by service (abandoned blocking threads included)",
            labels=["service"],
        )
        limit = GaugeMetricFamily(
            "triosvc_workers_max",
            "Worker slots, by service (WEB_SERVER_MAX_WORKERS)",
            labels=["service"],
        )
        waiting = GaugeMetricFamily(
            "triosvc_calls_waiting",
            "Calls waiting for a worker slot, by service",
            labels=["service"],
        )
        for name, container in sorted(server.containers.items()):
            stats = container.statistics()
            busy.add_metric([name], stats.busy_workers)
            limit.add_metric([name], stats.max_workers)
            waiting.add_metric([name], stats.waiting_calls)
        yield from (busy, limit, waiting)
        yield GaugeMetricFamily(
            "triosvc_http_requests_in_flight",
            "HTTP requests being answered",
            value=server.app.in_flight.value,
        )
        endpoint = server.companions.get(WebSocketEndpoint)
        if isinstance(endpoint, WebSocketEndpoint):
            yield GaugeMetricFamily(
                "triosvc_websocket_connections",
                "Open WebSocket connections at WEBSOCKET_PATH",
                value=endpoint.connections.value,
            )
            hub = endpoint.hub
            yield CounterMetricFamily(
                "triosvc_hub_messages_sent",
                "Messages the hub queued for delivery to a socket (events and call replies)",
                value=hub.messages_sent,
            )
            yield CounterMetricFamily(
                "triosvc_hub_slow_consumers",
                "Sockets the hub dropped as slow consumers (their queued messages with them)",
                value=hub.statistics().slow_consumers,
            )

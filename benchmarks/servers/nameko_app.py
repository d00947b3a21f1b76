"""The three endpoints as a nameko service (nameko's eventlet web server).

Run by the benchmark runner as ``<nameko's python> benchmarks/servers/nameko_app.py``;
prints ``PORT <n>`` once it accepts connections, then serves until killed. nameko needs
eventlet, and its pytest plugin monkey-patches every test run of the interpreter it is
installed in: it runs from a virtual environment of its own (see benchmarks/README.md),
which has neither trio nor hypercorn; ``_common`` imports neither at the top.
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import signal  # noqa: E402

from _common import HELLO, POST_PATH, announce, received, user  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from nameko.web.handlers import http  # noqa: E402
from nameko.web.server import WebServer  # noqa: E402

_JSON = {"Content-Type": "application/json"}


class HelloService:
    name = "hello"

    @http("GET", "/hello")
    def hello(self, request: object) -> str:
        return HELLO

    @http("GET", "/users/<int:user_id>")
    def get_user(self, request: object, user_id: int) -> tuple[int, dict[str, str], str]:
        return 200, _JSON, json.dumps(user(user_id))

    @http("POST", POST_PATH)
    def echo(self, request) -> tuple[int, dict[str, str], str]:  # a werkzeug Request
        return 200, _JSON, json.dumps(received(len(request.get_data())))


def run(service: type, config: dict[str, object] | None = None) -> None:
    """Start ``service`` on a free port of 127.0.0.1, say where, and serve until killed."""
    runner = ServiceRunner({"WEB_SERVER_ADDRESS": "127.0.0.1:0", **(config or {})})
    runner.add_service(service)
    runner.start()
    (container,) = runner.containers
    (server,) = {e for e in container.subextensions if isinstance(e, WebServer)}
    announce(server._sock.getsockname()[1])
    stopped = eventlet.event.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.send())
    stopped.wait()
    runner.kill()


if __name__ == "__main__":
    run(HelloService)

"""The ``triosvc`` command, as a user sees it: exit statuses, stderr, routes, signals.

Most tests call ``main([...])`` in-process with the current directory set to
``tests/cli_services`` (the CLI makes it importable, as it does for users). The
``slow`` ones run ``python -m triosvc`` in a real process, read its log lines from
stderr to learn where it listens and when a request is in flight, and send it signals.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from triosvc import __version__
from triosvc.cli import main

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

SERVICES_DIR = Path(__file__).parent / "cli_services"
#: Upper bound for a whole subprocess test.
PROCESS_TIMEOUT = 20
SERVING_LINE = re.compile(r"serving (?P<names>.+) on (?P<url>http://\S+)")


# --- in-process -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def in_services_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run from tests/cli_services; undo what main() does to sys.path, sys.modules, logging."""
    monkeypatch.chdir(SERVICES_DIR)
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = logging.getLogger()
    quiet = logging.getLogger("triosvc.engine.hypercorn")
    saved = (list(root.handlers), root.level, quiet.level)
    yield
    for name in [name for name in sys.modules if name.startswith("cli_")]:
        del sys.modules[name]
    root.handlers[:], root.level = saved[0], saved[1]
    quiet.setLevel(saved[2])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(argv): the exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> str:
    """stderr is exactly one ``triosvc: error: ...`` line holding every fragment."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("triosvc: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_bad_config_value_in_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "WEB_SERVER_TIMEOUT: -5\n")
    status, out, err = run_cli(capsys, "run", "--config", config, "cli_greeter")
    assert status == 2
    assert out == ""
    # The wording is config's; the CLI's part is one line naming key, value and expectation.
    assert_one_error_line(err, "WEB_SERVER_TIMEOUT", "-5", "expected")


def test_unknown_triosvc_key_in_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "WEB_SERVER_TIMOUT: 5\n")
    status, _, err = run_cli(capsys, "run", "--config", config, "cli_greeter")
    assert status == 2
    assert_one_error_line(err, "WEB_SERVER_TIMOUT", "did you mean WEB_SERVER_TIMEOUT?")


def test_config_file_not_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "WEB_SERVER_ADDRESS: [127.0.0.1:8000\nRPC_TIMEOUT: 3\n")
    status, _, err = run_cli(capsys, "run", "--config", config, "cli_greeter")
    assert status == 2
    assert_one_error_line(err, config, "not valid YAML at line")


def test_config_file_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    status, _, err = run_cli(capsys, "routes", "--config", missing, "cli_greeter")
    assert status == 2
    assert_one_error_line(err, missing, "not found")


def test_define_overrides_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "WEB_SERVER_TIMEOUT: -5\nWEB_SERVER_MAX_WORKERS: 4\n")
    # The file's bad value never reaches validation: the --define replaces it.
    status, out, err = run_cli(
        capsys, "routes", "--config", config, "--define", "WEB_SERVER_TIMEOUT=5", "cli_greeter"
    )
    assert (status, err) == (0, "")
    assert "greeter.hello" in out
    # And a bad --define is reported with its own value, over a good file value.
    status, _, err = run_cli(
        capsys, "routes", "--config", config, "--define", "WEB_SERVER_TIMEOUT=5",
        "--define", "WEB_SERVER_MAX_WORKERS=many", "cli_greeter",
    )  # fmt: skip
    assert status == 2
    assert_one_error_line(err, "WEB_SERVER_MAX_WORKERS='many'", "expected an integer >= 1")


def test_define_without_equals(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "--define", "WEB_SERVER_TIMEOUT", "cli_greeter")
    assert status == 2
    assert_one_error_line(err, "--define expects KEY=VALUE", "'WEB_SERVER_TIMEOUT'")


def test_unknown_module(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "run", "cli_no_such_module")
    assert (status, out) == (2, "")
    assert_one_error_line(
        err,
        "cannot import module 'cli_no_such_module'",
        "no module named 'cli_no_such_module'",
        str(SERVICES_DIR),
    )


def test_module_given_as_a_file_name(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "routes", "cli_greeter.py")
    assert status == 2
    assert_one_error_line(err, "'cli_greeter.py'", "name a module, not a file: 'cli_greeter'")


def test_module_whose_import_fails_names_the_missing_dependency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run_cli(capsys, "run", "cli_broken")
    assert status == 2
    assert_one_error_line(
        err, "cannot import module 'cli_broken'", "triosvc_cli_no_such_dependency"
    )


def test_not_a_module_name(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "routes", "services/cli_greeter")
    assert status == 2
    assert_one_error_line(err, "'services/cli_greeter' is not a MODULE[:CLASS]")


def test_missing_class(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "cli_pair:NoSuchService")
    assert status == 2
    line = assert_one_error_line(err, "module 'cli_pair' has no 'NoSuchService'")
    assert line.endswith("(service classes it defines: UsersService, ClockService)")


def test_class_that_is_not_a_service(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "cli_greeter:NotAService")
    assert status == 2
    assert_one_error_line(err, "NotAService.name must be a non-empty string")


def test_decorator_used_wrongly(capsys: pytest.CaptureFixture[str]) -> None:
    # The error is raised while the module is imported, by @http itself.
    status, _, err = run_cli(capsys, "routes", "cli_bad_method")
    assert status == 2
    assert_one_error_line(err, "BadMethodService.fetch", "unknown HTTP method 'FETCH'")


def test_module_without_services(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "cli_empty")
    assert status == 2
    assert_one_error_line(err, "module 'cli_empty' defines no service class")


def test_two_services_with_one_name(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "cli_dupe")
    assert status == 2
    assert_one_error_line(
        err, "SecondService.name: 'dupe' is already the name of FirstService in this runner"
    )


def test_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run_cli(
            capsys, "run", "--define", f"WEB_SERVER_ADDRESS=127.0.0.1:{port}", "cli_greeter"
        )
    assert (status, out) == (2, "")
    assert_one_error_line(err, f"WEB_SERVER_ADDRESS=127.0.0.1:{port}", "address already in use")


def test_routes_of_every_service_defined_in_a_module(capsys: pytest.CaptureFixture[str]) -> None:
    # cli_pair imports GreeterService too: only the classes it defines are taken.
    status, out, err = run_cli(capsys, "routes", "cli_pair")
    assert (status, err) == (0, "")
    assert out == (
        "GET     /users/<int:user_id>  users.get_user\n"
        "DELETE  /users/<int:user_id>  users.delete_user\n"
        "GET     /time                 clock.now\n"
    )


def test_routes_of_named_classes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(
        capsys, "routes", "cli_pair:ClockService", "cli_greeter", "cli_greeter:GreeterService"
    )
    assert (status, err) == (0, "")
    assert out == (
        "GET       /time          clock.now\n"
        "GET       /hello/<name>  greeter.hello\n"
        "GET,POST  /items         greeter.items\n"
        "GET       /pid           greeter.pid\n"
        "GET       /slow          greeter.slow\n"
        "GET       /stuck         greeter.stuck\n"
    )


def test_routes_list_websocket_then_rpc_methods_after_http_routes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run_cli(capsys, "routes", "--define", "WEBSOCKET_PATH=/socket", "cli_chat")
    assert (status, err) == (0, "")
    assert out == (
        "GET  /rooms          rooms.list_rooms\n"
        "WS   /socket join    rooms.join\n"
        "WS   /socket leave   rooms.leave\n"
        "RPC  ledger.balance  ledger.balance\n"
        "RPC  ledger.credit   ledger.credit\n"
    )


def test_routes_reports_definition_errors(capsys: pytest.CaptureFixture[str]) -> None:
    # One class named twice (cli_pair imports GreeterService) is one service.
    status, out, err = run_cli(capsys, "routes", "cli_greeter", "cli_pair:GreeterService")
    assert (status, err) == (0, "")
    assert out.count("greeter.hello") == 1
    status, out, err = run_cli(capsys, "routes", "cli_dupe")
    assert (status, out) == (2, "")
    assert_one_error_line(err, "'dupe' is already the name of FirstService")


def test_workers_need_a_redis_broker(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "run", "--workers", "3", "cli_greeter")
    assert status == 2
    assert_one_error_line(err, "--workers 3 needs a redis:// BROKER_URL", "'memory://'")


@pytest.mark.parametrize("workers", ["0", "two"])
def test_workers_must_be_a_positive_number(
    capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    status, _, err = run_cli(capsys, "run", "--workers", workers, "cli_greeter")
    assert status == 2
    assert "triosvc run: error: argument --workers: expected a number of processes" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys)
    assert status == 2
    assert "usage: triosvc" in err
    status, _, err = run_cli(capsys, "run")
    assert status == 2
    assert "the following arguments are required: MODULE[:CLASS]" in err
    status, out, _ = run_cli(capsys, "--version")
    assert (status, out) == (0, f"triosvc {__version__}\n")


# --- real processes -------------------------------------------------------------------------------

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Child:
    """A child process (``python -m triosvc``, or another) whose stderr lines the test
    waits for."""

    def __init__(self, process: trio.Process, lines: trio.MemoryReceiveChannel[str]) -> None:
        self.process = process
        self._lines = lines
        self.stderr: list[str] = []

    async def wait_for(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """The next stderr line matching ``pattern`` (a regex), skipping those before it."""
        async for line in self._lines:
            self.stderr.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"stderr ended before {pattern!r}:\n" + "\n".join(self.stderr))

    async def wait_serving(self) -> str:
        """The URL from the runner's ``serving ... on URL`` line."""
        return (await self.wait_for(SERVING_LINE))["url"]

    async def exit_status(self) -> int:
        status = await self.process.wait()
        async for line in self._lines:  # the rest of stderr, for assertions
            self.stderr.append(line)
        return status

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


async def _read_lines(stream: trio.abc.ReceiveStream, lines: trio.MemorySendChannel[str]) -> None:
    async with lines:
        pending = b""
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                await lines.send(line.decode(errors="replace"))
        if pending:
            await lines.send(pending.decode(errors="replace"))


@asynccontextmanager
async def triosvc_process(*argv: str) -> AsyncIterator[Child]:
    """``python -m triosvc ARGV`` in tests/cli_services; killed at the end if still running."""
    async with child_process([sys.executable, "-m", "triosvc", *argv], SERVICES_DIR) as child:
        yield child


@asynccontextmanager
async def child_process(argv: list[str], cwd: Path) -> AsyncIterator[Child]:
    """``argv`` run in ``cwd``, its stderr read line by line; killed at the end if still
    running."""
    process = await trio.lowlevel.open_process(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    # Unbounded: a test that stops reading must not block the reader (and so the child).
    send, receive = trio.open_memory_channel[str](math.inf)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_lines, process.stderr, send)
            try:
                yield Child(process, receive)
            finally:
                if process.poll() is None:  # the test failed before the process ended
                    process.kill()
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.kill()
            await process.wait()
            await process.stderr.aclose()


async def wait_until_refused(url: str) -> None:
    """Return once connecting to ``url``'s port is refused (the listener is closed).

    The runner closes its listener a few scheduler steps after it logs that it stops;
    this polls for that, under the test's fail_after.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    while True:
        try:
            stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        except OSError:
            return
        await stream.aclose()
        await trio.sleep(0.01)


async def sigterm_during_a_slow_request(
    child: Child, client: httpx.AsyncClient, nursery: trio.Nursery, url: str, release: Path
) -> list[httpx.Response]:
    """Start a ``GET /slow`` (answered once ``release`` exists), wait until the service has
    it, then SIGTERM the process; the list its response lands in (empty until then)."""
    responses: list[httpx.Response] = []

    async def slow_request() -> None:
        responses.append(await client.get(f"{url}/slow", params={"until": str(release)}))

    nursery.start_soon(slow_request)
    await child.wait_for("slow request started")
    child.signal(signal.SIGTERM)
    return responses


@pytest.mark.slow
@posix_only
async def test_sigterm_lets_the_in_flight_request_finish(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with trio.fail_after(PROCESS_TIMEOUT):
        async with (
            triosvc_process(
                "run", "--define", "WEB_SERVER_ADDRESS=127.0.0.1:0", "cli_greeter"
            ) as child,
            httpx.AsyncClient() as client,
            trio.open_nursery() as nursery,
        ):
            match = await child.wait_for(SERVING_LINE)
            assert match["names"] == "greeter"
            url = match["url"]
            response = await client.get(f"{url}/hello/world")
            assert (response.status_code, response.text) == (200, "hello world")
            slow_responses = await sigterm_during_a_slow_request(
                child, client, nursery, url, release
            )
            await child.wait_for(
                "SIGTERM received: stopping gracefully; a second Ctrl[+]C stops at once"
            )
            await wait_until_refused(url)
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as new_client:
                    await new_client.get(f"{url}/hello/late")
            assert slow_responses == []  # still in flight
            release.touch()
            assert await child.exit_status() == 0
        [slow_response] = slow_responses
        assert (slow_response.status_code, slow_response.text) == (200, "slow done")
        assert "Traceback" not in "\n".join(child.stderr)
        assert re.search(r"triosvc\.runner: stopped$", child.stderr[-1])


@pytest.mark.slow
@posix_only
async def test_second_sigint_stops_at_once() -> None:
    with trio.fail_after(PROCESS_TIMEOUT):
        async with (
            triosvc_process(
                "run",
                "--define",
                "WEB_SERVER_ADDRESS=127.0.0.1:0",
                "--define",
                "SHUTDOWN_GRACE_PERIOD=60",
                "cli_greeter:GreeterService",
            ) as child,
            httpx.AsyncClient() as client,
            trio.open_nursery() as nursery,
        ):
            url = await child.wait_serving()
            failures: list[Exception] = []

            async def stuck_request() -> None:
                try:
                    await client.get(f"{url}/stuck", timeout=PROCESS_TIMEOUT)
                except httpx.TransportError as exc:  # the process went away mid-request
                    failures.append(exc)

            nursery.start_soon(stuck_request)
            await child.wait_for("stuck request started")
            child.signal(signal.SIGINT)
            await child.wait_for("SIGINT received: stopping gracefully")
            # The handler sleeps 60 s and the grace period is 60 s: only the kill ends it.
            started = trio.current_time()
            child.signal(signal.SIGINT)
            assert await child.exit_status() == 130
            assert trio.current_time() - started < 5
        assert len(failures) == 1
        assert any(
            "SIGINT received while stopping: stopping at once" in line for line in child.stderr
        )
        assert "Traceback" not in "\n".join(child.stderr)


@pytest.mark.slow
@posix_only
async def test_logging_config_is_applied(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
        WEB_SERVER_ADDRESS: 127.0.0.1:0
        LOGGING:
          version: 1
          formatters: {plain: {format: "CUSTOM %(levelname)s %(message)s"}}
          handlers:
            err: {class: logging.StreamHandler, formatter: plain, stream: "ext://sys.stderr"}
          root: {level: INFO, handlers: [err]}
        """.replace("\n        ", "\n"),
    )
    with trio.fail_after(PROCESS_TIMEOUT):
        async with triosvc_process("run", "--config", config, "cli_greeter") as child:
            await child.wait_for(r"^CUSTOM INFO serving greeter on http://127\.0\.0\.1:\d+$")
            child.signal(signal.SIGTERM)
            assert await child.exit_status() == 0
        assert child.stderr[-1] == "CUSTOM INFO stopped"
        # Loggers that existed before LOGGING was applied keep working; hypercorn's own
        # "Running on" line stays quiet.
        assert not any("Running on" in line for line in child.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "WEB_SERVER_ADDRESS: localhost:99999\n",
            "triosvc: error: WEB_SERVER_ADDRESS='localhost:99999': expected a port from 0 to"
            " 65535 (0 picks a free port)",
        ),
        (
            "LOGGING: {version: 1, handlers: {h: {class: no.such.Handler}}}\n",
            "triosvc: error: LOGGING: not a valid logging.config.dictConfig mapping:"
            " Unable to configure handler 'h'",
        ),
    ],
    ids=["address", "logging"],
)
async def test_bad_config_in_a_real_process(tmp_path: Path, config: str, expected: str) -> None:
    path = write_config(tmp_path, config)
    with trio.fail_after(PROCESS_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "triosvc", "run", "--config", path, "cli_greeter"],
            cwd=SERVICES_DIR,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(expected), line


@pytest.mark.slow
def test_python_dash_m_and_console_script_agree() -> None:
    # `python -m triosvc` names itself triosvc, as the installed console script does.
    result = subprocess.run(
        [sys.executable, "-m", "triosvc", "--help"],
        cwd=SERVICES_DIR,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: triosvc ")
    assert "{run,routes}" in result.stdout or "COMMAND" in result.stdout


#: A Redis URL nothing listens on: HTTP-only services never connect to the broker.
UNUSED_REDIS = "BROKER_URL=redis://127.0.0.1:1/0"
WORKER_STARTED = re.compile(r"worker (?P<number>\d) started \(pid (?P<pid>\d+)\)")


@pytest.mark.slow
@posix_only
async def test_workers_share_the_port_and_a_dead_one_is_replaced() -> None:
    with trio.fail_after(PROCESS_TIMEOUT * 2):
        async with triosvc_process(
            "run", "--workers", "2", "--define", "WEB_SERVER_ADDRESS=127.0.0.1:0",
            "--define", UNUSED_REDIS, "cli_greeter",
        ) as child:  # fmt: skip
            url = (await child.wait_for(r"2 workers serving on (?P<url>http://\S+)"))["url"]
            workers = {}
            for _ in range(2):
                started = await child.wait_for(WORKER_STARTED)
                workers[started["number"]] = int(started["pid"])
            for _ in range(2):
                assert (await child.wait_serving()) == url  # both serve the parent's socket
            # New connections reach both processes (the kernel picks the acceptor).
            answered_by: set[int] = set()
            while answered_by != set(workers.values()):
                async with httpx.AsyncClient() as client:  # a new connection each time
                    answered_by.add(int((await client.get(f"{url}/pid")).text))

            os.kill(workers["1"], signal.SIGKILL)
            await child.wait_for(rf"worker 1 \(pid {workers['1']}\) exited with status -9")
            replacement = await child.wait_for(WORKER_STARTED)
            assert replacement["number"] == "1"
            assert int(replacement["pid"]) not in workers.values()
            await child.wait_serving()
            async with httpx.AsyncClient() as client:
                for _ in range(20):
                    assert (await client.get(f"{url}/hello/again")).text == "hello again"

            child.signal(signal.SIGTERM)
            await child.wait_for("SIGTERM received: stopping the workers gracefully")
            assert await child.exit_status() == 0
        log = "\n".join(child.stderr)
        assert log.count("triosvc.runner: stopped") == 2
        assert "Traceback" not in log
        assert re.search(r"every worker stopped$", child.stderr[-1])


@pytest.mark.slow
@posix_only
async def test_workers_finish_in_flight_requests_on_sigterm(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with trio.fail_after(PROCESS_TIMEOUT * 2):
        async with (
            triosvc_process(
                "run", "--workers", "2", "--define", "WEB_SERVER_ADDRESS=127.0.0.1:0",
                "--define", UNUSED_REDIS, "cli_greeter",
            ) as child,
            httpx.AsyncClient() as client,
            trio.open_nursery() as nursery,
        ):  # fmt: skip
            url = (await child.wait_for(r"2 workers serving on (?P<url>http://\S+)"))["url"]
            for _ in range(2):
                await child.wait_serving()
            slow_responses = await sigterm_during_a_slow_request(
                child, client, nursery, url, release
            )
            await child.wait_for("triosvc.runner: stopped")  # the idle worker
            await wait_until_refused(url)  # one worker left, its listener closed
            assert slow_responses == []
            release.touch()
            assert await child.exit_status() == 0
        [slow_response] = slow_responses
        assert (slow_response.status_code, slow_response.text) == (200, "slow done")

"""The ``triosvc`` command (SPEC §8): run services, or list their routes.

::

    triosvc run [--config FILE] [--define KEY=VALUE]... [--workers N] MODULE[:CLASS]...
    triosvc routes [--config FILE] [--define KEY=VALUE]... MODULE[:CLASS]...

The current directory is importable. ``MODULE:CLASS`` names one service class; a bare
``MODULE`` takes every service class defined in that module (not those it imports).

Configuration: the YAML file first, then each ``--define`` over it, then validation.
Everything a user can fix (a bad config value, a service definition error, a module
that does not import, a port already in use) is reported before anything listens as
one line on stderr, ``triosvc: error: <message>``, with exit status 2 and no traceback.

``run`` stops gracefully on the first SIGINT or SIGTERM (exit status 0) and at once on
a second SIGINT (exit status 130).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import logging.config
import os
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from . import __version__
from .config import Config, load_config_file, parse_define
from .core.extensions import entrypoints_of
from .core.groups import sole_exception
from .exceptions import ConfigurationError
from .rpc._server import RpcServer
from .runners import ServiceRunner
from .supervisor import EXIT_KILLED, supervise
from .web.server import WebServer, bind_socket, url_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from types import ModuleType

__all__ = ["main"]

LOGGER = logging.getLogger("triosvc.cli")

PROG: Final = "triosvc"
#: Exit status of a usage or configuration error (argparse's own, too).
EXIT_ERROR: Final = 2

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: hypercorn logs a "Running on" line of its own at INFO; the runner's line says it all.
QUIET_LOGGERS: Final = ("triosvc.engine.hypercorn",)

_SPEC_HELP: Final = (
    "a module (every service class defined in it) or MODULE:CLASS (one service); "
    "the current directory is importable"
)


class CliError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    """Run the ``triosvc`` command with ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status: 0 after a clean stop, 2 for a usage or configuration
    error (one line on stderr), 130 after a second SIGINT.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    try:
        if args.command == "run":
            return _run(
                _RunOptions(
                    specs=args.services,
                    config_file=args.config,
                    defines=args.define,
                    workers=args.workers,
                )
            )
        return _routes(_Options(specs=args.services, config_file=args.config, defines=args.define))
    except (ConfigurationError, CliError) as exc:
        _print_error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl+C before the services began to serve
        return EXIT_KILLED


# --- the command line --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    specs: list[str]
    config_file: str | None = None
    defines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _RunOptions(_Options):
    workers: int = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run triosvc services, or list their routes."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="serve services until SIGINT or SIGTERM",
        description="Serve services until SIGINT or SIGTERM (graceful); a second SIGINT "
        "stops at once.",
    )
    _add_common_arguments(run)
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="processes sharing the listening port (N > 1 needs a redis:// BROKER_URL)",
    )

    routes = commands.add_parser(
        "routes",
        help="print the HTTP routes of services",
        description="Print the HTTP routes of services: methods, rule, service.method.",
    )
    _add_common_arguments(routes)
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="a YAML config file")
    parser.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config key (the value is YAML); overrides the file; repeatable",
    )
    parser.add_argument("services", nargs="+", metavar="MODULE[:CLASS]", help=_SPEC_HELP)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {value}")
    return value


def _print_error(message: str) -> None:
    # One line, whatever the message holds: users' scripts and log collectors read it.
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)


# --- config and services -----------------------------------------------------------------------


def _load_config(options: _Options) -> Config:
    """The config file, then each ``--define`` over it, validated."""
    mapping: dict[str, object] = {}
    if options.config_file is not None:
        mapping.update(load_config_file(options.config_file))
    for define in options.defines:
        key, value = parse_define(define)
        mapping[key] = value
    return Config(mapping)


def _build_runner(config: Config, specs: Sequence[str]) -> ServiceRunner:
    """A runner with every named service added: definition errors are raised here."""
    _make_cwd_importable()
    runner = ServiceRunner(config)
    classes: list[type] = []
    for spec in specs:
        for service_cls in _resolve(spec):
            if service_cls not in classes:  # `mod mod:Service` names one class twice
                classes.append(service_cls)
    for service_cls in classes:
        runner.add_service(service_cls)
    return runner


def _make_cwd_importable() -> None:
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in (cwd, ""):
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()


def _resolve(spec: str) -> list[type]:
    """The service classes ``MODULE[:CLASS]`` names."""
    module_name, colon, class_path = spec.partition(":")
    if not all(part.isidentifier() for part in module_name.split(".")) or (
        colon and not all(part.isidentifier() for part in class_path.split("."))
    ):
        hint = ""
        if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
            hint = " (name a module, not a file: 'services' for services.py)"
        raise CliError(
            f"{spec!r} is not a MODULE[:CLASS] such as 'services' or "
            f"'app.services:UsersService'{hint}"
        )
    module = _import(module_name)
    if colon:
        found: object = module
        for part in class_path.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise CliError(
                    f"module {module_name!r} has no {class_path!r} "
                    f"(service classes it defines: {_names(_services_in(module))})"
                ) from None
        if not isinstance(found, type):
            raise CliError(f"{spec} is not a class but {type(found).__name__} {found!r}")
        return [found]
    services = _services_in(module)
    if not services:
        raise CliError(
            f"module {module_name!r} defines no service class (a class with a string "
            "`name` attribute and at least one entrypoint)"
        )
    return services


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            where = f"looked in the current directory {os.getcwd()} and on sys.path"
            if module_name.endswith(".py"):
                where += f"; name a module, not a file: {module_name.removesuffix('.py')!r}"
            raise CliError(
                f"cannot import module {module_name!r}: no module named {exc.name!r} ({where})"
            ) from None
        raise CliError(f"cannot import module {module_name!r}: {exc}") from None
    except (ImportError, SyntaxError) as exc:
        raise CliError(f"cannot import module {module_name!r}: {exc}") from None


def _services_in(module: ModuleType) -> list[type]:
    """The service classes defined in ``module`` (not imported into it), in order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and isinstance(getattr(value, "name", None), str)
        and _has_entrypoints(value)
    ]


def _has_entrypoints(cls: type) -> bool:
    for klass in cls.__mro__:
        for value in vars(klass).values():
            function = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            if entrypoints_of(function):
                return True
    return False


def _names(classes: Sequence[type]) -> str:
    return ", ".join(cls.__qualname__ for cls in classes) or "none"


# --- triosvc routes ----------------------------------------------------------------------------


def _routes(options: _Options) -> int:
    runner = _build_runner(_load_config(options), options.specs)
    rows = _routes_of(runner)
    if not rows:
        print(
            f"{PROG}: no HTTP routes, WebSocket methods or RPC methods in "
            f"{', '.join(runner.service_names)}",
            file=sys.stderr,
        )
        return 0
    for line in _table(rows):
        print(line)
    return 0


def _routes_of(runner: ServiceRunner) -> list[tuple[str, str, str]]:
    """HTTP routes, then WebSocket methods (``WS``, "<path> <method>", handler), then
    service RPC methods (``RPC``, "<service>.<method>", handler)."""
    rows: list[tuple[str, str, str]] = []
    server = runner.shared_extension(WebServer)
    if isinstance(server, WebServer):
        rows.extend(server.routes())
    rpc_server = runner.shared_extension(RpcServer)
    if isinstance(rpc_server, RpcServer):
        rows.extend(rpc_server.routes())
    return rows


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as lines with aligned columns (the last one not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


# --- triosvc run -------------------------------------------------------------------------------


def _run(options: _RunOptions) -> int:
    config = _load_config(options)
    _check_workers(options.workers, config)
    _configure_logging(config)  # before the imports: services may log as they load
    runner = _build_runner(config, options.specs)  # definition errors: said once, here
    if options.workers > 1:
        return _run_workers(options, config)
    try:
        return trio.run(_serve, runner)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if isinstance(sole, ConfigurationError | KeyboardInterrupt):
            raise sole from None
        raise


def _check_workers(workers: int, config: Config) -> None:
    if workers == 1:
        return
    broker_url = config.settings.broker_url
    if not broker_url.startswith("redis://"):
        raise CliError(
            f"--workers {workers} needs a redis:// BROKER_URL, so that the processes share "
            f"RPC calls and the WebSocket hub (BROKER_URL is {broker_url!r})"
        )


def _run_workers(options: _RunOptions, config: Config) -> int:
    """Bind the socket here, then supervise ``options.workers`` processes serving it."""
    settings = config.settings
    sock = bind_socket(settings.address)
    command = [sys.executable, "-m", "triosvc", "run"]
    if options.config_file is not None:
        command += ["--config", options.config_file]
    for define in [*options.defines, f"WEB_SERVER_ADDRESS=fd://{sock.fileno()}"]:
        command += ["--define", define]
    command += options.specs
    LOGGER.info("%d workers serving on %s", options.workers, url_of(sock, tls=settings.tls))
    with sock:
        return trio.run(
            partial(
                supervise,
                command,
                sock,
                options.workers,
                grace_period=settings.shutdown_grace_period,
            )
        )


def _configure_logging(config: Config) -> None:
    """Apply ``LOGGING``, or log INFO and above to stderr when there is none.

    hypercorn's own "Running on" line is quieted either way (a ``LOGGING`` that names
    ``triosvc.engine.hypercorn`` decides for itself). ``disable_existing_loggers``
    defaults to false here: the loggers that exist by now are triosvc's and the
    services' own, and silencing them is never what a ``LOGGING`` mapping means.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    mapping = config.settings.logging
    if mapping is None:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        return
    try:
        logging.config.dictConfig({"disable_existing_loggers": False, **mapping})
    except (ValueError, TypeError, AttributeError, ImportError, KeyError) as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise ConfigurationError(
            f"LOGGING: not a valid logging.config.dictConfig mapping: {exc}{cause}"
        ) from None


@dataclass
class _Stopping:
    """What the signals asked for so far."""

    requested: bool = False
    killed: bool = False


async def _serve(runner: ServiceRunner) -> int:
    """Serve until a graceful stop (0) or a second SIGINT (130)."""
    state = _Stopping()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, runner, signals, state)
            try:
                await runner.serve(task_status=trio.TASK_STATUS_IGNORED)
            finally:
                nursery.cancel_scope.cancel()
    return EXIT_KILLED if state.killed else 0


async def _watch_signals(
    runner: ServiceRunner, signals: AsyncIterator[int], state: _Stopping
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if not state.requested:
            state.requested = True
            LOGGER.info("%s received: stopping gracefully; a second Ctrl+C stops at once", name)
            runner.request_stop()
        elif signum == signal.SIGINT:
            state.killed = True
            LOGGER.warning("SIGINT received while stopping: stopping at once, cancelling calls")
            runner.kill()
            return
        else:
            LOGGER.info("%s received: already stopping; Ctrl+C stops at once", name)

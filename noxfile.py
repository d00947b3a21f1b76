"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: unit, wire and CLI tests, and the examples' own tests."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, as the project configures it."""
    session.install("ruff")
    session.run("ruff", "check", "triosvc", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "triosvc", "tests", "examples", "benchmarks")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy in strict mode over the package."""
    session.install("-e", ".[test]", "mypy", "types-PyYAML")
    session.run("mypy")

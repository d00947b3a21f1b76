"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
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
    session.run("ruff", "check", "triosvc", "tests", "examples", "benchmarks", "docs", "noxfile.py")
    # docs/conf.py only: ruff also formats the Python of Markdown pages, which favour
    # readability (aligned comments) over its style.
    session.run(
        "ruff", "format", "--check", "triosvc", "tests", "examples", "benchmarks", "docs/conf.py"
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy in strict mode over the package."""
    session.install("-e", ".[test]", "mypy", "types-PyYAML")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors: docs/_build/html/index.html.

    The code in the pages is tested by tests/test_docs.py (``nox -s tests``).
    """
    session.install("-e", ".[docs]")
    build = ["sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]
    session.run(*build, *session.posargs)

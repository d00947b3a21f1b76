"""Every test that starts a web server runs on both engines (SPEC §8: both pass the same tests).

A test that starts services takes one of the fixtures in :data:`SERVER_FIXTURES`; such a
test is run once per engine, the engine being the config's default for that run (a test
that sets ``WEB_SERVER_ENGINE`` itself keeps its own). A test that takes an ``engine``
parameter of its own (``tests/conftest.py``'s ``on_both_engines``) chooses for itself.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

import triosvc.config

ENGINES = ("triosvc", "hypercorn")
SERVER_FIXTURES = frozenset({"local_config", "web_config", "runner_factory"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "engine" not in names and SERVER_FIXTURES.intersection(names):
        metafunc.parametrize("default_engine", ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def default_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine services start on when their config does not name one."""
    engine = getattr(request, "param", None)
    if engine is None:
        return str(triosvc.config.DEFAULTS["WEB_SERVER_ENGINE"])
    defaults = {**triosvc.config.DEFAULTS, "WEB_SERVER_ENGINE": engine}
    monkeypatch.setattr(triosvc.config, "DEFAULTS", MappingProxyType(defaults))
    return str(engine)

"""Fixtures of the cluster-wide hub's tests: nodes (runners) on one real Redis.

Every test runs with short lifetimes (``fast_cluster``: a snapshot lives 2 s and is
rewritten every 0.25 s), so that deaths and recoveries show within a second or two of
real time. Redis is a real external clock: tests wait for the view to catch up with
bounded polls (:func:`eventually`), never with bare sleeps.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

import pytest

from ...rpc.redis.server import RedisServer, require_redis
from .service import FAST

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from triosvc.ws.redis_cluster import ClusterOptions

if importlib.util.find_spec("coredis") is None and not os.environ.get("CI"):
    # Without the redis extra these modules cannot be imported; with CI set, they fail.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def fast_cluster(monkeypatch: pytest.MonkeyPatch) -> ClusterOptions:
    from triosvc.ws import redis_cluster

    options = redis_cluster.ClusterOptions(**FAST)  # type: ignore[arg-type]
    monkeypatch.setattr(redis_cluster, "DEFAULTS", options)
    return options


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server for this test alone, which it may stop and start again."""
    server = RedisServer(require_redis(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()

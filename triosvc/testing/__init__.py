"""Helpers for testing services: the pytest plugin (``triosvc.testing.pytest_plugin``) and
the helpers of ``triosvc.testing.services``, re-exported here."""

from __future__ import annotations

from .services import EntrypointHook as EntrypointHook
from .services import entrypoint_hook as entrypoint_hook
from .services import replace_dependencies as replace_dependencies
from .services import restore_dependencies as restore_dependencies
from .services import restrict_entrypoints as restrict_entrypoints
from .services import worker_factory as worker_factory

__all__ = [
    "EntrypointHook",
    "entrypoint_hook",
    "replace_dependencies",
    "restore_dependencies",
    "restrict_entrypoints",
    "worker_factory",
]

"""Extension points for writing dependency providers and entrypoints (nameko's path)."""

from __future__ import annotations

from .core.context import WorkerContext as WorkerContext
from .core.extensions import DependencyProvider as DependencyProvider
from .core.extensions import Entrypoint as Entrypoint
from .core.extensions import SharedExtension as SharedExtension

__all__ = ["DependencyProvider", "Entrypoint", "SharedExtension", "WorkerContext"]
